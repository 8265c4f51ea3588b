"""Group commits (pushbot.bot.writer, pushbot.bot.store) on a real database, both backends:
many writes per commit, each caller its own result, order kept, a bad write alone refused,
a failing database retried without applying anything twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pushbot.bot import writer as writer_module
from pushbot.bot.store import (
    Move,
    NoteSeen,
    Store,
    Subscribe,
    Unsubscribe,
    Written,
    _apply,
    _Write,
)
from pushbot.bot.writer import GroupCommitWriter, WriterClosed
from pushbot.broadcast.backoff import Backoff
from pushbot.db import queries
from pushbot.db.queries import ChatInfo, OutgoingReply

Factory = sessionmaker[Session]


def user(chat_id: int) -> ChatInfo:
    return ChatInfo(id=chat_id, type="private", first_name=f"user {chat_id}")


def events(factory: Factory) -> dict[int, list[str]]:
    c = queries.CHAT_EVENTS.c
    found: dict[int, list[str]] = {}
    with factory.begin() as session:
        for chat_id, kind in session.execute(select(c.chat_id, c.kind).order_by(c.id)):
            found.setdefault(chat_id, []).append(kind)
    return found


def count_chats(factory: Factory) -> int:
    with factory.begin() as session:
        return int(session.execute(select(func.count()).select_from(queries.CHATS)).scalar_one())


def test_concurrent_writes_share_commits_and_each_gets_its_own_result(
    session_factory: Factory,
) -> None:
    store = Store(session_factory)

    async def rush() -> list[bool]:
        await store.subscribe(user(1))  # already in the audience when the rush comes
        return list(await asyncio.gather(*(store.subscribe(user(i)) for i in range(1, 301))))

    entered = asyncio.run(rush())
    store.close()

    assert entered == [False] + [True] * 299
    assert store.writer.written == 301
    assert store.writer.commits < 301 / 5, f"{store.writer.commits} commits for 301 writes"
    assert count_chats(session_factory) == 300
    assert all(kinds == ["joined"] for kinds in events(session_factory).values())


def test_one_chats_writes_in_one_batch_apply_in_order(session_factory: Factory) -> None:
    """The update processor lets one update per chat run at a time, but a batch may still
    hold several writes of a chat (a group's move touches two): they apply in order."""
    batch = [
        _Write(Subscribe(user(1))),
        _Write(NoteSeen(user(2))),
        _Write(Unsubscribe(1)),
        _Write(NoteSeen(ChatInfo(id=-5, type="group", title="Club"))),
        _Write(Subscribe(user(1)), reply_for=lambda newly: OutgoingReply(1, f"new: {newly}")),
        _Write(Move(-5, ChatInfo(id=-100, type="supergroup", title="Club"))),
        _Write(NoteSeen(ChatInfo(id=-100, type="supergroup", title="Club"))),
        _Write(Unsubscribe(2), reply_for=lambda was: OutgoingReply(2, f"was: {was}")),
    ]
    with session_factory.begin() as session:
        done: list[Written] = _apply(session, batch)

    assert [w.result for w in done] == [True, None, True, None, True, None, None, True]
    assert [w.owed.reply.text if w.owed else None for w in done][4::3] == ["new: True", "was: True"]
    assert events(session_factory) == {
        1: ["joined", "left", "returned"],
        2: ["joined", "left"],
        -5: ["joined"],
        -100: ["migrated"],
    }
    with session_factory.begin() as session:
        assert queries.get_chat(session, -5) is None
        moved = queries.get_chat(session, -100)
        assert moved is not None and moved.in_audience


def test_a_write_the_database_refuses_fails_alone(session_factory: Factory) -> None:
    store = Store(session_factory)
    # NOT NULL: a chat without a type is a bug, not an outage.
    broken = ChatInfo(id=7, type=None)  # type: ignore[arg-type]

    async def batch() -> list[bool | BaseException]:
        return list(
            await asyncio.gather(
                store.subscribe(user(1)),
                store.subscribe(broken),
                store.subscribe(user(2)),
                return_exceptions=True,
            )
        )

    outcomes = asyncio.run(batch())
    store.close()
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[1], WriterClosed)
    assert count_chats(session_factory) == 2


class FlakyDatabase:
    """`apply` that fails like a lost connection for the first `failures` batches, after
    doing its work (which the rollback must undo)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    def __call__(self, session: Session, chats: Sequence[ChatInfo]) -> list[bool]:
        self.attempts += 1
        entered = queries.subscribe_chats(session, list(chats), datetime.now(UTC))
        if self.attempts <= self.failures:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return entered


def test_a_failing_database_is_retried_and_nothing_is_applied_twice(
    session_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "RETRY_BACKOFF", Backoff(0.01, 0.02))
    flaky = FlakyDatabase(failures=3)
    writer: GroupCommitWriter[ChatInfo, bool] = GroupCommitWriter(session_factory, flaky)

    async def submit() -> list[bool]:
        return list(await asyncio.gather(*(writer.submit(user(i)) for i in range(1, 21))))

    entered = asyncio.run(submit())
    writer.close()
    assert entered == [True] * 20
    assert flaky.attempts > 3
    assert count_chats(session_factory) == 20
    assert all(kinds == ["joined"] for kinds in events(session_factory).values())


def test_close_commits_what_is_queued_then_refuses_more(session_factory: Factory) -> None:
    store = Store(session_factory)

    async def queue_then_close() -> list[bool]:
        pending = [asyncio.ensure_future(store.subscribe(user(i))) for i in range(1, 51)]
        await asyncio.sleep(0)  # every write submitted
        await asyncio.to_thread(store.close)
        return [bool(await p) for p in pending]

    assert asyncio.run(queue_then_close()) == [True] * 50
    assert count_chats(session_factory) == 50

    async def after() -> None:
        await store.subscribe(user(99))

    with pytest.raises(WriterClosed):
        asyncio.run(after())
