"""The audience: upserts of chats, subscriptions and purges (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.queries import AudienceCounts, ChatInfo, ChatRow
from tests.db.conftest import StatementLog

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)

Factory = sessionmaker[Session]


def alice(**changes: str | None) -> ChatInfo:
    fields: dict[str, str | None] = {
        "title": None,
        "username": "alice",
        "first_name": "Alice",
        "language_code": "en",
    }
    fields.update(changes)
    return ChatInfo(id=1001, type="private", **fields)


def group(chat_id: int = -100_777, title: str = "Readers") -> ChatInfo:
    return ChatInfo(id=chat_id, type="supergroup", title=title)


def chat_row(factory: Factory, chat_id: int) -> ChatRow:
    with factory.begin() as session:
        row = queries.get_chat(session, chat_id)
    assert row is not None
    return row


def subscribe(factory: Factory, chat: ChatInfo, now: datetime = T0) -> bool:
    with factory.begin() as session:
        return queries.subscribe_chat(session, chat, now)


def counts(factory: Factory) -> AudienceCounts:
    with factory.begin() as session:
        return queries.audience_counts(session)


# --- subscribe_chat ----------------------------------------------------------------------------


def test_subscribe_creates_the_chat_in_the_audience(session_factory: Factory) -> None:
    assert subscribe(session_factory, alice()) is True

    row = chat_row(session_factory, 1001)
    assert row == ChatRow(
        id=1001,
        type="private",
        title=None,
        username="alice",
        first_name="Alice",
        language_code="en",
        subscribed=True,
        purged_at=None,
        purge_reason=None,
        first_seen=T0,
        last_seen=T0,
    )
    assert row.in_audience


def test_subscribe_again_refreshes_names_and_reports_no_change(session_factory: Factory) -> None:
    subscribe(session_factory, alice(), T0)

    assert subscribe(session_factory, alice(username="alice2", first_name="Al"), T1) is False

    row = chat_row(session_factory, 1001)
    assert (row.username, row.first_name) == ("alice2", "Al")
    assert (row.first_seen, row.last_seen) == (T0, T1)


def test_subscribe_after_unsubscribe_rejoins(session_factory: Factory) -> None:
    subscribe(session_factory, alice())
    with session_factory.begin() as session:
        queries.unsubscribe_chat(session, 1001)

    assert subscribe(session_factory, alice(), T1) is True
    assert chat_row(session_factory, 1001).in_audience


def test_subscribe_clears_a_purge(session_factory: Factory) -> None:
    subscribe(session_factory, alice())
    with session_factory.begin() as session:
        queries.purge_chat(session, 1001, "Forbidden: bot was blocked by the user", T1)

    assert subscribe(session_factory, alice(), T2) is True

    row = chat_row(session_factory, 1001)
    assert (row.purged_at, row.purge_reason, row.in_audience) == (None, None, True)


def test_subscribe_keeps_the_known_language_when_the_update_has_none(
    session_factory: Factory,
) -> None:
    subscribe(session_factory, alice(language_code="de"))
    subscribe(session_factory, alice(language_code=None), T1)

    assert chat_row(session_factory, 1001).language_code == "de"


def test_overlong_names_are_clipped_to_the_columns(session_factory: Factory) -> None:
    # PostgreSQL rejects oversized values where SQLite would keep them: clip on both.
    subscribe(session_factory, ChatInfo(id=5, type="supergroup", title="t" * 400))

    assert chat_row(session_factory, 5).title == "t" * 255


def test_datetimes_come_back_in_utc(session_factory: Factory) -> None:
    paris = timezone(timedelta(hours=1))
    subscribe(session_factory, alice(), datetime(2025, 3, 1, 13, 0, tzinfo=paris))

    row = chat_row(session_factory, 1001)
    assert row.first_seen == T0
    assert row.first_seen.utcoffset() == timedelta(0)


# --- unsubscribe_chat --------------------------------------------------------------------------


def test_unsubscribe_keeps_the_row_and_reports_whether_it_was_subscribed(
    session_factory: Factory,
) -> None:
    subscribe(session_factory, alice())

    with session_factory.begin() as session:
        first = queries.unsubscribe_chat(session, 1001)
    with session_factory.begin() as session:
        second = queries.unsubscribe_chat(session, 1001)
        unknown = queries.unsubscribe_chat(session, 424242)

    assert (first, second, unknown) == (True, False, False)
    row = chat_row(session_factory, 1001)
    assert (row.subscribed, row.username) == (False, "alice")


# --- record_chat -------------------------------------------------------------------------------


def test_record_creates_an_unknown_chat_subscribed(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.record_chat(session, group(), T0)

    row = chat_row(session_factory, -100_777)
    assert (row.subscribed, row.title, row.first_seen, row.last_seen) == (True, "Readers", T0, T0)


def test_record_refreshes_names_but_leaves_the_subscription_alone(
    session_factory: Factory,
) -> None:
    subscribe(session_factory, group())
    with session_factory.begin() as session:
        queries.unsubscribe_chat(session, -100_777)

    with session_factory.begin() as session:
        queries.record_chat(session, group(title="Readers (new)"), T1)

    row = chat_row(session_factory, -100_777)
    assert (row.subscribed, row.title, row.first_seen, row.last_seen) == (
        False,
        "Readers (new)",
        T0,
        T1,
    )


def test_record_leaves_a_purge_alone(session_factory: Factory) -> None:
    subscribe(session_factory, alice())
    with session_factory.begin() as session:
        queries.purge_chat(session, 1001, "blocked", T1)

    with session_factory.begin() as session:
        queries.record_chat(session, alice(), T2)

    row = chat_row(session_factory, 1001)
    assert (row.purged_at, row.purge_reason, row.last_seen) == (T1, "blocked", T2)


# --- purge_chat, purge_chats, restore_chat -----------------------------------------------------


def test_purge_takes_the_chat_out_of_the_audience_but_keeps_it(session_factory: Factory) -> None:
    subscribe(session_factory, alice())

    with session_factory.begin() as session:
        queries.purge_chat(session, 1001, "Forbidden: bot was blocked by the user", T1)

    row = chat_row(session_factory, 1001)
    assert row.subscribed is True
    assert (row.purged_at, row.purge_reason) == (T1, "Forbidden: bot was blocked by the user")
    assert not row.in_audience


def test_a_second_purge_keeps_the_first_date_and_reason(session_factory: Factory) -> None:
    subscribe(session_factory, alice())
    with session_factory.begin() as session:
        queries.purge_chat(session, 1001, "blocked", T1)
    with session_factory.begin() as session:
        queries.purge_chat(session, 1001, "chat not found", T2)

    row = chat_row(session_factory, 1001)
    assert (row.purged_at, row.purge_reason) == (T1, "blocked")


def test_purging_an_unknown_chat_does_nothing(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.purge_chat(session, 424242, "blocked", T1)
        assert queries.get_chat(session, 424242) is None


def test_purge_chats_is_one_statement_per_table_for_many_chats(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    for chat_id in range(1, 6):
        subscribe(session_factory, ChatInfo(id=chat_id, type="private"))
    sql_log.clear()

    with session_factory.begin() as session:
        queries.purge_chats(session, {1: "blocked", 2: "deactivated", 3: "blocked"}, T1)

    # One executemany for the audience's history, one for the chats.
    assert [(s.verb, s.rows) for s in sql_log.statements] == [("INSERT", 3), ("UPDATE", 3)]
    assert chat_row(session_factory, 2).purge_reason == "deactivated"
    assert counts(session_factory) == AudienceCounts(subscribed=2, unsubscribed=0, purged=3)


def test_purge_chats_with_nothing_to_purge_sends_nothing(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    with session_factory.begin() as session:
        queries.purge_chats(session, {})

    assert sql_log.statements == []


def test_restore_brings_a_subscribed_chat_back(session_factory: Factory) -> None:
    subscribe(session_factory, alice())
    with session_factory.begin() as session:
        queries.purge_chat(session, 1001, "blocked", T1)

    with session_factory.begin() as session:
        queries.restore_chat(session, alice(first_name="Alicia"), T2)

    row = chat_row(session_factory, 1001)
    assert (row.in_audience, row.purge_reason, row.first_name, row.last_seen) == (
        True,
        None,
        "Alicia",
        T2,
    )


def test_restore_does_not_resubscribe_a_chat_that_unsubscribed(session_factory: Factory) -> None:
    subscribe(session_factory, alice())
    with session_factory.begin() as session:
        queries.unsubscribe_chat(session, 1001)
        queries.purge_chat(session, 1001, "blocked", T1)

    with session_factory.begin() as session:
        queries.restore_chat(session, alice(), T2)

    row = chat_row(session_factory, 1001)
    assert (row.subscribed, row.purged_at, row.in_audience) == (False, None, False)


def test_restore_creates_an_unknown_chat_subscribed(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.restore_chat(session, group(), T0)

    assert chat_row(session_factory, -100_777).in_audience


# --- counts ------------------------------------------------------------------------------------


def test_audience_counts_partition_the_chats(session_factory: Factory) -> None:
    for chat_id in range(1, 8):
        subscribe(session_factory, ChatInfo(id=chat_id, type="private"))
    with session_factory.begin() as session:
        queries.unsubscribe_chat(session, 1)
        queries.unsubscribe_chat(session, 2)
        queries.purge_chats(session, {2: "blocked", 3: "blocked"}, T1)

    with session_factory.begin() as session:
        assert queries.audience_counts(session) == AudienceCounts(
            subscribed=4, unsubscribed=1, purged=2
        )
        assert queries.audience_size(session) == 4


def test_counts_of_an_empty_audience_are_zero(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        assert queries.audience_counts(session) == AudienceCounts(0, 0, 0)
        assert queries.audience_size(session) == 0
        assert queries.get_chat(session, 1) is None
