"""The data model: the audience (Chat) and the broadcast ledger (PushMessage, PushNotification).

Types are chosen to fit SQLite and PostgreSQL alike; Telegram ids need 64 bits.
"""

from __future__ import annotations

import uuid as uuid_module
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class PushStatus(StrEnum):
    """Life of a broadcast. `running` and `retracting` are resumed after a crash."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"
    RETRACTING = "retracting"
    RETRACTED = "retracted"

    @property
    def finished(self) -> bool:
        return self in (PushStatus.DONE, PushStatus.CANCELLED, PushStatus.RETRACTED)

    @property
    def retracted_or_retracting(self) -> bool:
        return self in (PushStatus.RETRACTING, PushStatus.RETRACTED)

    @property
    def sending(self) -> bool:
        """Copies may still go out (now, or once resumed)."""
        return self in (PushStatus.RUNNING, PushStatus.PAUSED)


# Every status change a push may make, in one place: queries.change_push_status refuses any
# other. Staying in an unfinished status is allowed too (a resumed job re-asserts its own).
PUSH_TRANSITIONS: dict[PushStatus, frozenset[PushStatus]] = {
    PushStatus.RUNNING: frozenset(
        {PushStatus.PAUSED, PushStatus.CANCELLED, PushStatus.DONE, PushStatus.RETRACTING}
    ),
    PushStatus.PAUSED: frozenset({PushStatus.RUNNING, PushStatus.CANCELLED, PushStatus.RETRACTING}),
    PushStatus.CANCELLED: frozenset({PushStatus.RETRACTING}),
    PushStatus.DONE: frozenset({PushStatus.RETRACTING}),
    PushStatus.RETRACTING: frozenset({PushStatus.RETRACTED}),
    PushStatus.RETRACTED: frozenset(),
}


def statuses_that_may_become(target: PushStatus) -> frozenset[PushStatus]:
    sources = {source for source, targets in PUSH_TRANSITIONS.items() if target in targets}
    if not target.finished:
        sources.add(target)
    return frozenset(sources)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class RetractStatus(StrEnum):
    """Outcome of deleting one delivered copy. NULL on the row means not yet attempted."""

    DELETED = "deleted"
    GONE = "gone"  # the user had already deleted it: counts as removed
    FAILED = "failed"


class Chat(Base):
    """A chat that talked to the bot: the audience of broadcasts when subscribed and not purged."""

    __tablename__ = "chats"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(16))
    title: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(255))
    language_code: Mapped[str | None] = mapped_column(String(16))
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    # Purged chats (blocked the bot, deactivated, gone) stay on record but get no broadcasts;
    # unblocking clears this and brings the chat back.
    purged_at: Mapped[datetime | None]
    purge_reason: Mapped[str | None] = mapped_column(String(255))
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class PushMessage(Base):
    """One broadcast: what was sent (as a copy of the admin's message) and where its report is."""

    __tablename__ = "push_messages"

    uuid: Mapped[uuid_module.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid_module.uuid4
    )
    text: Mapped[str | None] = mapped_column(Text)  # text or caption, for listings and /undo
    content_type: Mapped[str] = mapped_column(String(32), default="text")
    source_chat_id: Mapped[int] = mapped_column(BigInteger)
    source_message_id: Mapped[int] = mapped_column(Integer)
    admin_id: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=PushStatus.RUNNING)
    audience_size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None]
    # Where the admin watches it: /undo finds the broadcast by a reply to any of these.
    report_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    report_message_id: Mapped[int | None] = mapped_column(Integer)
    status_message_id: Mapped[int | None] = mapped_column(Integer)
    preview_message_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_push_messages_report", "report_chat_id", "report_message_id"),
        Index("ix_push_messages_status", "status"),
    )


class PushNotification(Base):
    """One recipient of one broadcast: delivery outcome, then (after /undo) retraction outcome."""

    __tablename__ = "push_notifications"

    message_uuid: Mapped[uuid_module.UUID] = mapped_column(
        Uuid, ForeignKey("push_messages.uuid", ondelete="CASCADE"), primary_key=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    telegram_message_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    retract_status: Mapped[str | None] = mapped_column(String(16))
    retract_error: Mapped[str | None] = mapped_column(String(255))
    retracted_at: Mapped[datetime | None]

    __table_args__ = (
        # "pending of message X" and "sent, not yet retracted, of message X", walked by chat id.
        Index("ix_push_notifications_work", "message_uuid", "status", "chat_id"),
    )
