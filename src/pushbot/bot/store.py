"""The bot layer's door to the audience: async wrappers over `pushbot.db.queries`.
(Broadcasts are the broadcast service's: pushbot.broadcast.service.)

psycopg2 and SQLite are synchronous, so every call runs in a worker thread and the
Application's event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.queries import ChatInfo

T = TypeVar("T")

# A chat seen within this window is not written again just because it sent another update.
LAST_SEEN_REFRESH_SECONDS = 600.0
RECENTLY_SEEN_MAX = 100_000


class Store:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory
        self._recently_seen: dict[int, float] = {}
        self._sweep_at = RECENTLY_SEEN_MAX
        # The language last written per chat: `refresh_language` writes only a change.
        self._languages: dict[int, str] = {}

    async def _run(self, work: Callable[[Session], T]) -> T:
        def in_transaction() -> T:
            with self._factory.begin() as session:
                return work(session)

        return await asyncio.to_thread(in_transaction)

    # audience
    async def subscribe(self, chat: ChatInfo) -> bool:
        self._recently_seen[chat.id] = time.monotonic()
        self._written_language(chat)
        return await self._run(lambda s: queries.subscribe_chat(s, chat))

    async def unsubscribe(self, chat_id: int) -> bool:
        return await self._run(lambda s: queries.unsubscribe_chat(s, chat_id))

    async def note_seen(self, chat: ChatInfo) -> None:
        """Record a chat that writes to us, at most once per refresh window per chat."""
        now = time.monotonic()
        last = self._recently_seen.get(chat.id)
        if last is not None and now - last < LAST_SEEN_REFRESH_SECONDS:
            return
        self._recently_seen[chat.id] = now
        if len(self._recently_seen) > self._sweep_at:
            self._forget_stale(now)
        self._written_language(chat)
        await self._run(lambda s: queries.record_chat(s, chat))

    async def refresh_language(self, chat_id: int, language_code: str) -> None:
        """Telegram reports a user's language on every message they send: keep the chat's
        current (it decides their language segment), writing only when it changed."""
        if self._languages.get(chat_id) == language_code:
            return
        self._written_language(ChatInfo(chat_id, "private", language_code=language_code))
        await self._run(lambda s: queries.set_chat_language(s, chat_id, language_code))

    def _written_language(self, chat: ChatInfo) -> None:
        if chat.language_code is None:
            return
        if len(self._languages) >= RECENTLY_SEEN_MAX:
            self._languages.clear()  # bounded; forgetting costs one write per chat at most
        self._languages[chat.id] = chat.language_code

    def _forget_stale(self, now: float) -> None:
        """Keep the memory of a bot with millions of chats bounded to the active ones."""
        cutoff = now - LAST_SEEN_REFRESH_SECONDS
        self._recently_seen = {k: t for k, t in self._recently_seen.items() if t >= cutoff}
        # When most are still fresh, sweep again only after the map doubled (O(1) amortised).
        self._sweep_at = max(RECENTLY_SEEN_MAX, 2 * len(self._recently_seen))

    async def purge(self, chat_id: int, reason: str) -> None:
        self._recently_seen.pop(chat_id, None)
        await self._run(lambda s: queries.purge_chat(s, chat_id, reason))

    async def move(self, old_chat_id: int, new_chat: ChatInfo) -> None:
        """The group became a supergroup with a new id: its subscription goes with it."""
        self._recently_seen.pop(old_chat_id, None)
        self._recently_seen[new_chat.id] = time.monotonic()
        await self._run(lambda s: queries.move_chat(s, old_chat_id, new_chat))

    async def restore(self, chat: ChatInfo) -> None:
        self._recently_seen[chat.id] = time.monotonic()
        self._written_language(chat)
        await self._run(lambda s: queries.restore_chat(s, chat))
