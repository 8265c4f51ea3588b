"""The bot layer's store: chats seen often cost no write; its memory stays bounded."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pushbot.bot import store as store_module
from pushbot.bot.store import Store, Subscribe
from pushbot.db import queries
from pushbot.db.queries import ChatInfo


def test_a_chat_seen_again_soon_is_not_written_again(
    session_factory: sessionmaker[Session],
) -> None:
    store = Store(session_factory)
    chat = ChatInfo(id=42, type="private", first_name="Ann")
    asyncio.run(store.note_seen(chat))
    renamed = ChatInfo(id=42, type="private", first_name="Renamed")
    asyncio.run(store.note_seen(renamed))
    with session_factory.begin() as session:
        row = queries.get_chat(session, 42)
    assert row is not None and row.first_name == "Ann"


def test_the_recently_seen_memory_is_swept(
    monkeypatch: pytest.MonkeyPatch, session_factory: sessionmaker[Session]
) -> None:
    monkeypatch.setattr(store_module, "RECENTLY_SEEN_MAX", 10)
    monkeypatch.setattr(store_module, "LAST_SEEN_REFRESH_SECONDS", 0.0)
    store = Store(session_factory)

    async def many() -> None:
        for chat_id in range(1, 60):
            await store.note_seen(ChatInfo(id=chat_id, type="private"))

    asyncio.run(many())
    assert len(store._recently_seen) <= 20
    with session_factory.begin() as session:
        assert queries.audience_size(session) == 59


def test_the_language_a_write_carries_is_not_written_again_by_the_language_refresh(
    session_factory: sessionmaker[Session],
) -> None:
    """The /start path writes through `Store.write` (the outbox), and the language handler
    after it must know that language is on record: else every /start costs two commits."""
    store = Store(session_factory)

    async def start_then_refresh() -> None:
        await store.write(Subscribe(ChatInfo(id=7, type="private", language_code="de")))
        written = store.writer.written
        await store.refresh_language(7, "de")
        assert store.writer.written == written  # nothing more to write
        await store.refresh_language(7, "fr")
        assert store.writer.written == written + 1  # a change is written

    try:
        asyncio.run(start_then_refresh())
    finally:
        store.close()
    with session_factory.begin() as session:
        row = queries.get_chat(session, 7)
    assert row is not None and row.language_code == "fr"
