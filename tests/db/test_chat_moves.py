"""A group upgraded to a supergroup: its record and its pending copies move to the new id
(both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.queries import ChatInfo, ChatRow, DeliveryOutcome, PushDraft

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
GROUP, SUPERGROUP = -4_518_810_793, -1_002_471_352_452
OLD = ChatInfo(id=GROUP, type="group", title="Readers")
NEW = ChatInfo(id=SUPERGROUP, type="supergroup", title="Readers")

Factory = sessionmaker[Session]


def chat(factory: Factory, chat_id: int) -> ChatRow | None:
    with factory.begin() as session:
        return queries.get_chat(session, chat_id)


def move(factory: Factory, now: datetime = T1) -> None:
    with factory.begin() as session:
        queries.move_chat(session, GROUP, NEW, now)


def test_the_record_moves_with_its_subscription(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, OLD, T0)
        queries.unsubscribe_chat(session, GROUP)  # someone sent /stop in the group

    move(session_factory)

    assert chat(session_factory, GROUP) is None
    assert chat(session_factory, SUPERGROUP) == ChatRow(
        id=SUPERGROUP,
        type="supergroup",
        title="Readers",
        username=None,
        first_name=None,
        language_code=None,
        subscribed=False,
        purged_at=None,
        purge_reason=None,
        first_seen=T0,
        last_seen=T1,
    )
    with session_factory.begin() as session:
        assert queries.audience_counts(session) == queries.AudienceCounts(0, 1, 0)


def test_hearing_of_the_move_twice_changes_nothing(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, OLD, T0)
    move(session_factory, T1)
    moved = chat(session_factory, SUPERGROUP)

    move(session_factory, T2)  # the service message of the other chat

    assert chat(session_factory, SUPERGROUP) == moved
    assert chat(session_factory, GROUP) is None


def test_the_old_record_wins_over_a_row_the_supergroup_just_got(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        queries.subscribe_chat(session, OLD, T0)
        queries.unsubscribe_chat(session, GROUP)
        # A message in the supergroup was handled first: it made a row, subscribed by default.
        queries.record_chat(session, NEW, T1)

    move(session_factory, T2)

    moved = chat(session_factory, SUPERGROUP)
    assert moved is not None
    assert (moved.subscribed, moved.first_seen, moved.last_seen) == (False, T0, T2)
    assert chat(session_factory, GROUP) is None


def test_a_group_we_never_knew_joins_as_its_supergroup(session_factory: Factory) -> None:
    move(session_factory)

    moved = chat(session_factory, SUPERGROUP)
    assert moved is not None and moved.in_audience and moved.type == "supergroup"


def enqueued(factory: Factory, chat_ids: list[ChatInfo]) -> queries.PushSummary:
    draft = PushDraft(
        text="Hello", content_type="text", source_chat_id=1, source_message_id=1, admin_id=1
    )
    with factory.begin() as session:
        for info in chat_ids:
            queries.subscribe_chat(session, info, T0)
        push = queries.create_push(session, draft, T0)
        queries.enqueue_recipients(session, push.uuid, T0)
    return push


def test_a_pending_recipient_moves_to_the_supergroup(session_factory: Factory) -> None:
    push = enqueued(session_factory, [OLD, ChatInfo(id=7, type="private")])

    with session_factory.begin() as session:
        assert queries.move_recipient(session, push.uuid, GROUP, SUPERGROUP, T1) is True
        assert queries.pending_chat_ids(session, push.uuid, None, 10) == [SUPERGROUP, 7]
        outcome = DeliveryOutcome(SUPERGROUP, 55, None, False, T1)
        queries.record_deliveries(session, push.uuid, [outcome])
        assert queries.sent_copies(session, push.uuid, None, 10) == [(SUPERGROUP, 55)]

    moved = chat(session_factory, SUPERGROUP)
    assert moved is not None and moved.in_audience and moved.title == "Readers"
    assert chat(session_factory, GROUP) is None


def test_no_move_when_the_supergroup_has_its_own_row(session_factory: Factory) -> None:
    push = enqueued(session_factory, [OLD, NEW])

    with session_factory.begin() as session:
        assert queries.move_recipient(session, push.uuid, GROUP, SUPERGROUP, T1) is False
        pending = queries.pending_chat_ids(session, push.uuid, None, 10)

    assert pending == [SUPERGROUP, GROUP]  # the old row stays, to be recorded as failed
    assert chat(session_factory, GROUP) is None  # the record moved all the same


def test_no_move_of_a_recipient_already_settled(session_factory: Factory) -> None:
    push = enqueued(session_factory, [OLD])
    with session_factory.begin() as session:
        failed = DeliveryOutcome(GROUP, None, "kicked", False, T1)
        queries.record_deliveries(session, push.uuid, [failed])

        assert queries.move_recipient(session, push.uuid, GROUP, SUPERGROUP, T1) is False
        counts = queries.push_counts(session, push.uuid)

    assert (counts.total, counts.failed, counts.pending) == (1, 1, 0)
