"""The group commits' queries: many chats in one go leave exactly what one chat at a time
leaves (rows, results and history), in a few statements however many chats; and the outbox
(both backends)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.queries import ChatInfo, OutgoingReply
from tests.db.conftest import StatementLog

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
Factory = sessionmaker[Session]


def user(chat_id: int, name: str = "Ann", language: str | None = "en") -> ChatInfo:
    return ChatInfo(id=chat_id, type="private", first_name=name, language_code=language)


def snapshot(factory: Factory) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    chats, events = queries.CHATS.c, queries.CHAT_EVENTS.c
    with factory.begin() as session:
        rows = session.execute(
            select(
                chats.id,
                chats.type,
                chats.first_name,
                chats.language_code,
                chats.subscribed,
                chats.purged_at.is_not(None),
                chats.purge_reason,
            ).order_by(chats.id)
        )
        history = session.execute(
            select(events.chat_id, events.kind, events.reason).order_by(events.chat_id, events.id)
        )
        return [tuple(r) for r in rows], [tuple(e) for e in history]


def prepare(session: Session) -> None:
    """Chats in every place a /start can find them: subscribed, stopped, purged."""
    queries.subscribe_chat(session, user(1), T0)
    queries.subscribe_chat(session, user(2), T0)
    queries.unsubscribe_chat(session, 2, T0)
    queries.subscribe_chat(session, user(3), T0)
    queries.purge_chat(session, 3, "blocked", T0)
    queries.subscribe_chat(session, user(4), T0)
    queries.unsubscribe_chat(session, 4, T0)
    queries.purge_chat(session, 4, "blocked", T0)
    queries.record_chat(session, ChatInfo(id=-5, type="group", title="Club"), T0)


def test_bulk_writes_leave_what_one_at_a_time_leaves(session_factory: Factory) -> None:
    later = T0 + timedelta(minutes=5)
    chats = [user(i, name=f"renamed {i}", language=None) for i in (1, 2, 3, 4, 6)]
    group = ChatInfo(id=-5, type="supergroup", title="Club renamed")

    def one_at_a_time(session: Session) -> list[Any]:
        entered = [queries.subscribe_chat(session, chat, later) for chat in chats]
        queries.record_chat(session, group, later)
        queries.record_chat(session, user(7), later)
        left = [queries.unsubscribe_chat(session, chat_id, later) for chat_id in (1, 2, 8)]
        return [entered, left]

    def in_bulk(session: Session) -> list[Any]:
        entered = queries.subscribe_chats(session, chats, later)
        queries.record_chats(session, [group, user(7)], later)
        left = queries.unsubscribe_chats(session, [1, 2, 8], later)
        return [entered, left]

    results = []
    for way in (one_at_a_time, in_bulk):
        with session_factory.begin() as session:
            session.execute(queries.CHAT_EVENTS.delete())
            session.execute(queries.CHATS.delete())
            prepare(session)
        with session_factory.begin() as session:
            outcome = way(session)
        results.append((outcome, snapshot(session_factory)))

    (single, single_state), (bulk, bulk_state) = results
    # 1 was subscribed, 2 had stopped, 3 was purged, 4 both, 6 is new; then 1 and 2 stop.
    assert bulk == single == [[False, True, True, True, True], [True, True, False]]
    assert bulk_state == single_state
    rows, history = bulk_state
    # The language a user's message told us survives an update that carries none.
    assert {row[0]: row[3] for row in rows}[1] == "en"
    assert (6, "joined", None) in history and (7, "joined", None) in history
    assert (3, "returned", None) in history and (1, "left", None) in history


def test_bulk_writes_are_a_few_statements_however_many_chats(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    def statements_for(count: int, first: int) -> list[str]:
        sql_log.clear()
        with session_factory.begin() as session:
            queries.subscribe_chats(session, [user(first + i) for i in range(count)], T0)
        return sql_log.verbs()

    assert statements_for(3, 100) == statements_for(300, 1000)
    assert len(statements_for(300, 5000)) <= 5


def test_owed_replies_keep_their_order_and_go_when_settled(session_factory: Factory) -> None:
    replies = [
        OutgoingReply(1, "first"),
        OutgoingReply(-5, "in a group", reply_to_message_id=7, message_thread_id=3),
        OutgoingReply(1, "second"),
    ]
    with session_factory.begin() as session:
        owed = queries.owe_replies(session, replies, T0)
    assert [row.reply for row in owed] == replies
    assert owed[0].id < owed[1].id < owed[2].id

    with session_factory.begin() as session:
        assert queries.owed_replies(session) == owed
        queries.settle_replies(session, [owed[0].id, owed[2].id])
    with session_factory.begin() as session:
        assert queries.owed_replies(session) == [owed[1]]
        assert queries.owe_replies(session, []) == []
        queries.settle_replies(session, [])


def test_an_empty_batch_writes_nothing(session_factory: Factory, sql_log: StatementLog) -> None:
    calls: list[Callable[[Session], Any]] = [
        lambda s: queries.subscribe_chats(s, [], T0),
        lambda s: queries.unsubscribe_chats(s, [], T0),
        lambda s: queries.record_chats(s, [], T0),
    ]
    sql_log.clear()
    with session_factory.begin() as session:
        for call in calls:
            call(session)
    assert [verb for verb in sql_log.verbs() if verb not in ("BEGIN", "COMMIT")] == []
