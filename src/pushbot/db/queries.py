"""Every SQL statement of pushbot: the audience, its history, the broadcast ledger, the
replies owed to users (the outbox) and the numbers /stats shows.

Rules the callers rely on:
- functions take a `Session` and never commit: callers own the transaction
  (`with factory.begin() as session: ...`);
- plain frozen dataclasses go in and out, never ORM objects;
- bulk work is one statement (or one executemany) per batch, never a statement per row;
- behaviour is identical on SQLite and PostgreSQL; datetimes come back timezone-aware in UTC
  on both (SQLite stores them naive).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast, overload
from uuid import UUID, uuid4

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    CursorResult,
    DateTime,
    Insert,
    Row,
    String,
    Table,
    Uuid,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pushbot.db.models import (
    Chat,
    ChatEvent,
    ChatEventKind,
    DeliveryStatus,
    EditStatus,
    OutboxReply,
    PushMessage,
    PushNotification,
    PushStatus,
    RetractStatus,
    statuses_that_may_become,
)
from pushbot.db.segments import EVERYONE, Segment, SegmentKind

CHATS = cast(Table, Chat.__table__)
CHAT_EVENTS = cast(Table, ChatEvent.__table__)
PUSHES = cast(Table, PushMessage.__table__)
NOTIFICATIONS = cast(Table, PushNotification.__table__)
OUTBOX = cast(Table, OutboxReply.__table__)

# What to pick up again after a crash or restart.
UNFINISHED_STATUSES = (
    PushStatus.RUNNING,
    PushStatus.RETRACTING,
    PushStatus.PAUSED,
    PushStatus.EDITING,
)
REMOVED_STATUSES = frozenset({RetractStatus.DELETED, RetractStatus.GONE})
UNKNOWN_REASON = "unknown"


# --- data in and out ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatInfo:
    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    language_code: str | None = None


@dataclass(frozen=True)
class ChatRow:
    id: int
    type: str
    title: str | None
    username: str | None
    first_name: str | None
    language_code: str | None
    subscribed: bool
    purged_at: datetime | None
    purge_reason: str | None
    first_seen: datetime
    last_seen: datetime

    @property
    def in_audience(self) -> bool:
        return self.subscribed and self.purged_at is None


@dataclass(frozen=True)
class AudienceCounts:
    subscribed: int  # in the audience: subscribed and not purged
    unsubscribed: int  # not subscribed and not purged
    purged: int  # purged, whatever the subscription


@dataclass(frozen=True)
class PushDraft:
    text: str | None
    content_type: str
    source_chat_id: int
    source_message_id: int
    admin_id: int
    preview_message_id: int | None = None
    # The admin's message that becomes the live status (the confirmation), if any.
    status_message_id: int | None = None
    segment: Segment = EVERYONE
    disable_notification: bool = False
    protect_content: bool = False
    # Set: the push is stored `scheduled` for then, and started by the scheduler.
    scheduled_at: datetime | None = None


@dataclass(frozen=True)
class PushSummary:
    uuid: UUID
    text: str | None
    content_type: str
    source_chat_id: int
    source_message_id: int
    admin_id: int
    status: PushStatus
    audience_size: int
    created_at: datetime
    finished_at: datetime | None
    deleted: bool
    deleted_at: datetime | None
    report_chat_id: int | None
    report_message_id: int | None
    status_message_id: int | None
    preview_message_id: int | None
    # /edit: the corrected text or caption and its formatting (set when an edit round
    # starts), and when the last round ended.
    edited_text: str | None = None
    edited_entities: tuple[dict[str, Any], ...] = ()
    edited_at: datetime | None = None
    segment: Segment = EVERYONE
    disable_notification: bool = False
    protect_content: bool = False
    scheduled_at: datetime | None = None

    @property
    def current_text(self) -> str | None:
        """What the copies say now (the corrected text once an edit has been made)."""
        return self.edited_text if self.edited_text is not None else self.text

    @property
    def copy_options(self) -> dict[str, bool]:
        """copyMessage's flags this push is sent with (only those set: an unflagged push's
        requests stay as they always were)."""
        flags = {
            "disable_notification": self.disable_notification,
            "protect_content": self.protect_content,
        }
        return {name: True for name, value in flags.items() if value}


@dataclass(frozen=True)
class EditedText:
    """The corrected text (or caption) of an /edit, with its formatting as Bot API
    MessageEntity objects (JSON dicts), exactly as the admin sent it."""

    text: str
    entities: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class LanguageCount:
    code: str  # lower case, as segments name it
    chats: int


@dataclass(frozen=True)
class PushCounts:
    total: int = 0
    pending: int = 0
    sent: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    retracted: int = 0  # deleted + gone
    retract_failed: int = 0
    retract_failed_by_reason: dict[str, int] = field(default_factory=dict)
    retract_pending: int = 0  # sent, retraction not attempted yet
    # The latest /edit round over the delivered copies.
    edited: int = 0
    edit_unchanged_by_reason: dict[str, int] = field(default_factory=dict)
    edit_failed_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def edit_unchanged(self) -> int:
        return sum(self.edit_unchanged_by_reason.values())

    @property
    def edit_failed(self) -> int:
        return sum(self.edit_failed_by_reason.values())

    @property
    def edit_pending(self) -> int:
        """Copies the latest edit round has not reached yet. A broadcast being edited has
        no retraction, so its round goes over every copy not retracted."""
        return max(0, self.retract_pending - self.edited - self.edit_unchanged - self.edit_failed)


@dataclass(frozen=True)
class PushHistoryRow:
    push: PushSummary
    counts: PushCounts


@dataclass(frozen=True)
class DeliveryOutcome:
    """`message_id` set: delivered. Otherwise failed with `error`; `purge` drops the chat."""

    chat_id: int
    message_id: int | None
    error: str | None
    purge: bool
    at: datetime


@dataclass(frozen=True)
class RetractOutcome:
    chat_id: int
    status: str  # a RetractStatus value
    error: str | None
    at: datetime


@dataclass(frozen=True)
class EditOutcome:
    chat_id: int
    status: str  # an EditStatus value
    error: str | None  # why it was not edited (unchanged or failed)
    at: datetime


# --- the audience ------------------------------------------------------------------------------


def subscribe_chat(session: Session, chat: ChatInfo, now: datetime | None = None) -> bool:
    """Put the chat in the audience (creating it if new); True if it was not in it before."""
    moment = _utc(now)
    previous = _place_in_audience(session, chat.id)
    _upsert_chat(
        session,
        chat,
        moment,
        on_existing={"subscribed": True, "purged_at": None, "purge_reason": None},
    )
    if previous is None:
        _add_chat_event(session, chat.id, ChatEventKind.JOINED, moment)
    elif not previous.in_audience:
        _add_chat_event(session, chat.id, ChatEventKind.RETURNED, moment)
    return previous is None or not previous.in_audience


def unsubscribe_chat(session: Session, chat_id: int, now: datetime | None = None) -> bool:
    """Leave the audience at the chat's request; the row stays. True if it was subscribed."""
    # Before the update, which it must not see: only a chat in the audience leaves it.
    session.execute(
        _chat_events_from_audience(ChatEventKind.LEFT, literal(None, String()), _utc(now)),
        {"b_chat_id": chat_id},
    )
    result = session.execute(
        update(CHATS)
        .where(CHATS.c.id == chat_id, CHATS.c.subscribed == true())
        .values(subscribed=False)
    )
    return _rowcount(result) > 0


def record_chat(session: Session, chat: ChatInfo, now: datetime | None = None) -> None:
    """Refresh names and last_seen. A chat we never saw joins the audience (a group the bot
    was added to, a user writing without /start); an existing subscription is left alone."""
    moment = _utc(now)
    previous = _place_in_audience(session, chat.id)
    _upsert_chat(session, chat, moment, on_existing={})
    if previous is None:
        _add_chat_event(session, chat.id, ChatEventKind.JOINED, moment)


def purge_chat(session: Session, chat_id: int, reason: str, now: datetime | None = None) -> None:
    """Take an unreachable chat out of the audience; the first recorded reason is kept."""
    purge_chats(session, {chat_id: reason}, now)


def purge_chats(session: Session, reasons: Mapping[int, str], now: datetime | None = None) -> None:
    moment = _utc(now)
    _purge(session, ((chat_id, reason, moment) for chat_id, reason in reasons.items()))


def restore_chat(session: Session, chat: ChatInfo, now: datetime | None = None) -> None:
    """The chat is reachable again (unblocked, bot re-added): back in the audience if
    subscribed. An unknown chat is created subscribed, as by `record_chat`."""
    moment = _utc(now)
    previous = _place_in_audience(session, chat.id)
    _upsert_chat(session, chat, moment, on_existing={"purged_at": None, "purge_reason": None})
    if previous is None:
        _add_chat_event(session, chat.id, ChatEventKind.JOINED, moment)
    elif previous.subscribed and previous.purged:
        _add_chat_event(session, chat.id, ChatEventKind.RETURNED, moment)


def note_chat_migrated(
    session: Session, from_chat_id: int, to_chat_id: int, now: datetime | None = None
) -> None:
    """Record that a group became a supergroup (a new id, the same audience): the history
    shows the move without counting a departure and an arrival."""
    session.execute(
        CHAT_EVENTS.insert().values(
            chat_id=to_chat_id,
            kind=ChatEventKind.MIGRATED.value,
            from_chat_id=from_chat_id,
            at=_utc(now),
        )
    )


def move_chat(
    session: Session, old_chat_id: int, new_chat: ChatInfo, now: datetime | None = None
) -> None:
    """Telegram upgraded a group to a supergroup, which has a new id: the chat's record
    (subscription, purge, first seen) moves to that id and the old id is forgotten. Safe to
    repeat (the bot hears of a move once in each chat): the second call changes nothing."""
    moment = _utc(now)
    old = session.execute(
        select(CHATS).where(CHATS.c.id == old_chat_id).with_for_update()
    ).one_or_none()
    if old is None:
        already_moved = session.execute(
            select(CHATS.c.id).where(CHATS.c.id == new_chat.id)
        ).one_or_none()
        if already_moved is None:  # a group we never knew: it joins, as by record_chat
            _upsert_chat(session, new_chat, moment, on_existing={})
            _add_chat_event(session, new_chat.id, ChatEventKind.JOINED, moment)
        return
    # The old record is the audience member; a row for the new id (made by a message seen
    # in the supergroup a moment earlier) only knew the names.
    carried = {
        "subscribed": old.subscribed,
        "purged_at": old.purged_at,
        "purge_reason": old.purge_reason,
        "first_seen": old.first_seen,
    }
    _upsert_chat(session, new_chat, moment, on_existing=carried, on_new=carried)
    session.execute(delete(CHATS).where(CHATS.c.id == old_chat_id))
    note_chat_migrated(session, old_chat_id, new_chat.id, moment)


def audience_counts(session: Session) -> AudienceCounts:
    not_purged = CHATS.c.purged_at.is_(None)
    row = session.execute(
        select(
            func.count(case((and_(CHATS.c.subscribed == true(), not_purged), 1))),
            func.count(case((and_(CHATS.c.subscribed != true(), not_purged), 1))),
            func.count(CHATS.c.purged_at),
        )
    ).one()
    return AudienceCounts(subscribed=row[0], unsubscribed=row[1], purged=row[2])


def audience_size(
    session: Session, segment: Segment = EVERYONE, admin_ids: Collection[int] = ()
) -> int:
    """The chats a push to `segment` would reach now (`admin_ids`: who the admins are)."""
    return session.execute(
        select(func.count()).where(segment_filter(segment, admin_ids))
    ).scalar_one()


def audience_languages(session: Session) -> list[LanguageCount]:
    """The languages of the private chats in the audience, most chats first."""
    language = func.lower(CHATS.c.language_code).label("language")
    rows = session.execute(
        select(language, func.count().label("n"))
        .where(_in_audience(), CHATS.c.type == "private", CHATS.c.language_code.is_not(None))
        .group_by(language)
        .order_by(func.count().desc(), language)
    )
    return [LanguageCount(row.language, row.n) for row in rows]


def admins_on_record(session: Session, admin_ids: Collection[int]) -> set[int]:
    """The admins a test send reaches: those whose chat is on record and not purged."""
    if not admin_ids:
        return set()
    return set(
        session.execute(
            select(CHATS.c.id).where(segment_filter(Segment(SegmentKind.ADMINS), admin_ids))
        ).scalars()
    )


def segment_filter(segment: Segment, admin_ids: Collection[int] = ()) -> ColumnElement[bool]:
    """The chats of a segment (see pushbot.db.segments), as a WHERE clause on `chats`."""
    if segment.kind is SegmentKind.ADMINS:
        # Reachable admins, subscribed or not: a test send is not an announcement.
        return and_(CHATS.c.id.in_(sorted(admin_ids)), CHATS.c.purged_at.is_(None))
    audience = _in_audience()
    if segment.kind is SegmentKind.PRIVATE:
        return and_(audience, CHATS.c.type == "private")
    if segment.kind is SegmentKind.GROUPS:
        return and_(audience, CHATS.c.type.in_(["group", "supergroup"]))
    if segment.kind is SegmentKind.LANGUAGE:
        return and_(
            audience,
            CHATS.c.type == "private",
            func.lower(CHATS.c.language_code) == segment.language,
        )
    return audience


def set_chat_language(session: Session, chat_id: int, language_code: str) -> bool:
    """A user's Telegram language changed: True if the chat on record had another one."""
    code = _clip(language_code, CHATS.c.language_code)
    result = session.execute(
        update(CHATS)
        .where(
            CHATS.c.id == chat_id,
            or_(CHATS.c.language_code.is_(None), CHATS.c.language_code != code),
        )
        .values(language_code=code)
    )
    return _rowcount(result) > 0


def get_chat(session: Session, chat_id: int) -> ChatRow | None:
    row = session.execute(select(CHATS).where(CHATS.c.id == chat_id)).one_or_none()
    if row is None:
        return None
    return ChatRow(
        id=row.id,
        type=row.type,
        title=row.title,
        username=row.username,
        first_name=row.first_name,
        language_code=row.language_code,
        subscribed=row.subscribed,
        purged_at=_from_db(row.purged_at),
        purge_reason=row.purge_reason,
        first_seen=_from_db_required(row.first_seen),
        last_seen=_from_db_required(row.last_seen),
    )


def _in_audience() -> ColumnElement[bool]:
    return and_(CHATS.c.subscribed == true(), CHATS.c.purged_at.is_(None))


@dataclass(frozen=True)
class _Place:
    subscribed: bool
    purged: bool

    @property
    def in_audience(self) -> bool:
        return self.subscribed and not self.purged


def _place_in_audience(session: Session, chat_id: int) -> _Place | None:
    """Where a chat stands before a change (None: never seen), locked until the commit so
    that the event written after the change describes what really changed."""
    row = session.execute(
        select(CHATS.c.subscribed, CHATS.c.purged_at).where(CHATS.c.id == chat_id).with_for_update()
    ).one_or_none()
    return None if row is None else _Place(row.subscribed, row.purged_at is not None)


def _add_chat_event(session: Session, chat_id: int, kind: ChatEventKind, at: datetime) -> None:
    session.execute(CHAT_EVENTS.insert().values(chat_id=chat_id, kind=kind.value, at=at))


def _chat_events_from_audience(
    kind: ChatEventKind, reason: ColumnElement[Any], at: ColumnElement[Any] | datetime
) -> Insert:
    """An event for chat `b_chat_id` if it is in the audience now: run it before the change
    that takes the chat out (as an executemany for many chats, one statement per batch)."""
    at_value = at if isinstance(at, ColumnElement) else literal(at, DateTime(timezone=True))
    chat_in_audience = (
        select(CHATS.c.id, literal(kind.value, String()), reason, at_value)
        .where(CHATS.c.id == _bind("b_chat_id"), _in_audience())
        # A second transaction taking the same chat out at the same moment (the ledger and
        # a my_chat_member update both purging a user who blocked the bot mid-broadcast)
        # waits here, then finds the chat already out: one event, not two. SQLite has a
        # single writer and needs no lock.
        .with_for_update()
    )
    return CHAT_EVENTS.insert().from_select(["chat_id", "kind", "reason", "at"], chat_in_audience)


def _upsert_chat(
    session: Session,
    chat: ChatInfo,
    now: datetime,
    on_existing: Mapping[str, Any],
    on_new: Mapping[str, Any] | None = None,
) -> None:
    """Insert a new subscribed chat (with `on_new` columns), or refresh an existing one's
    names, last_seen and `on_existing` columns."""
    names = {
        "type": _clip(chat.type, CHATS.c.type),
        "title": _clip(chat.title, CHATS.c.title),
        "username": _clip(chat.username, CHATS.c.username),
        "first_name": _clip(chat.first_name, CHATS.c.first_name),
        "language_code": _clip(chat.language_code, CHATS.c.language_code),
    }
    new_row = {
        "id": chat.id,
        **names,
        "subscribed": True,
        "purged_at": None,
        "purge_reason": None,
        "first_seen": now,
        "last_seen": now,
        **(on_new or {}),
    }
    refreshed: dict[str, Any] = {
        **names,
        # Updates about groups carry no language: keep the one a user's message told us.
        "language_code": func.coalesce(
            literal(names["language_code"], String()), CHATS.c.language_code
        ),
        "last_seen": now,
        **on_existing,
    }
    if _dialect(session) == "postgresql":
        pg_statement = postgresql.insert(CHATS).values(new_row)
        session.execute(
            pg_statement.on_conflict_do_update(index_elements=[CHATS.c.id], set_=refreshed)
        )
    else:
        sqlite_statement = sqlite.insert(CHATS).values(new_row)
        session.execute(
            sqlite_statement.on_conflict_do_update(index_elements=[CHATS.c.id], set_=refreshed)
        )


def _purge(session: Session, purges: Iterable[tuple[int, str, datetime]]) -> None:
    first_per_chat: dict[int, dict[str, Any]] = {}
    for chat_id, reason, at in purges:
        first_per_chat.setdefault(
            chat_id,
            {"b_chat_id": chat_id, "b_reason": _clip(reason, CHATS.c.purge_reason), "b_at": at},
        )
    rows = list(first_per_chat.values())
    if not rows:
        return
    # The history first: it must see who is still in the audience. Each chat once per batch,
    # or the history would have it twice (all the INSERTs run before the UPDATE).
    session.execute(
        _chat_events_from_audience(
            ChatEventKind.PURGED,
            bindparam("b_reason", type_=String()),
            bindparam("b_at", type_=DateTime(timezone=True)),
        ),
        rows,
    )
    statement = (
        update(CHATS)
        # Already purged: keep the first date and cause, that is when the chat was lost.
        .where(CHATS.c.id == _bind("b_chat_id"), CHATS.c.purged_at.is_(None))
        .values(purged_at=_bind("b_at"), purge_reason=_bind("b_reason"))
    )
    session.execute(statement, rows)


# --- the audience in bulk: the bot's group commits (one statement per step, not per chat) ------


def subscribe_chats(
    session: Session, chats: Sequence[ChatInfo], now: datetime | None = None
) -> list[bool]:
    """`subscribe_chat` for many distinct chats in one go; a True per chat not in the
    audience before (new, or back after /stop or a purge), in the order given."""
    moment = _utc(now)
    before = _places_in_audience(session, [chat.id for chat in chats])
    _upsert_chats(session, chats, moment, enter_audience=True)
    entered: list[bool] = []
    events: list[tuple[int, ChatEventKind]] = []
    for chat in chats:
        previous = before.get(chat.id)
        if previous is None:
            events.append((chat.id, ChatEventKind.JOINED))
        elif not previous.in_audience:
            events.append((chat.id, ChatEventKind.RETURNED))
        entered.append(previous is None or not previous.in_audience)
    _add_chat_events(session, events, moment)
    return entered


def unsubscribe_chats(
    session: Session, chat_ids: Sequence[int], now: datetime | None = None
) -> list[bool]:
    """`unsubscribe_chat` for many distinct chats in one go; a True per chat that was
    subscribed, in the order given."""
    moment = _utc(now)
    before = _places_in_audience(session, chat_ids)
    places = [before.get(chat_id) for chat_id in chat_ids]
    was_subscribed = [place is not None and place.subscribed for place in places]
    leaving = [
        (chat_id, ChatEventKind.LEFT)
        for chat_id, place in zip(chat_ids, places, strict=True)
        if place is not None and place.in_audience
    ]
    _add_chat_events(session, leaving, moment)
    if any(was_subscribed):
        session.execute(_UNSUBSCRIBE_MANY, {"ids": list(chat_ids)})
    return was_subscribed


def record_chats(session: Session, chats: Sequence[ChatInfo], now: datetime | None = None) -> None:
    """`record_chat` for many distinct chats in one go."""
    moment = _utc(now)
    before = _places_in_audience(session, [chat.id for chat in chats])
    _upsert_chats(session, chats, moment, enter_audience=False)
    joined = [(chat.id, ChatEventKind.JOINED) for chat in chats if chat.id not in before]
    _add_chat_events(session, joined, moment)


def _places_in_audience(session: Session, chat_ids: Sequence[int]) -> dict[int, _Place]:
    """`_place_in_audience` of many chats: one SELECT, the rows locked in id order (two
    writers locking the same chats in one order cannot deadlock each other)."""
    if not chat_ids:
        return {}
    rows = session.execute(_PLACES_IN_AUDIENCE, {"ids": list(chat_ids)})
    return {row.id: _Place(row.subscribed, row.purged_at is not None) for row in rows}


# The group commits' statements are built once: building them is most of their cost (the
# `excluded` alias alone took 0.37 ms a call), executing a cached one is not.
_PLACES_IN_AUDIENCE = (
    select(CHATS.c.id, CHATS.c.subscribed, CHATS.c.purged_at)
    .where(CHATS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(CHATS.c.id)
    .with_for_update()
)
_UNSUBSCRIBE_MANY = (
    update(CHATS)
    .where(CHATS.c.id.in_(bindparam("ids", expanding=True)), CHATS.c.subscribed == true())
    .values(subscribed=False)
)
_ADD_CHAT_EVENTS = CHAT_EVENTS.insert()
_OWE_REPLIES = OUTBOX.insert().returning(OUTBOX.c.id, sort_by_parameter_order=True)
_SETTLE_REPLIES = delete(OUTBOX).where(OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
# Subscribing puts the chat (back) in the audience; recording leaves its place alone.
_ENTER_AUDIENCE: Mapping[str, Any] = {"subscribed": True, "purged_at": None, "purge_reason": None}


@functools.cache
def _upsert_chats_statement(dialect: str, enter_audience: bool) -> Insert:
    statement = postgresql.insert(CHATS) if dialect == "postgresql" else sqlite.insert(CHATS)
    excluded = statement.excluded
    refreshed: dict[str, Any] = {
        "type": excluded.type,
        "title": excluded.title,
        "username": excluded.username,
        "first_name": excluded.first_name,
        # Updates about groups carry no language: keep the one a user's message told us.
        "language_code": func.coalesce(excluded.language_code, CHATS.c.language_code),
        "last_seen": excluded.last_seen,
        **(_ENTER_AUDIENCE if enter_audience else {}),
    }
    upsert: Insert = statement.on_conflict_do_update(index_elements=[CHATS.c.id], set_=refreshed)
    return upsert


def _add_chat_events(
    session: Session, events: Sequence[tuple[int, ChatEventKind]], at: datetime
) -> None:
    if events:
        session.execute(
            _ADD_CHAT_EVENTS,
            [{"chat_id": chat_id, "kind": kind.value, "at": at} for chat_id, kind in events],
        )


def _upsert_chats(
    session: Session, chats: Sequence[ChatInfo], now: datetime, enter_audience: bool
) -> None:
    """`_upsert_chat` for many chats: one executemany (PostgreSQL sends it as multi-row
    INSERTs), each row refreshed from its own values (`excluded`) when it exists."""
    if not chats:
        return
    rows = [
        {
            "id": chat.id,
            "type": _clip(chat.type, CHATS.c.type),
            "title": _clip(chat.title, CHATS.c.title),
            "username": _clip(chat.username, CHATS.c.username),
            "first_name": _clip(chat.first_name, CHATS.c.first_name),
            "language_code": _clip(chat.language_code, CHATS.c.language_code),
            "subscribed": True,
            "purged_at": None,
            "purge_reason": None,
            "first_seen": now,
            "last_seen": now,
        }
        for chat in chats
    ]
    session.execute(_upsert_chats_statement(_dialect(session), enter_audience), rows)


# --- the outbox: replies owed to users ---------------------------------------------------------


@dataclass(frozen=True)
class OutgoingReply:
    """A text for a chat, as `Message.reply_text` would send it."""

    chat_id: int
    text: str
    reply_to_message_id: int | None = None
    message_thread_id: int | None = None


@dataclass(frozen=True)
class OwedReply:
    """A reply in the outbox, waiting to be sent; `id` orders a chat's replies."""

    id: int
    reply: OutgoingReply


def owe_replies(
    session: Session, replies: Sequence[OutgoingReply], now: datetime | None = None
) -> list[OwedReply]:
    """Put replies in the outbox (one executemany); returned in the order given, with ids
    that grow in that order."""
    if not replies:
        return []
    moment = _utc(now)
    rows = [
        {
            "chat_id": reply.chat_id,
            "text": reply.text,
            "reply_to_message_id": reply.reply_to_message_id,
            "message_thread_id": reply.message_thread_id,
            "created_at": moment,
        }
        for reply in replies
    ]
    ids = session.scalars(_OWE_REPLIES, rows).all()
    return [OwedReply(row_id, reply) for row_id, reply in zip(ids, replies, strict=True)]


def settle_replies(session: Session, reply_ids: Collection[int]) -> None:
    """The replies were sent (or can never be): out of the outbox."""
    if reply_ids:
        session.execute(_SETTLE_REPLIES, {"ids": list(reply_ids)})


def owed_replies(session: Session) -> list[OwedReply]:
    """Every reply still in the outbox, oldest first (what a crash left unsent)."""
    rows = session.execute(select(OUTBOX).order_by(OUTBOX.c.id))
    return [
        OwedReply(
            row.id,
            OutgoingReply(row.chat_id, row.text, row.reply_to_message_id, row.message_thread_id),
        )
        for row in rows
    ]


# --- broadcasts --------------------------------------------------------------------------------


def create_push(session: Session, draft: PushDraft, now: datetime | None = None) -> PushSummary:
    """Record a new broadcast as running (or `scheduled`, when the draft has a time) with an
    empty audience (`enqueue_recipients` fills it). The report chat defaults to the admin's
    chat, where the preview was shown."""
    scheduled_at = None if draft.scheduled_at is None else _utc(draft.scheduled_at)
    push = PushSummary(
        uuid=uuid4(),
        text=draft.text,
        content_type=_clip(draft.content_type, PUSHES.c.content_type),
        source_chat_id=draft.source_chat_id,
        source_message_id=draft.source_message_id,
        admin_id=draft.admin_id,
        status=PushStatus.RUNNING if scheduled_at is None else PushStatus.SCHEDULED,
        audience_size=0,
        created_at=_utc(now),
        finished_at=None,
        deleted=False,
        deleted_at=None,
        report_chat_id=draft.source_chat_id,
        report_message_id=None,
        status_message_id=draft.status_message_id,
        preview_message_id=draft.preview_message_id,
        segment=draft.segment,
        disable_notification=draft.disable_notification,
        protect_content=draft.protect_content,
        scheduled_at=scheduled_at,
    )
    row = asdict(push)
    row["edited_entities"] = None
    session.execute(PUSHES.insert().values({**row, "segment": str(push.segment)}))
    return push


def discard_unlaunched_push(session: Session, push_uuid: UUID) -> bool:
    """Delete a push no job ever started (it has no recipients yet): the other half of
    creating and launching a push as one step, when the launch is refused."""
    has_recipients = (
        select(NOTIFICATIONS.c.chat_id).where(NOTIFICATIONS.c.message_uuid == push_uuid).exists()
    )
    result = session.execute(delete(PUSHES).where(PUSHES.c.uuid == push_uuid, ~has_recipients))
    return _rowcount(result) == 1


def enqueue_recipients(
    session: Session,
    push_uuid: UUID,
    now: datetime | None = None,
    *,
    admin_ids: Collection[int] = (),
) -> int:
    """Snapshot the push's segment of the audience as pending recipients (one INSERT ...
    SELECT) and store its size; `admin_ids` are the admins, for the `admins` segment.

    Idempotent: once a push has recipients, a second call inserts nothing (not even chats that
    subscribed since) and returns the existing count.
    """
    stored = session.execute(
        select(PUSHES.c.segment).where(PUSHES.c.uuid == push_uuid)
    ).scalar_one_or_none()
    segment = EVERYONE if stored is None else Segment.parse(stored)
    already_enqueued = exists().where(NOTIFICATIONS.c.message_uuid == push_uuid)
    audience = select(
        sql_cast(literal(push_uuid, Uuid()), Uuid()),
        CHATS.c.id,
        literal(DeliveryStatus.PENDING.value, String()),
        literal(_utc(now), DateTime(timezone=True)),
    ).where(segment_filter(segment, admin_ids), ~already_enqueued)
    columns = ["message_uuid", "chat_id", "status", "created_at"]
    # DO NOTHING: two concurrent first calls must not fail on the primary key.
    if _dialect(session) == "postgresql":
        pg_insert = postgresql.insert(NOTIFICATIONS).from_select(columns, audience)
        inserted = session.execute(pg_insert.on_conflict_do_nothing())
    else:
        sqlite_insert = sqlite.insert(NOTIFICATIONS).from_select(columns, audience)
        inserted = session.execute(sqlite_insert.on_conflict_do_nothing())
    size = _rowcount(inserted)
    if size == 0:
        size = session.execute(
            select(func.count()).where(NOTIFICATIONS.c.message_uuid == push_uuid)
        ).scalar_one()
    session.execute(update(PUSHES).where(PUSHES.c.uuid == push_uuid).values(audience_size=size))
    return size


def pending_chat_ids(
    session: Session, push_uuid: UUID, after_chat_id: int | None, limit: int
) -> list[int]:
    """The next `limit` recipients still to send to, in chat id order after `after_chat_id`."""
    statement = (
        select(NOTIFICATIONS.c.chat_id)
        .where(
            NOTIFICATIONS.c.message_uuid == push_uuid,
            NOTIFICATIONS.c.status == DeliveryStatus.PENDING.value,
        )
        .order_by(NOTIFICATIONS.c.chat_id)
        .limit(limit)
    )
    if after_chat_id is not None:
        statement = statement.where(NOTIFICATIONS.c.chat_id > after_chat_id)
    return list(session.execute(statement).scalars())


def sent_copies(
    session: Session, push_uuid: UUID, after_chat_id: int | None, limit: int
) -> list[tuple[int, int]]:
    """The next `limit` delivered copies not yet retracted: (chat_id, telegram_message_id)."""
    statement = (
        select(NOTIFICATIONS.c.chat_id, NOTIFICATIONS.c.telegram_message_id)
        .where(
            NOTIFICATIONS.c.message_uuid == push_uuid,
            NOTIFICATIONS.c.status == DeliveryStatus.SENT.value,
            NOTIFICATIONS.c.retract_status.is_(None),
            NOTIFICATIONS.c.telegram_message_id.is_not(None),
        )
        .order_by(NOTIFICATIONS.c.chat_id)
        .limit(limit)
    )
    if after_chat_id is not None:
        statement = statement.where(NOTIFICATIONS.c.chat_id > after_chat_id)
    return [(row.chat_id, row.telegram_message_id) for row in session.execute(statement)]


def record_deliveries(
    session: Session, push_uuid: UUID, outcomes: Sequence[DeliveryOutcome]
) -> None:
    """Store a batch of send results (one executemany) and purge the chats flagged for it."""
    if not outcomes:
        return
    statement = (
        update(NOTIFICATIONS)
        .where(
            NOTIFICATIONS.c.message_uuid == push_uuid,
            NOTIFICATIONS.c.chat_id == _bind("b_chat_id"),
            # A delivered copy is never overwritten: /undo needs its message id.
            NOTIFICATIONS.c.status != DeliveryStatus.SENT.value,
        )
        .values(
            status=_bind("b_status"),
            telegram_message_id=_bind("b_message_id"),
            error=_bind("b_error"),
            sent_at=_bind("b_sent_at"),
        )
    )
    session.execute(statement, [_delivery_params(outcome) for outcome in outcomes])
    _purge(
        session,
        (
            (outcome.chat_id, outcome.error or UNKNOWN_REASON, _utc(outcome.at))
            for outcome in outcomes
            if outcome.purge
        ),
    )


def move_recipient(
    session: Session,
    push_uuid: UUID,
    old_chat_id: int,
    new_chat_id: int,
    now: datetime | None = None,
) -> bool:
    """A recipient of the push turned out to be a group upgraded to a supergroup: move the
    chat's record (`move_chat`) and its pending row of the push to the new id. True when the
    new id is owed the copy through that row; False when the new id already has a row of its
    own in this push (it gets its copy there) or the old row is no longer pending."""
    old = session.execute(select(CHATS.c.title).where(CHATS.c.id == old_chat_id)).one_or_none()
    if old is not None:
        move_chat(session, old_chat_id, ChatInfo(new_chat_id, "supergroup", old.title), now)
    of_push = NOTIFICATIONS.c.message_uuid == push_uuid
    taken = session.execute(
        select(NOTIFICATIONS.c.chat_id).where(of_push, NOTIFICATIONS.c.chat_id == new_chat_id)
    ).first()
    if taken is not None:
        return False
    moved = session.execute(
        update(NOTIFICATIONS)
        .where(
            of_push,
            NOTIFICATIONS.c.chat_id == old_chat_id,
            NOTIFICATIONS.c.status == DeliveryStatus.PENDING.value,
        )
        .values(chat_id=new_chat_id)
    )
    return _rowcount(moved) > 0


def record_retractions(
    session: Session, push_uuid: UUID, outcomes: Sequence[RetractOutcome]
) -> None:
    """Store a batch of deletion results (one executemany)."""
    if not outcomes:
        return
    statement = (
        update(NOTIFICATIONS)
        .where(
            NOTIFICATIONS.c.message_uuid == push_uuid,
            NOTIFICATIONS.c.chat_id == _bind("b_chat_id"),
        )
        .values(
            retract_status=_bind("b_status"),
            retract_error=_bind("b_error"),
            retracted_at=_bind("b_at"),
        )
    )
    session.execute(statement, [_retraction_params(outcome) for outcome in outcomes])


def begin_edit(
    session: Session, push_uuid: UUID, edit: EditedText, now: datetime | None = None
) -> bool:
    """Start an /edit round: the push becomes `editing` with the corrected text, and every
    delivered copy is owed the edit again (the outcomes of an earlier round are cleared).
    From `done`, or from `editing` when a round was left unfinished and is started over
    with a new text. False, changing nothing, from any other status."""
    expected = {PushStatus.DONE, PushStatus.EDITING}
    if not change_push_status(session, push_uuid, PushStatus.EDITING, expected=expected, now=now):
        return False
    session.execute(
        update(PUSHES)
        .where(PUSHES.c.uuid == push_uuid)
        .values(edited_text=edit.text, edited_entities=list(edit.entities) or None)
    )
    session.execute(
        update(NOTIFICATIONS)
        .where(NOTIFICATIONS.c.message_uuid == push_uuid, NOTIFICATIONS.c.edit_status.is_not(None))
        .values(edit_status=None, edit_error=None, edited_at=None)
    )
    return True


def copies_to_edit(
    session: Session, push_uuid: UUID, after_chat_id: int | None, limit: int
) -> list[tuple[int, int]]:
    """The next `limit` delivered copies, not retracted, that the current edit round has not
    reached yet: (chat_id, telegram_message_id), in chat id order after `after_chat_id`."""
    statement = (
        select(NOTIFICATIONS.c.chat_id, NOTIFICATIONS.c.telegram_message_id)
        .where(
            NOTIFICATIONS.c.message_uuid == push_uuid,
            NOTIFICATIONS.c.status == DeliveryStatus.SENT.value,
            NOTIFICATIONS.c.retract_status.is_(None),
            NOTIFICATIONS.c.edit_status.is_(None),
            NOTIFICATIONS.c.telegram_message_id.is_not(None),
        )
        .order_by(NOTIFICATIONS.c.chat_id)
        .limit(limit)
    )
    if after_chat_id is not None:
        statement = statement.where(NOTIFICATIONS.c.chat_id > after_chat_id)
    return [(row.chat_id, row.telegram_message_id) for row in session.execute(statement)]


def record_edits(session: Session, push_uuid: UUID, outcomes: Sequence[EditOutcome]) -> None:
    """Store a batch of edit results (one executemany). The copies keep their message ids:
    /undo deletes them as before."""
    if not outcomes:
        return
    statement = (
        update(NOTIFICATIONS)
        .where(
            NOTIFICATIONS.c.message_uuid == push_uuid,
            NOTIFICATIONS.c.chat_id == _bind("b_chat_id"),
        )
        .values(
            edit_status=_bind("b_status"),
            edit_error=_bind("b_error"),
            edited_at=_bind("b_at"),
        )
    )
    session.execute(statement, [_edit_params(outcome) for outcome in outcomes])


def change_push_status(
    session: Session,
    push_uuid: UUID,
    status: PushStatus,
    *,
    expected: Collection[PushStatus] | None = None,
    now: datetime | None = None,
) -> bool:
    """Move a push to `status` if PUSH_TRANSITIONS allows it from the stored status (and
    that status is one of `expected`, when given), in one compare-and-set statement.
    Returns False, changing nothing, otherwise. Finished states stamp finished_at (but an
    edit ending keeps the broadcast's own and stamps edited_at); `retracted` also marks the
    push deleted."""
    allowed = statuses_that_may_become(status)
    if expected is not None:
        allowed = allowed & frozenset(expected)
    if not allowed:
        return False
    moment = _utc(now)
    values: dict[str, Any] = {"status": status.value}
    if status.finished and PushStatus.EDITING in allowed:
        # One statement for either source status: the stored one decides which is stamped.
        was_editing = PUSHES.c.status == PushStatus.EDITING.value
        stamp = literal(moment, DateTime(timezone=True))
        values["finished_at"] = case((was_editing, PUSHES.c.finished_at), else_=stamp)
        values["edited_at"] = case((was_editing, stamp), else_=PUSHES.c.edited_at)
    elif status.finished:
        values["finished_at"] = moment
    if status is PushStatus.RUNNING and PushStatus.SCHEDULED in allowed:
        # A scheduled push is sent from its start: Telegram's 48 hours for deleting it, its
        # pace and its place among the broadcasts count from then, not from when it was made.
        was_scheduled = PUSHES.c.status == PushStatus.SCHEDULED.value
        stamp = literal(moment, DateTime(timezone=True))
        values["created_at"] = case((was_scheduled, stamp), else_=PUSHES.c.created_at)
    if status is PushStatus.RETRACTED:
        values.update(deleted=True, deleted_at=moment)
    result = session.execute(
        update(PUSHES)
        .where(PUSHES.c.uuid == push_uuid, PUSHES.c.status.in_([s.value for s in allowed]))
        .values(values)
    )
    return _rowcount(result) == 1


def set_push_message_ids(
    session: Session,
    push_uuid: UUID,
    *,
    report_chat_id: int | None = None,
    report_message_id: int | None = None,
    status_message_id: int | None = None,
    preview_message_id: int | None = None,
) -> None:
    """Store where the push is shown to the admin; ids passed as None are left unchanged."""
    given = {
        "report_chat_id": report_chat_id,
        "report_message_id": report_message_id,
        "status_message_id": status_message_id,
        "preview_message_id": preview_message_id,
    }
    values = {name: value for name, value in given.items() if value is not None}
    if values:
        session.execute(update(PUSHES).where(PUSHES.c.uuid == push_uuid).values(values))


def get_push(session: Session, push_uuid: UUID) -> PushSummary | None:
    row = session.execute(select(PUSHES).where(PUSHES.c.uuid == push_uuid)).one_or_none()
    return None if row is None else _summary(row)


def find_push_by_message(session: Session, chat_id: int, message_id: int) -> PushSummary | None:
    """The push whose report, status message or preview is message `message_id` in `chat_id`."""
    row = session.execute(
        select(PUSHES)
        .where(
            PUSHES.c.report_chat_id == chat_id,
            or_(
                PUSHES.c.report_message_id == message_id,
                PUSHES.c.status_message_id == message_id,
                PUSHES.c.preview_message_id == message_id,
            ),
        )
        .order_by(PUSHES.c.created_at.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else _summary(row)


def scheduled_pushes(
    session: Session, due_by: datetime | None = None, limit: int | None = None
) -> list[PushSummary]:
    """Pushes waiting for their time, soonest first; with `due_by`, those due by then."""
    statement = (
        select(PUSHES)
        .where(PUSHES.c.status == PushStatus.SCHEDULED.value)
        .order_by(PUSHES.c.scheduled_at, PUSHES.c.uuid)
    )
    if due_by is not None:
        statement = statement.where(
            PUSHES.c.scheduled_at <= literal(_utc(due_by), DateTime(timezone=True))
        )
    if limit is not None:
        statement = statement.limit(limit)
    return [_summary(row) for row in session.execute(statement)]


def unfinished_pushes(session: Session) -> list[PushSummary]:
    """Pushes interrupted by a stop or crash (running, retracting, paused, editing), oldest
    first."""
    rows = session.execute(
        select(PUSHES)
        .where(PUSHES.c.status.in_([status.value for status in UNFINISHED_STATUSES]))
        .order_by(PUSHES.c.created_at, PUSHES.c.uuid)
    )
    return [_summary(row) for row in rows]


def push_counts(session: Session, push_uuid: UUID) -> PushCounts:
    return _counts_for(session, [push_uuid]).get(push_uuid, PushCounts())


def recent_pushes(session: Session, limit: int = 10) -> list[PushHistoryRow]:
    """The latest pushes, newest first, with their counts (two queries whatever the limit)."""
    pushes = [
        _summary(row)
        for row in session.execute(
            select(PUSHES).order_by(PUSHES.c.created_at.desc(), PUSHES.c.uuid).limit(limit)
        )
    ]
    counts = _counts_for(session, [push.uuid for push in pushes])
    return [PushHistoryRow(push, counts.get(push.uuid, PushCounts())) for push in pushes]


# --- the numbers of /stats ---------------------------------------------------------------------


@dataclass(frozen=True)
class AudienceChanges:
    """Chats that entered or left the audience within a time range (from `chat_events`)."""

    joined: int = 0
    returned: int = 0
    left: int = 0
    purged_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def purged(self) -> int:
        return sum(self.purged_by_reason.values())


@dataclass(frozen=True)
class AudiencePoint:
    day: date  # a UTC day
    size: int  # the audience at its end (today: now)


@dataclass(frozen=True)
class BroadcastStats:
    push: PushSummary
    counts: PushCounts
    last_sent_at: datetime | None  # when its last copy was delivered

    @property
    def pace(self) -> float | None:
        """Copies delivered per second from Send to the last copy (pauses included)."""
        if self.last_sent_at is None or self.counts.sent == 0:
            return None
        seconds = (self.last_sent_at - self.push.created_at).total_seconds()
        return self.counts.sent / seconds if seconds > 0 else None


def audience_changes(
    session: Session, since: datetime, until: datetime | None = None
) -> AudienceChanges:
    """Who joined, returned, left and was purged (by reason) at or after `since` (and before
    `until`): one GROUP BY over the time index."""
    events = CHAT_EVENTS.c
    statement = (
        select(events.kind, events.reason, func.count().label("n"))
        .where(events.at >= literal(_utc(since), DateTime(timezone=True)))
        .group_by(events.kind, events.reason)
    )
    if until is not None:
        statement = statement.where(events.at < literal(_utc(until), DateTime(timezone=True)))
    by_kind: defaultdict[str, int] = defaultdict(int)
    purged_by_reason: defaultdict[str, int] = defaultdict(int)
    for row in session.execute(statement):
        by_kind[row.kind] += row.n
        if row.kind == ChatEventKind.PURGED:
            purged_by_reason[row.reason or UNKNOWN_REASON] += row.n
    return AudienceChanges(
        joined=by_kind[ChatEventKind.JOINED],
        returned=by_kind[ChatEventKind.RETURNED],
        left=by_kind[ChatEventKind.LEFT],
        purged_by_reason=dict(purged_by_reason),
    )


def audience_history(
    session: Session, days: int, now: datetime | None = None
) -> list[AudiencePoint]:
    """The audience at the end of each of the last `days` UTC days, oldest first.

    Counted back from today's audience: the size at the end of a day is today's minus what
    the events after that day added (one count and one GROUP BY per UTC day, whatever the
    number of chats or events).
    """
    today = _utc(now).date()
    first_day = today - timedelta(days=days - 1)
    after_first_day = datetime.combine(first_day + timedelta(days=1), time(), UTC)
    day = _utc_day(session, CHAT_EVENTS.c.at).label("day")
    net_by_day = {
        date.fromisoformat(row.day): int(row.net)
        for row in session.execute(
            select(day, func.sum(_audience_delta()).label("net"))
            .where(CHAT_EVENTS.c.at >= literal(after_first_day, DateTime(timezone=True)))
            .group_by(day)
        )
    }
    size = audience_size(session) - sum(n for d, n in net_by_day.items() if d > today)
    points: list[AudiencePoint] = []
    for offset in range(days):
        current = today - timedelta(days=offset)
        points.append(AudiencePoint(current, size))
        size -= net_by_day.get(current, 0)
    points.reverse()
    return points


def _went_out() -> ColumnElement[bool]:
    """Broadcasts that started: not still scheduled, nor cancelled before their time came."""
    never_started = and_(
        PUSHES.c.status == PushStatus.CANCELLED.value,
        PUSHES.c.scheduled_at.is_not(None),
        ~select(NOTIFICATIONS.c.chat_id)
        .where(NOTIFICATIONS.c.message_uuid == PUSHES.c.uuid)
        .exists(),
    )
    return and_(PUSHES.c.status != PushStatus.SCHEDULED.value, ~never_started)


def broadcast_stats(session: Session, limit: int) -> list[BroadcastStats]:
    """The latest broadcasts sent (scheduled ones are not yet), newest first, with their
    counts and pace: three queries whatever the limit."""
    pushes = [
        _summary(row)
        for row in session.execute(
            select(PUSHES)
            .where(_went_out())
            .order_by(PUSHES.c.created_at.desc(), PUSHES.c.uuid)
            .limit(limit)
        )
    ]
    uuids = [push.uuid for push in pushes]
    counts = _counts_for(session, uuids)
    last_sent: dict[UUID, datetime | None] = {}
    if uuids:
        last_sent = {
            row.message_uuid: _from_db(row.last)
            for row in session.execute(
                select(
                    NOTIFICATIONS.c.message_uuid, func.max(NOTIFICATIONS.c.sent_at).label("last")
                )
                .where(NOTIFICATIONS.c.message_uuid.in_(uuids))
                .group_by(NOTIFICATIONS.c.message_uuid)
            )
        }
    return [
        BroadcastStats(push, counts.get(push.uuid, PushCounts()), last_sent.get(push.uuid))
        for push in pushes
    ]


def broadcast_times(session: Session, since: datetime) -> list[datetime]:
    """When each broadcast sent at or after `since` was started, oldest first."""
    rows = session.execute(
        select(PUSHES.c.created_at)
        .where(
            PUSHES.c.created_at >= literal(_utc(since), DateTime(timezone=True)),
            _went_out(),
        )
        .order_by(PUSHES.c.created_at)
    )
    return [_from_db_required(row.created_at) for row in rows]


def _audience_delta() -> ColumnElement[int]:
    kind = CHAT_EVENTS.c.kind
    return case(
        *[(kind == k.value, k.audience_delta) for k in ChatEventKind if k.audience_delta],
        else_=0,
    )


def _utc_day(session: Session, moment: ColumnElement[Any]) -> ColumnElement[str]:
    """The UTC day of a stored datetime as 'YYYY-MM-DD', on either backend."""
    if _dialect(session) == "postgresql":
        return func.to_char(func.timezone("UTC", moment), "YYYY-MM-DD")
    # SQLite stores UTC wall-clock text, which date() reads as it is.
    return func.date(moment)


# --- the broadcast lease (PostgreSQL) ---------------------------------------------------------
# A session-level advisory lock on a connection of the lease's own (pushbot.broadcast.lease):
# it lives exactly as long as that connection, and the server drops it when the holder dies.
# These take a `Connection` in autocommit mode, not a `Session`: there is no transaction.

# The server's own keepalives, so that it notices a holder whose host vanished within about
# half a minute instead of the kernel's two hours. SET, not a startup option: poolers refuse
# unknown startup parameters. Ignored on Unix sockets.
_LEASE_SESSION_SETTINGS = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
}


def prepare_lease_connection(connection: Connection) -> None:
    for name, value in _LEASE_SESSION_SETTINGS.items():
        connection.execute(select(func.set_config(name, str(value), False)))


def try_advisory_lock(connection: Connection, key: int) -> bool:
    """Take the lock for this connection's session without waiting; False if another has it."""
    return bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one())


def advisory_unlock(connection: Connection, key: int) -> bool:
    return bool(connection.execute(select(func.pg_advisory_unlock(key))).scalar_one())


def holds_advisory_lock(connection: Connection, key: int) -> bool:
    """Whether this connection's session holds the lock (checked in pg_locks, not assumed)."""
    return bool(connection.execute(_HOLDS_ADVISORY_LOCK, _advisory_key_halves(key)).scalar_one())


def advisory_lock_holder(connection: Connection, key: int) -> str | None:
    """Who holds the lock, for the logs: the holder's application_name and server pid."""
    row = connection.execute(_ADVISORY_LOCK_HOLDER, _advisory_key_halves(key)).one_or_none()
    if row is None:
        return None
    return f"{row.application_name or 'a session'} (server pid {row.pid})"


# pg_locks shows a bigint advisory key as two 32-bit halves (classid, objid) with objsubid 1;
# advisory locks belong to one database.
_ADVISORY_LOCK_FILTER = """
    l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.classid = CAST(:high AS oid) AND l.objid = CAST(:low AS oid)
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_HOLDS_ADVISORY_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks AS l"
    f" WHERE {_ADVISORY_LOCK_FILTER} AND l.pid = pg_backend_pid())"
)
_ADVISORY_LOCK_HOLDER = text(
    "SELECT l.pid, a.application_name FROM pg_locks AS l"
    " LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid"
    f" WHERE {_ADVISORY_LOCK_FILTER} LIMIT 1"
)


def _advisory_key_halves(key: int) -> dict[str, int]:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}


def _delivery_params(outcome: DeliveryOutcome) -> dict[str, Any]:
    delivered = outcome.message_id is not None
    return {
        "b_chat_id": outcome.chat_id,
        "b_status": (DeliveryStatus.SENT if delivered else DeliveryStatus.FAILED).value,
        "b_message_id": outcome.message_id,
        "b_error": None
        if delivered
        else _clip(outcome.error or UNKNOWN_REASON, NOTIFICATIONS.c.error),
        "b_sent_at": _utc(outcome.at) if delivered else None,
    }


def _retraction_params(outcome: RetractOutcome) -> dict[str, Any]:
    return {
        "b_chat_id": outcome.chat_id,
        "b_status": RetractStatus(outcome.status).value,
        "b_error": _clip(outcome.error, NOTIFICATIONS.c.retract_error),
        "b_at": _utc(outcome.at),
    }


def _edit_params(outcome: EditOutcome) -> dict[str, Any]:
    return {
        "b_chat_id": outcome.chat_id,
        "b_status": EditStatus(outcome.status).value,
        "b_error": _clip(outcome.error, NOTIFICATIONS.c.edit_error),
        "b_at": _utc(outcome.at),
    }


def _counts_for(session: Session, push_uuids: Sequence[UUID]) -> dict[UUID, PushCounts]:
    """Counts of several pushes in one GROUP BY query."""
    if not push_uuids:
        return {}
    n = NOTIFICATIONS.c
    grouping = (
        n.message_uuid,
        n.status,
        n.error,
        n.retract_status,
        n.retract_error,
        n.edit_status,
        n.edit_error,
    )
    rows = session.execute(
        select(*grouping, func.count().label("n"))
        .where(n.message_uuid.in_(push_uuids))
        .group_by(*grouping)
    )
    tallies: defaultdict[UUID, _Tally] = defaultdict(_Tally)
    for row in rows:
        tallies[row.message_uuid].add(row)
    return {push_uuid: tally.counts() for push_uuid, tally in tallies.items()}


class _Tally:
    """Adds up GROUP BY rows (status, error, retract_status, retract_error, edit_status,
    edit_error, n) of one push."""

    def __init__(self) -> None:
        self.by_status: defaultdict[str, int] = defaultdict(int)
        self.by_retract_status: defaultdict[str | None, int] = defaultdict(int)
        self.failed_by_reason: defaultdict[str, int] = defaultdict(int)
        self.retract_failed_by_reason: defaultdict[str, int] = defaultdict(int)
        self.edited = 0
        self.edit_unchanged_by_reason: defaultdict[str, int] = defaultdict(int)
        self.edit_failed_by_reason: defaultdict[str, int] = defaultdict(int)

    def add(self, row: Row[Any]) -> None:
        self.by_status[row.status] += row.n
        if row.status == DeliveryStatus.FAILED:
            self.failed_by_reason[row.error or UNKNOWN_REASON] += row.n
        if row.status == DeliveryStatus.SENT:
            self.by_retract_status[row.retract_status] += row.n
            self._add_edit(row)
        if row.retract_status == RetractStatus.FAILED:
            self.retract_failed_by_reason[row.retract_error or UNKNOWN_REASON] += row.n

    def _add_edit(self, row: Row[Any]) -> None:
        if row.edit_status == EditStatus.EDITED:
            self.edited += row.n
        elif row.edit_status == EditStatus.UNCHANGED:
            self.edit_unchanged_by_reason[row.edit_error or UNKNOWN_REASON] += row.n
        elif row.edit_status == EditStatus.FAILED:
            self.edit_failed_by_reason[row.edit_error or UNKNOWN_REASON] += row.n

    def counts(self) -> PushCounts:
        return PushCounts(
            total=sum(self.by_status.values()),
            pending=self.by_status[DeliveryStatus.PENDING],
            sent=self.by_status[DeliveryStatus.SENT],
            failed=self.by_status[DeliveryStatus.FAILED],
            failed_by_reason=dict(self.failed_by_reason),
            retracted=sum(self.by_retract_status[status] for status in REMOVED_STATUSES),
            retract_failed=self.by_retract_status[RetractStatus.FAILED],
            retract_failed_by_reason=dict(self.retract_failed_by_reason),
            retract_pending=self.by_retract_status[None],
            edited=self.edited,
            edit_unchanged_by_reason=dict(self.edit_unchanged_by_reason),
            edit_failed_by_reason=dict(self.edit_failed_by_reason),
        )


def _summary(row: Row[Any]) -> PushSummary:
    return PushSummary(
        uuid=row.uuid,
        text=row.text,
        content_type=row.content_type,
        source_chat_id=row.source_chat_id,
        source_message_id=row.source_message_id,
        admin_id=row.admin_id,
        status=PushStatus(row.status),
        audience_size=row.audience_size,
        created_at=_from_db_required(row.created_at),
        finished_at=_from_db(row.finished_at),
        deleted=row.deleted,
        deleted_at=_from_db(row.deleted_at),
        report_chat_id=row.report_chat_id,
        report_message_id=row.report_message_id,
        status_message_id=row.status_message_id,
        preview_message_id=row.preview_message_id,
        edited_text=row.edited_text,
        edited_entities=tuple(row.edited_entities or ()),
        edited_at=_from_db(row.edited_at),
        segment=Segment.parse(row.segment),
        disable_notification=row.disable_notification,
        protect_content=row.protect_content,
        scheduled_at=_from_db(row.scheduled_at),
    )


# --- helpers -----------------------------------------------------------------------------------


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _bind(name: str) -> BindParameter[Any]:
    """A per-row parameter of an executemany; names must differ from column names."""
    return bindparam(name)


def _rowcount(result: object) -> int:
    # DML executed through a Session returns a CursorResult, typed as a plain Result.
    return cast(CursorResult[Any], result).rowcount


def _utc(moment: datetime | None) -> datetime:
    """`moment` (naive means UTC) or now, as an aware UTC datetime.

    SQLite keeps only the wall-clock time, so everything is stored in UTC to stay comparable.
    """
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _from_db(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _from_db_required(value: datetime) -> datetime:
    return _utc(value)


@overload
def _clip(value: str, column: ColumnElement[Any]) -> str: ...
@overload
def _clip(value: str | None, column: ColumnElement[Any]) -> str | None: ...
def _clip(value: str | None, column: ColumnElement[Any]) -> str | None:
    """Cut text to the column's length: PostgreSQL rejects what SQLite would silently store
    (a long Telegram error must not fail a whole batch of outcomes)."""
    length = getattr(column.type, "length", None)
    if value is None or length is None:
        return value
    return value[:length]
