"""The bot layer's door to the audience: its writes, in group commits, and the outbox's rows.
(Broadcasts are the broadcast service's: pushbot.broadcast.service.)

Handlers describe a change (`Subscribe`, `Unsubscribe`, `NoteSeen`, `Purge`, `Restore`,
`Move`, `SetLanguage`), optionally with the reply it owes the user, and await `Store.write`:
the change and the reply's outbox row are committed together, by the writer thread
(`GroupCommitWriter`), with whatever other handlers wrote meanwhile; `_apply` turns a batch
into a few bulk statements (`pushbot.db.queries`). So the Application's event loop never
waits on the database, and a reply is owed (in the outbox) exactly when what it answers is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from sqlalchemy.orm import Session, sessionmaker

from pushbot.bot.writer import GroupCommitWriter
from pushbot.db import queries
from pushbot.db.queries import ChatInfo, OutgoingReply, OwedReply

# A chat seen within this window is not written again just because it sent another update.
LAST_SEEN_REFRESH_SECONDS = 600.0
RECENTLY_SEEN_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Subscribe:
    """/start: into the audience. Result: True if the chat was not in it before."""

    chat: ChatInfo


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """/stop: out of the audience, kept on record. Result: True if it was subscribed."""

    chat_id: int


@dataclass(frozen=True, slots=True)
class NoteSeen:
    """Names and last_seen refreshed; an unknown chat joins (queries.record_chat)."""

    chat: ChatInfo


@dataclass(frozen=True, slots=True)
class Purge:
    chat_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Restore:
    chat: ChatInfo


@dataclass(frozen=True, slots=True)
class Move:
    """A group became a supergroup with a new id: its subscription goes with it."""

    old_chat_id: int
    new_chat: ChatInfo


@dataclass(frozen=True, slots=True)
class SetLanguage:
    """A user's language changed (it decides their language segment)."""

    chat_id: int
    language_code: str


Change: TypeAlias = Subscribe | Unsubscribe | NoteSeen | Purge | Restore | Move | SetLanguage
# What the handler will say, given the change's result (None: nothing).
ReplyFor: TypeAlias = Callable[[Any], OutgoingReply | None]


@dataclass(frozen=True, slots=True)
class Written:
    """A committed write: the change's result, and the reply it owes now in the outbox."""

    result: Any
    owed: OwedReply | None


@dataclass(frozen=True, slots=True)
class _Write:
    """One item of the writer's queue."""

    change: Change | None = None
    reply_for: ReplyFor | None = None
    settled: tuple[int, ...] = ()  # outbox rows to drop: those replies were sent


class Store:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory
        self._writer: GroupCommitWriter[_Write, Written] = GroupCommitWriter(
            session_factory, _apply, name="pushbot-store"
        )
        self._recently_seen: dict[int, float] = {}
        self._sweep_at = RECENTLY_SEEN_MAX
        # The language last written per chat: `refresh_language` writes only a change.
        self._languages: dict[int, str] = {}

    @property
    def writer(self) -> GroupCommitWriter[_Write, Written]:
        return self._writer

    async def write(self, change: Change | None, reply_for: ReplyFor | None = None) -> Written:
        """Commit `change` (and the reply `reply_for` makes of its result, if any)."""
        self._remember(change)
        return await self._writer.submit(_Write(change, reply_for))

    def _remember(self, change: Change | None) -> None:
        """What this write will make true, for the writes it makes unnecessary: every path
        comes through here (the outbox's `/start` too), so a /start's language is known
        before the language handler after it asks (otherwise every /start cost two commits)."""
        now = time.monotonic()
        if isinstance(change, (Subscribe, NoteSeen, Restore)):
            self._recently_seen[change.chat.id] = now
            self._written_language(change.chat.id, change.chat.language_code)
        elif isinstance(change, Purge):
            self._recently_seen.pop(change.chat_id, None)
        elif isinstance(change, Move):
            self._recently_seen.pop(change.old_chat_id, None)
            self._recently_seen[change.new_chat.id] = now
        elif isinstance(change, SetLanguage):
            self._written_language(change.chat_id, change.language_code)

    # audience
    async def subscribe(self, chat: ChatInfo) -> bool:
        return bool((await self.write(Subscribe(chat))).result)

    async def unsubscribe(self, chat_id: int) -> bool:
        return bool((await self.write(Unsubscribe(chat_id))).result)

    def seen_recently(self, chat_id: int) -> bool:
        """Whether a NoteSeen of the chat would be skipped (see `note_seen`)."""
        last = self._recently_seen.get(chat_id)
        return last is not None and time.monotonic() - last < LAST_SEEN_REFRESH_SECONDS

    async def note_seen(self, chat: ChatInfo) -> None:
        """Record a chat that writes to us, at most once per refresh window per chat."""
        if self.seen_recently(chat.id):
            return
        if len(self._recently_seen) > self._sweep_at:
            self._forget_stale(time.monotonic())
        await self.write(NoteSeen(chat))

    async def refresh_language(self, chat_id: int, language_code: str) -> None:
        """Telegram reports a user's language on every message they send: keep the chat's
        current (it decides their language segment), writing only when it changed."""
        if self._languages.get(chat_id) == language_code:
            return
        await self.write(SetLanguage(chat_id, language_code))

    def _written_language(self, chat_id: int, language_code: str | None) -> None:
        if language_code is None:
            return
        if len(self._languages) >= RECENTLY_SEEN_MAX:
            self._languages.clear()  # bounded; forgetting costs one write per chat at most
        self._languages[chat_id] = language_code

    def _forget_stale(self, now: float) -> None:
        """Keep the memory of a bot with millions of chats bounded to the active ones."""
        cutoff = now - LAST_SEEN_REFRESH_SECONDS
        self._recently_seen = {k: t for k, t in self._recently_seen.items() if t >= cutoff}
        # When most are still fresh, sweep again only after the map doubled (O(1) amortised).
        self._sweep_at = max(RECENTLY_SEEN_MAX, 2 * len(self._recently_seen))

    async def purge(self, chat_id: int, reason: str) -> None:
        await self.write(Purge(chat_id, reason))

    async def move(self, old_chat_id: int, new_chat: ChatInfo) -> None:
        await self.write(Move(old_chat_id, new_chat))

    async def restore(self, chat: ChatInfo) -> None:
        await self.write(Restore(chat))

    # the outbox's rows
    async def settle_replies(self, reply_ids: Sequence[int]) -> None:
        """Those replies were sent (or can never be): their rows go, in the next commit."""
        await self._writer.submit(_Write(settled=tuple(reply_ids)))

    def owed_replies(self) -> list[OwedReply]:
        """Every reply still owed, oldest first (blocking: call it in a thread)."""
        with self._factory.begin() as session:
            return queries.owed_replies(session)

    async def load_owed_replies(self) -> list[OwedReply]:
        return await asyncio.to_thread(self.owed_replies)

    def close(self) -> None:
        """Commit what is queued and stop the writer (blocking: call it in a thread)."""
        self._writer.close()


# --- the writer's transaction ------------------------------------------------------------------


def _apply(session: Session, writes: Sequence[_Write]) -> list[Written]:
    """One batch: the changes (in bulk, chat by chat in order), then the replies they owe
    (their outbox ids grow in the order of the writes), then the sent replies' rows out."""
    now = datetime.now(UTC)
    results: list[Any] = [None] * len(writes)
    for segment in _segments(writes):
        _apply_changes(session, [(i, writes[i].change) for i in segment], results, now)
    owing = []
    for index, write in enumerate(writes):
        reply = write.reply_for(results[index]) if write.reply_for is not None else None
        if reply is not None:
            owing.append((index, reply))
    owed = queries.owe_replies(session, [reply for _, reply in owing], now)
    owed_by_index = {index: row for (index, _), row in zip(owing, owed, strict=True)}
    settled = [row_id for write in writes for row_id in write.settled]
    queries.settle_replies(session, settled)
    return [Written(results[i], owed_by_index.get(i)) for i in range(len(writes))]


def _chats_of(change: Change | None) -> tuple[int, ...]:
    match change:
        case Subscribe(chat) | NoteSeen(chat) | Restore(chat):
            return (chat.id,)
        case Unsubscribe(chat_id) | Purge(chat_id, _) | SetLanguage(chat_id, _):
            return (chat_id,)
        case Move(old_chat_id, new_chat):
            return (old_chat_id, new_chat.id)
        case None:
            return ()


def _segments(writes: Sequence[_Write]) -> Iterator[list[int]]:
    """The batch cut into runs in which no chat appears twice: within a run the changes are
    about different chats and may be applied kind by kind; runs go in order. (The ordered
    update processor lets one update per chat run at a time, so runs are long.)"""
    segment: list[int] = []
    touched: set[int] = set()
    for index, write in enumerate(writes):
        chats = _chats_of(write.change)
        if touched.intersection(chats):
            yield segment
            segment, touched = [], set()
        segment.append(index)
        touched.update(chats)
    if segment:
        yield segment


def _apply_changes(
    session: Session, changes: list[tuple[int, Change | None]], results: list[Any], now: datetime
) -> None:
    """Changes of distinct chats: one bulk call per kind for the frequent ones."""
    subscribes = [(i, c) for i, c in changes if isinstance(c, Subscribe)]
    if subscribes:
        entered = queries.subscribe_chats(session, [c.chat for _, c in subscribes], now)
        for (index, _), value in zip(subscribes, entered, strict=True):
            results[index] = value
    unsubscribes = [(i, c) for i, c in changes if isinstance(c, Unsubscribe)]
    if unsubscribes:
        left = queries.unsubscribe_chats(session, [c.chat_id for _, c in unsubscribes], now)
        for (index, _), value in zip(unsubscribes, left, strict=True):
            results[index] = value
    seen = [c.chat for _, c in changes if isinstance(c, NoteSeen)]
    if seen:
        queries.record_chats(session, seen, now)
    purges = {c.chat_id: c.reason for _, c in changes if isinstance(c, Purge)}
    if purges:
        queries.purge_chats(session, purges, now)
    for _, change in changes:
        # Rare (a user unblocking the bot, a group upgraded, a language changed): one at a
        # time.
        if isinstance(change, Restore):
            queries.restore_chat(session, change.chat, now)
        elif isinstance(change, Move):
            queries.move_chat(session, change.old_chat_id, change.new_chat, now)
        elif isinstance(change, SetLanguage):
            queries.set_chat_language(session, change.chat_id, change.language_code)
