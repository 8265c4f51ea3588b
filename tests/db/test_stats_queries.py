"""The queries behind /stats, with every event at a controlled time (both backends)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import PushStatus, RetractStatus
from pushbot.db.queries import (
    AudienceChanges,
    AudiencePoint,
    ChatInfo,
    DeliveryOutcome,
    PushDraft,
    RetractOutcome,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

Factory = sessionmaker[Session]
Operation = Callable[[Session, datetime], object]


def ago(days: float, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def user(chat_id: int) -> ChatInfo:
    return ChatInfo(id=chat_id, type="private")


def subscribe(chat_id: int) -> Operation:
    return lambda session, when: queries.subscribe_chat(session, user(chat_id), when)


def stop(chat_id: int) -> Operation:
    return lambda session, when: queries.unsubscribe_chat(session, chat_id, now=when)


def purge(chat_id: int, reason: str) -> Operation:
    return lambda session, when: queries.purge_chat(session, chat_id, reason, when)


# (when, chat, what happened, whether the chat is in the audience afterwards)
TIMELINE: list[tuple[datetime, int, Operation, bool]] = [
    (ago(50), 7, subscribe(7), True),
    (ago(45), 7, stop(7), False),
    (ago(40), 1, subscribe(1), True),
    (ago(25), 5, subscribe(5), True),
    (ago(20), 2, subscribe(2), True),
    (ago(10), 5, purge(5, "blocked"), False),
    (ago(6), 6, subscribe(6), True),
    (ago(5), 3, subscribe(3), True),
    (ago(4), 7, subscribe(7), True),  # returns
    (ago(3), 4, subscribe(4), True),
    (ago(2), 4, stop(4), False),
    (ago(1), 6, purge(6, "deactivated"), False),
]


@pytest.fixture
def lived(session_factory: Factory) -> Factory:
    """An audience with 50 days of comings and goings."""
    for when, _, operation, _ in TIMELINE:
        with session_factory.begin() as session:
            operation(session, when)
    return session_factory


def in_audience_at(moment: datetime) -> int:
    """The audience at `moment`, replayed from the timeline (the oracle)."""
    state: dict[int, bool] = {}
    for when, chat_id, _, inside in TIMELINE:
        if when < moment:
            state[chat_id] = inside
    return sum(state.values())


def changes(factory: Factory, since: datetime, until: datetime | None = None) -> AudienceChanges:
    with factory.begin() as session:
        return queries.audience_changes(session, since, until)


def test_changes_over_the_last_7_and_30_days(lived: Factory) -> None:
    assert changes(lived, ago(7)) == AudienceChanges(
        joined=3, returned=1, left=1, purged_by_reason={"deactivated": 1}
    )
    assert changes(lived, ago(30)) == AudienceChanges(
        joined=5, returned=1, left=1, purged_by_reason={"blocked": 1, "deactivated": 1}
    )
    assert changes(lived, ago(30)).purged == 2


def test_a_range_includes_its_start_and_excludes_its_end(lived: Factory) -> None:
    assert changes(lived, ago(5), ago(3)) == AudienceChanges(joined=1, returned=1)
    assert changes(lived, ago(5), ago(4)) == AudienceChanges(joined=1)
    assert changes(lived, NOW) == AudienceChanges()


def test_the_history_has_the_audience_at_the_end_of_each_day(lived: Factory) -> None:
    with lived.begin() as session:
        points = queries.audience_history(session, 90, NOW)
        now = queries.audience_size(session)

    assert len(points) == 90
    assert (points[0].day, points[-1].day) == (date(2026, 9, 2), NOW.date())
    expected = [
        AudiencePoint(
            point.day, in_audience_at(datetime.combine(point.day, time(), UTC) + timedelta(1))
        )
        for point in points
    ]
    assert points == expected
    assert points[-1].size == now == 4  # 1, 2, 3 and 7
    assert {point.size for point in points} >= {0, 1, 2, 3, 4, 5}, "it went up and down"


def test_a_day_is_a_utc_day_whatever_the_database_session_thinks(
    session_factory: Factory,
) -> None:
    midnight = datetime.combine(NOW.date() - timedelta(days=1), time(), UTC)
    with session_factory.begin() as session:
        queries.subscribe_chat(session, user(1), midnight - timedelta(microseconds=1))
        queries.subscribe_chat(session, user(2), midnight)

    with session_factory.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
        points = queries.audience_history(session, 3, NOW)

    assert [point.size for point in points] == [1, 2, 2]


def test_an_empty_history_is_flat_at_zero(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        points = queries.audience_history(session, 7, NOW)

    assert [point.size for point in points] == [0] * 7


# --- broadcasts --------------------------------------------------------------------------------


def new_push(factory: Factory, created: datetime, recipients: range) -> UUID:
    with factory.begin() as session:
        for chat_id in recipients:
            queries.subscribe_chat(session, user(chat_id), created - timedelta(days=1))
        push = queries.create_push(session, PushDraft("Hi", "text", 900, 1, 900), created)
        queries.enqueue_recipients(session, push.uuid, created)
    return push.uuid


def test_broadcast_stats_give_counts_and_pace_newest_first(session_factory: Factory) -> None:
    first = new_push(session_factory, ago(2), range(1, 6))
    with session_factory.begin() as session:
        queries.record_deliveries(
            session,
            first,
            [
                DeliveryOutcome(n, 100 + n, None, purge=False, at=ago(2) + timedelta(seconds=n))
                for n in (1, 2, 3, 4)
            ]
            + [DeliveryOutcome(5, None, "blocked", purge=True, at=ago(2))],
        )
        queries.record_retractions(
            session, first, [RetractOutcome(1, RetractStatus.DELETED, None, ago(1))]
        )
        queries.change_push_status(session, first, PushStatus.DONE, now=ago(1))
    scheduled = new_push(session_factory, ago(0, hours=1), range(1, 2))
    with session_factory.begin() as session:
        session.execute(
            update(queries.PUSHES)
            .where(queries.PUSHES.c.uuid == scheduled)
            .values(status=PushStatus.SCHEDULED.value)
        )
    latest = new_push(session_factory, ago(0, hours=2), range(1, 2))

    with session_factory.begin() as session:
        rows = queries.broadcast_stats(session, 5)
        only_one = queries.broadcast_stats(session, 1)

    assert [row.push.uuid for row in rows] == [latest, first]
    assert [row.push.uuid for row in only_one] == [latest]
    newest, older = rows
    assert (newest.counts.sent, newest.last_sent_at, newest.pace) == (0, None, None)
    assert (older.counts.sent, older.counts.failed, older.counts.retracted) == (4, 1, 1)
    assert older.last_sent_at == ago(2) + timedelta(seconds=4)
    assert older.pace == pytest.approx(1.0)  # 4 copies in the 4 s from Send to the last one


def test_broadcast_times_are_the_starts_since_a_moment(session_factory: Factory) -> None:
    new_push(session_factory, ago(100), range(1, 2))
    kept = [ago(80), ago(3)]
    for created in kept:
        new_push(session_factory, created, range(1, 2))
    scheduled = new_push(session_factory, ago(1), range(1, 2))
    with session_factory.begin() as session:
        session.execute(
            update(queries.PUSHES)
            .where(queries.PUSHES.c.uuid == scheduled)
            .values(status=PushStatus.SCHEDULED.value)
        )

    with session_factory.begin() as session:
        assert queries.broadcast_times(session, ago(90)) == kept
        assert queries.broadcast_stats(session, 0) == []


def test_a_scheduled_push_cancelled_before_its_time_never_went_out(
    session_factory: Factory,
) -> None:
    sent = new_push(session_factory, ago(3), range(1, 2))
    with session_factory.begin() as session:
        draft = PushDraft("Later", "text", 900, 2, 900, scheduled_at=NOW + timedelta(days=1))
        never = queries.create_push(session, draft, ago(2)).uuid
        queries.change_push_status(session, never, PushStatus.CANCELLED, now=ago(1))

    with session_factory.begin() as session:
        assert [row.push.uuid for row in queries.broadcast_stats(session, 5)] == [sent]
        assert queries.broadcast_times(session, ago(90)) == [ago(3)]
