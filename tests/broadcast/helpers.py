"""Set-up and inspection helpers shared by the broadcast tests (plain functions, no fixtures)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import Chat, PushNotification
from tgstandin import StandIn

ADMIN_ID = 1000


def subscribe(factory: sessionmaker[Session], chat_ids: Iterable[int]) -> None:
    """Put chats in the audience, in bulk (the per-chat query is far too slow for 10,000)."""
    rows = [
        {"id": chat_id, "type": "private" if chat_id > 0 else "group", "subscribed": True}
        for chat_id in chat_ids
    ]
    if rows:
        with factory.begin() as session:
            session.execute(Chat.__table__.insert(), rows)  # type: ignore[attr-defined]


def unsubscribe(factory: sessionmaker[Session], chat_id: int) -> None:
    with factory.begin() as session:
        queries.unsubscribe_chat(session, chat_id)


def create_push(
    factory: sessionmaker[Session], source_chat_id: int = ADMIN_ID, source_message_id: int = 1
) -> UUID:
    with factory.begin() as session:
        push = queries.create_push(
            session,
            queries.PushDraft(
                text="hello",
                content_type="text",
                source_chat_id=source_chat_id,
                source_message_id=source_message_id,
                admin_id=ADMIN_ID,
            ),
        )
    return push.uuid


def counts(factory: sessionmaker[Session], push_uuid: UUID) -> queries.PushCounts:
    with factory.begin() as session:
        return queries.push_counts(session, push_uuid)


def status(factory: sessionmaker[Session], push_uuid: UUID) -> str:
    with factory.begin() as session:
        push = queries.get_push(session, push_uuid)
    assert push is not None
    return push.status


def notifications(factory: sessionmaker[Session], push_uuid: UUID) -> dict[int, Any]:
    """chat_id -> row of push_notifications."""
    with factory.begin() as session:
        rows = session.execute(
            select(PushNotification.__table__).where(PushNotification.message_uuid == push_uuid)
        ).all()
    return {row.chat_id: row for row in rows}


def purged(factory: sessionmaker[Session]) -> dict[int, str | None]:
    with factory.begin() as session:
        rows = session.execute(
            select(Chat.id, Chat.purge_reason).where(Chat.purged_at.is_not(None))
        ).all()
    return {row.id: row.purge_reason for row in rows}


def too_many_requests(tg: StandIn) -> int:
    """How many calls of any method Telegram answered with 429."""
    return sum(by_status.get("429", 0) for by_status in tg.stats().values())


class FakeClock:
    """A monotonic clock the test moves by hand (`clock.now += 2.0`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll until `condition` holds; AssertionError once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.01)
