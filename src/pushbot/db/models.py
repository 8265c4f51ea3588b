"""The data model: the audience (Chat and its history, ChatEvent), the broadcast ledger
(PushMessage, PushNotification) and the replies owed to users (OutboxReply).

Types are chosen to fit SQLite and PostgreSQL alike; Telegram ids need 64 bits.
"""

from __future__ import annotations

import uuid as uuid_module
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
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
    false,
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
    """Life of a broadcast. `running`, `retracting` and `editing` are resumed after a crash."""

    # Waiting for its `scheduled_at`; "Send now" or the due time makes it `running`.
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"
    # /edit is correcting the delivered copies' text; it ends `done` again (or `retracting`,
    # when an /undo overtakes it).
    EDITING = "editing"
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
    PushStatus.SCHEDULED: frozenset({PushStatus.RUNNING, PushStatus.CANCELLED}),
    PushStatus.RUNNING: frozenset(
        {PushStatus.PAUSED, PushStatus.CANCELLED, PushStatus.DONE, PushStatus.RETRACTING}
    ),
    PushStatus.PAUSED: frozenset({PushStatus.RUNNING, PushStatus.CANCELLED, PushStatus.RETRACTING}),
    PushStatus.CANCELLED: frozenset({PushStatus.RETRACTING}),
    # Only a finished, complete broadcast is edited: a cancelled one is better retracted and
    # sent again (its missing recipients cannot be reached any more), and a paused one would
    # go on copying the uncorrected source.
    PushStatus.DONE: frozenset({PushStatus.EDITING, PushStatus.RETRACTING}),
    PushStatus.EDITING: frozenset({PushStatus.DONE, PushStatus.RETRACTING}),
    PushStatus.RETRACTING: frozenset({PushStatus.RETRACTED}),
    PushStatus.RETRACTED: frozenset(),
}


# Where a push's life starts: sent at once, or scheduled for later.
INITIAL_PUSH_STATUSES = frozenset({PushStatus.RUNNING, PushStatus.SCHEDULED})


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


class EditStatus(StrEnum):
    """Outcome of correcting one delivered copy (/edit). NULL on the row means not attempted."""

    EDITED = "edited"
    # Nothing to correct: the copy already had this text ("message is not modified") or the
    # user deleted it ("message to edit not found"); edit_error says which.
    UNCHANGED = "unchanged"
    FAILED = "failed"


class ChatEventKind(StrEnum):
    """A change of a chat's place in the audience (subscribed and not purged).

    An event is written only when the chat actually enters or leaves the audience, so each
    kind moves its size by `audience_delta` and the size at any moment is a sum over them.
    """

    JOINED = "joined"  # a chat never seen before enters it
    RETURNED = "returned"  # a known chat enters it again (/start after /stop, unblocked)
    LEFT = "left"  # at the chat's own request (/stop)
    PURGED = "purged"  # unreachable: blocked, deactivated, kicked, not found (see `reason`)
    MIGRATED = "migrated"  # a group became a supergroup: the same audience under a new id

    @property
    def audience_delta(self) -> int:
        return _AUDIENCE_DELTAS[self]


_AUDIENCE_DELTAS = {
    ChatEventKind.JOINED: 1,
    ChatEventKind.RETURNED: 1,
    ChatEventKind.LEFT: -1,
    ChatEventKind.PURGED: -1,
    ChatEventKind.MIGRATED: 0,
}


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


class ChatEvent(Base):
    """The audience's history, appended to whenever a chat enters or leaves it (/stats)."""

    __tablename__ = "chat_events"

    # SQLite counts up only an INTEGER PRIMARY KEY (its rowid); PostgreSQL gets a bigint.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # No foreign key: the history outlives the chat's row and its id (a supergroup's move).
    chat_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(255))  # why a chat was purged
    from_chat_id: Mapped[int | None] = mapped_column(BigInteger)  # `migrated`: the old id
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # Every /stats number is a count or a sum over a time range.
        Index("ix_chat_events_at", "at"),
    )


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
    # Who gets it: "all" subscribed chats, or a named segment of them (a query, not a list).
    segment: Mapped[str] = mapped_column(String(64), default="all", server_default="all")
    # Sent silently / with forwarding and saving forbidden (copyMessage's own flags).
    disable_notification: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    protect_content: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    scheduled_at: Mapped[datetime | None]  # when a `scheduled` push is due
    # /edit: the corrected text or caption, its formatting (Bot API MessageEntity objects),
    # and when the last edit of the copies ended.
    edited_text: Mapped[str | None] = mapped_column(Text)
    edited_entities: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    edited_at: Mapped[datetime | None]

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
    edit_status: Mapped[str | None] = mapped_column(String(16))  # an EditStatus value
    edit_error: Mapped[str | None] = mapped_column(String(255))
    edited_at: Mapped[datetime | None]

    __table_args__ = (
        # "pending of message X" and "sent, not yet retracted, of message X", walked by chat id.
        Index("ix_push_notifications_work", "message_uuid", "status", "chat_id"),
    )


class OutboxReply(Base):
    """A reply owed to a user, written in the same commit as what it answers (the /start's
    subscription) and deleted once Telegram took it: what a crash leaves here is sent at
    the next start (bot/outbox.py)."""

    __tablename__ = "outbox"

    # Sent in id order per chat: the order the replies were owed.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    # As Message.reply_text sends it: a reply (quoted) in groups, into the message's topic.
    reply_to_message_id: Mapped[int | None] = mapped_column(Integer)
    message_thread_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
