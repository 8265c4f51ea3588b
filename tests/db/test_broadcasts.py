"""The broadcast ledger: pushes, recipients, outcomes and counts (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import INITIAL_PUSH_STATUSES, PUSH_TRANSITIONS, PushStatus, RetractStatus
from pushbot.db.queries import (
    ChatInfo,
    DeliveryOutcome,
    PushCounts,
    PushDraft,
    PushSummary,
    RetractOutcome,
)
from tests.db.conftest import StatementLog

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ADMIN_CHAT = 900
BLOCKED = "Forbidden: bot was blocked by the user"
NOT_FOUND = "Bad Request: chat not found"

Factory = sessionmaker[Session]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add_chats(factory: Factory, chat_ids: range | list[int]) -> None:
    with factory.begin() as session:
        for chat_id in chat_ids:
            queries.subscribe_chat(session, ChatInfo(id=chat_id, type="private"), T0)


def new_push(factory: Factory, created: datetime = T0, text: str = "Hello") -> PushSummary:
    draft = PushDraft(
        text=text,
        content_type="text",
        source_chat_id=ADMIN_CHAT,
        source_message_id=10,
        admin_id=ADMIN_CHAT,
        preview_message_id=11,
    )
    with factory.begin() as session:
        return queries.create_push(session, draft, created)


def enqueued_push(factory: Factory, chat_ids: range | list[int]) -> UUID:
    add_chats(factory, chat_ids)
    push = new_push(factory)
    with factory.begin() as session:
        queries.enqueue_recipients(session, push.uuid, T0)
    return push.uuid


def sent(chat_id: int, seconds: float = 1) -> DeliveryOutcome:
    return DeliveryOutcome(chat_id, chat_id + 50_000, None, purge=False, at=at(seconds))


def failed(chat_id: int, error: str, purge: bool = False) -> DeliveryOutcome:
    return DeliveryOutcome(chat_id, None, error, purge=purge, at=at(1))


def deliver(factory: Factory, push_uuid: UUID, outcomes: list[DeliveryOutcome]) -> None:
    with factory.begin() as session:
        queries.record_deliveries(session, push_uuid, outcomes)


def retract(factory: Factory, push_uuid: UUID, outcomes: list[RetractOutcome]) -> None:
    with factory.begin() as session:
        queries.record_retractions(session, push_uuid, outcomes)


def counts(factory: Factory, push_uuid: UUID) -> PushCounts:
    with factory.begin() as session:
        return queries.push_counts(session, push_uuid)


def get(factory: Factory, push_uuid: UUID) -> PushSummary:
    with factory.begin() as session:
        push = queries.get_push(session, push_uuid)
    assert push is not None
    return push


def all_pages(factory: Factory, push_uuid: UUID, page: int) -> list[list[int]]:
    pages: list[list[int]] = []
    after: int | None = None
    while True:
        with factory.begin() as session:
            chunk = queries.pending_chat_ids(session, push_uuid, after, page)
        if not chunk:
            return pages
        pages.append(chunk)
        after = chunk[-1]


# --- create_push, get_push ---------------------------------------------------------------------


def test_create_push_starts_running_with_an_empty_audience(session_factory: Factory) -> None:
    push = new_push(session_factory)

    assert (push.status, push.audience_size, push.deleted) == ("running", 0, False)
    assert (push.created_at, push.finished_at, push.deleted_at) == (T0, None, None)
    assert (push.report_chat_id, push.preview_message_id) == (ADMIN_CHAT, 11)
    assert get(session_factory, push.uuid) == push


def test_get_push_of_an_unknown_uuid_is_none(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        assert queries.get_push(session, uuid4()) is None


# --- enqueue_recipients ------------------------------------------------------------------------


def test_enqueue_takes_exactly_the_audience_in_one_insert_select(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    add_chats(session_factory, range(1, 11))
    with session_factory.begin() as session:
        queries.unsubscribe_chat(session, 3)
        queries.purge_chats(session, {4: BLOCKED, 5: BLOCKED}, T0)
    push = new_push(session_factory)
    sql_log.clear()

    with session_factory.begin() as session:
        size = queries.enqueue_recipients(session, push.uuid, T0)

    inserts = [s for s in sql_log.statements if s.verb == "INSERT"]
    assert len(inserts) == 1 and "SELECT" in inserts[0].sql.upper()
    assert size == 7
    assert get(session_factory, push.uuid).audience_size == 7
    assert counts(session_factory, push.uuid) == PushCounts(total=7, pending=7)
    assert all_pages(session_factory, push.uuid, 100) == [[1, 2, 6, 7, 8, 9, 10]]


def test_enqueue_twice_inserts_nothing_more(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, range(1, 6))
    add_chats(session_factory, [6, 7])  # subscribed after the snapshot

    with session_factory.begin() as session:
        again = queries.enqueue_recipients(session, push_uuid, T0)

    assert again == 5
    assert get(session_factory, push_uuid).audience_size == 5
    assert counts(session_factory, push_uuid).total == 5


def test_enqueue_with_an_empty_audience(session_factory: Factory) -> None:
    push = new_push(session_factory)

    with session_factory.begin() as session:
        assert queries.enqueue_recipients(session, push.uuid) == 0

    assert counts(session_factory, push.uuid) == PushCounts()


def test_each_push_gets_its_own_recipients(session_factory: Factory) -> None:
    first = enqueued_push(session_factory, range(1, 4))
    add_chats(session_factory, [4])
    second = new_push(session_factory)

    with session_factory.begin() as session:
        assert queries.enqueue_recipients(session, second.uuid) == 4

    assert counts(session_factory, first).total == 3


# --- pending_chat_ids, sent_copies: keyset pagination ------------------------------------------


def test_pending_chat_ids_walks_every_pending_recipient_in_order(
    session_factory: Factory,
) -> None:
    chat_ids = [-1_001_234_567_890, -5, 7, 8, 9, 5_000_000_000]  # 64-bit ids, groups < 0
    push_uuid = enqueued_push(session_factory, chat_ids)

    assert all_pages(session_factory, push_uuid, 4) == [chat_ids[:4], chat_ids[4:]]


def test_pending_chat_ids_skips_recipients_with_an_outcome(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, range(1, 8))
    deliver(session_factory, push_uuid, [sent(2), failed(5, NOT_FOUND)])

    assert all_pages(session_factory, push_uuid, 2) == [[1, 3], [4, 6], [7]]
    with session_factory.begin() as session:
        assert queries.pending_chat_ids(session, push_uuid, 6, 10) == [7]
        assert queries.pending_chat_ids(session, push_uuid, 7, 10) == []


def test_sent_copies_walks_delivered_unretracted_copies(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, range(1, 8))
    deliver(session_factory, push_uuid, [sent(n) for n in (1, 2, 3, 5, 6, 7)] + [failed(4, "x")])
    retract(session_factory, push_uuid, [RetractOutcome(2, "deleted", None, at(5))])

    with session_factory.begin() as session:
        first = queries.sent_copies(session, push_uuid, None, 2)
        second = queries.sent_copies(session, push_uuid, first[-1][0], 2)
        third = queries.sent_copies(session, push_uuid, second[-1][0], 2)
        rest = queries.sent_copies(session, push_uuid, third[-1][0], 2)

    assert first == [(1, 50_001), (3, 50_003)]
    assert second == [(5, 50_005), (6, 50_006)]
    assert (third, rest) == ([(7, 50_007)], [])


# --- record_deliveries -------------------------------------------------------------------------


def test_record_deliveries_stores_outcomes_and_purges_in_two_statements(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    push_uuid = enqueued_push(session_factory, range(1, 7))
    sql_log.clear()

    deliver(
        session_factory,
        push_uuid,
        [
            sent(1),
            sent(2),
            failed(3, BLOCKED, purge=True),
            failed(4, NOT_FOUND, purge=True),
            failed(5, "Timed out"),
        ],
    )

    # One executemany for the ledger, one for the purges and one for the audience's history
    # of them: never a statement per row.
    assert [(s.verb, s.executemany, s.rows) for s in sql_log.statements] == [
        ("UPDATE", True, 5),
        ("INSERT", True, 2),
        ("UPDATE", True, 2),
    ]
    assert counts(session_factory, push_uuid) == PushCounts(
        total=6,
        pending=1,
        sent=2,
        failed=3,
        failed_by_reason={BLOCKED: 1, NOT_FOUND: 1, "Timed out": 1},
        retract_pending=2,
    )
    with session_factory.begin() as session:
        blocked = queries.get_chat(session, 3)
        timed_out = queries.get_chat(session, 5)
        assert queries.audience_size(session) == 4
    assert blocked is not None and timed_out is not None
    assert (blocked.purge_reason, blocked.purged_at) == (BLOCKED, at(1))
    assert timed_out.in_audience


def test_a_delivered_copy_is_never_overwritten_by_a_later_failure(
    session_factory: Factory,
) -> None:
    push_uuid = enqueued_push(session_factory, [1])
    deliver(session_factory, push_uuid, [sent(1)])

    deliver(session_factory, push_uuid, [failed(1, "Timed out")])

    with session_factory.begin() as session:
        assert queries.sent_copies(session, push_uuid, None, 10) == [(1, 50_001)]
    assert counts(session_factory, push_uuid).failed == 0


def test_a_failed_recipient_can_still_be_delivered_later(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, [1])
    deliver(session_factory, push_uuid, [failed(1, "Timed out")])

    deliver(session_factory, push_uuid, [sent(1)])

    result = counts(session_factory, push_uuid)
    assert (result.sent, result.failed, result.failed_by_reason) == (1, 0, {})


def test_a_failure_without_error_text_counts_as_unknown(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, [1, 2])

    deliver(session_factory, push_uuid, [DeliveryOutcome(1, None, None, purge=True, at=at(1))])

    assert counts(session_factory, push_uuid).failed_by_reason == {"unknown": 1}
    with session_factory.begin() as session:
        purged = queries.get_chat(session, 1)
    assert purged is not None and purged.purge_reason == "unknown"


def test_overlong_errors_are_clipped_not_fatal(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, [1])

    deliver(session_factory, push_uuid, [failed(1, "E" * 1000, purge=True)])

    assert counts(session_factory, push_uuid).failed_by_reason == {"E" * 255: 1}


def test_record_deliveries_with_no_outcomes_sends_nothing(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    push_uuid = enqueued_push(session_factory, [1])
    sql_log.clear()

    deliver(session_factory, push_uuid, [])

    assert sql_log.statements == []


def test_outcomes_of_another_push_are_not_mixed_up(session_factory: Factory) -> None:
    first = enqueued_push(session_factory, [1, 2])
    second = new_push(session_factory)
    with session_factory.begin() as session:
        queries.enqueue_recipients(session, second.uuid)

    deliver(session_factory, first, [sent(1), sent(2)])

    assert counts(session_factory, second.uuid) == PushCounts(total=2, pending=2)


def test_a_large_broadcast_in_flush_sized_batches(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    chat_ids = range(1, 2001)
    with session_factory.begin() as session:
        # Quicker than 2000 subscribe calls; the audience table is what matters here.
        for chat_id in chat_ids:
            queries.record_chat(session, ChatInfo(id=chat_id, type="private"), T0)
    push = new_push(session_factory)
    with session_factory.begin() as session:
        assert queries.enqueue_recipients(session, push.uuid) == 2000
    sql_log.clear()

    after: int | None = None
    while True:
        with session_factory.begin() as session:
            batch = queries.pending_chat_ids(session, push.uuid, after, 500)
        if not batch:
            break
        outcomes = [sent(n) if n % 10 else failed(n, BLOCKED, purge=True) for n in batch]
        deliver(session_factory, push.uuid, outcomes)
        after = batch[-1]

    updates = [s for s in sql_log.statements if s.verb == "UPDATE"]
    assert len(updates) == 8  # 4 batches x (ledger + purges)
    assert counts(session_factory, push.uuid) == PushCounts(
        total=2000,
        sent=1800,
        failed=200,
        failed_by_reason={BLOCKED: 200},
        retract_pending=1800,
    )


# --- record_retractions ------------------------------------------------------------------------


def test_retraction_counts(session_factory: Factory, sql_log: StatementLog) -> None:
    push_uuid = enqueued_push(session_factory, range(1, 8))
    deliver(session_factory, push_uuid, [sent(n) for n in range(1, 7)] + [failed(7, BLOCKED)])
    sql_log.clear()

    retract(
        session_factory,
        push_uuid,
        [
            RetractOutcome(1, RetractStatus.DELETED, None, at(9)),
            RetractOutcome(2, "deleted", None, at(9)),
            RetractOutcome(3, "gone", "Bad Request: message to delete not found", at(9)),
            RetractOutcome(4, "failed", "Bad Request: message can't be deleted", at(9)),
        ],
    )

    assert [(s.verb, s.executemany, s.rows) for s in sql_log.statements] == [("UPDATE", True, 4)]
    assert counts(session_factory, push_uuid) == PushCounts(
        total=7,
        sent=6,
        failed=1,
        failed_by_reason={BLOCKED: 1},
        retracted=3,
        retract_failed=1,
        retract_failed_by_reason={"Bad Request: message can't be deleted": 1},
        retract_pending=2,
    )


def test_an_unknown_retract_status_is_refused(session_factory: Factory) -> None:
    push_uuid = enqueued_push(session_factory, [1])
    deliver(session_factory, push_uuid, [sent(1)])

    with pytest.raises(ValueError, match="bogus"):
        retract(session_factory, push_uuid, [RetractOutcome(1, "bogus", None, at(2))])


# --- status and message ids --------------------------------------------------------------------


# The way to each status from a new (running) push.
PATHS: dict[PushStatus, tuple[PushStatus, ...]] = {
    PushStatus.RUNNING: (),
    PushStatus.PAUSED: (PushStatus.PAUSED,),
    PushStatus.CANCELLED: (PushStatus.CANCELLED,),
    PushStatus.DONE: (PushStatus.DONE,),
    PushStatus.RETRACTING: (PushStatus.RETRACTING,),
    PushStatus.RETRACTED: (PushStatus.RETRACTING, PushStatus.RETRACTED),
}


def move(
    session: Session, push_uuid: UUID, status: PushStatus, when: datetime | None = None
) -> None:
    for step in PATHS[status]:
        assert queries.change_push_status(session, push_uuid, step, now=when)


@pytest.mark.parametrize("status", [PushStatus.DONE, PushStatus.CANCELLED])
def test_terminal_statuses_stamp_finished_at(session_factory: Factory, status: PushStatus) -> None:
    push = new_push(session_factory)

    with session_factory.begin() as session:
        move(session, push.uuid, status, at(60))

    stored = get(session_factory, push.uuid)
    assert (stored.status, stored.finished_at, stored.deleted) == (status, at(60), False)


@pytest.mark.parametrize("status", [PushStatus.PAUSED, PushStatus.RUNNING, PushStatus.RETRACTING])
def test_non_terminal_statuses_leave_finished_at_empty(
    session_factory: Factory, status: PushStatus
) -> None:
    push = new_push(session_factory)

    with session_factory.begin() as session:
        move(session, push.uuid, status, at(60))

    stored = get(session_factory, push.uuid)
    assert (stored.status, stored.finished_at) == (status, None)


def test_retracted_marks_the_push_deleted(session_factory: Factory) -> None:
    push = new_push(session_factory)
    with session_factory.begin() as session:
        queries.change_push_status(session, push.uuid, PushStatus.DONE, now=at(60))
        queries.change_push_status(session, push.uuid, PushStatus.RETRACTING, now=at(70))
    with session_factory.begin() as session:
        queries.change_push_status(session, push.uuid, PushStatus.RETRACTED, now=at(80))

    stored = get(session_factory, push.uuid)
    assert (stored.status, stored.deleted, stored.deleted_at, stored.finished_at) == (
        PushStatus.RETRACTED,
        True,
        at(80),
        at(80),
    )


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ((), PushStatus.RETRACTED),  # running -> retracted skips the retraction
        ((PushStatus.DONE,), PushStatus.RUNNING),  # a finished push does not restart
        ((PushStatus.CANCELLED,), PushStatus.PAUSED),
        ((PushStatus.RETRACTING,), PushStatus.DONE),
        ((PushStatus.DONE,), PushStatus.DONE),  # finishing twice would restamp finished_at
    ],
)
def test_a_change_the_transitions_table_does_not_allow_changes_nothing(
    session_factory: Factory, path: tuple[PushStatus, ...], refused: PushStatus
) -> None:
    push = new_push(session_factory)
    with session_factory.begin() as session:
        for step in path:
            assert queries.change_push_status(session, push.uuid, step, now=at(60))
    before = get(session_factory, push.uuid)

    with session_factory.begin() as session:
        changed = queries.change_push_status(session, push.uuid, refused, now=at(90))

    assert not changed
    assert get(session_factory, push.uuid) == before


def test_a_change_is_made_only_from_an_expected_status(session_factory: Factory) -> None:
    push = new_push(session_factory)

    with session_factory.begin() as session:
        from_paused = queries.change_push_status(
            session, push.uuid, PushStatus.CANCELLED, expected={PushStatus.PAUSED}
        )
        from_running = queries.change_push_status(
            session, push.uuid, PushStatus.PAUSED, expected={PushStatus.RUNNING}
        )

    assert (from_paused, from_running) == (False, True)
    assert get(session_factory, push.uuid).status is PushStatus.PAUSED


def test_every_status_can_be_reached_and_retracted_is_the_end() -> None:
    reachable = set(INITIAL_PUSH_STATUSES)
    for targets in PUSH_TRANSITIONS.values():
        reachable |= targets
    assert reachable == set(PushStatus)
    assert PUSH_TRANSITIONS[PushStatus.RETRACTED] == frozenset()


def test_set_push_message_ids_changes_only_the_given_ids(session_factory: Factory) -> None:
    push = new_push(session_factory)

    with session_factory.begin() as session:
        queries.set_push_message_ids(session, push.uuid, report_chat_id=77, status_message_id=12)
    with session_factory.begin() as session:
        queries.set_push_message_ids(session, push.uuid, report_message_id=13)
        queries.set_push_message_ids(session, push.uuid)

    stored = get(session_factory, push.uuid)
    assert (
        stored.report_chat_id,
        stored.report_message_id,
        stored.status_message_id,
        stored.preview_message_id,
    ) == (77, 13, 12, 11)


@pytest.mark.parametrize("message_id", [11, 12, 13], ids=["preview", "status", "report"])
def test_find_push_by_any_of_its_admin_messages(session_factory: Factory, message_id: int) -> None:
    other = new_push(session_factory, at(-60))
    push = new_push(session_factory)
    with session_factory.begin() as session:
        queries.set_push_message_ids(session, other.uuid, report_chat_id=555)
        queries.set_push_message_ids(session, push.uuid, report_message_id=13, status_message_id=12)

    with session_factory.begin() as session:
        found = queries.find_push_by_message(session, ADMIN_CHAT, message_id)

    assert found is not None and found.uuid == push.uuid


def test_find_push_by_message_needs_the_right_chat(session_factory: Factory) -> None:
    push = new_push(session_factory)
    with session_factory.begin() as session:
        queries.set_push_message_ids(session, push.uuid, report_message_id=13)

    with session_factory.begin() as session:
        assert queries.find_push_by_message(session, ADMIN_CHAT + 1, 13) is None
        assert queries.find_push_by_message(session, ADMIN_CHAT, 14) is None


# --- listings ----------------------------------------------------------------------------------


def test_unfinished_pushes_are_what_to_resume_oldest_first(session_factory: Factory) -> None:
    statuses = [
        PushStatus(name)
        for name in ["done", "running", "cancelled", "retracting", "paused", "retracted", "running"]
    ]
    pushes = [new_push(session_factory, at(index)) for index in range(len(statuses))]
    with session_factory.begin() as session:
        for push, status in zip(pushes, statuses, strict=True):
            move(session, push.uuid, status)

    with session_factory.begin() as session:
        unfinished = queries.unfinished_pushes(session)

    assert [push.uuid for push in unfinished] == [pushes[i].uuid for i in (1, 3, 4, 6)]
    assert [push.status for push in unfinished] == ["running", "retracting", "paused", "running"]


def test_recent_pushes_newest_first_with_counts_in_two_queries(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    add_chats(session_factory, range(1, 5))
    pushes = [new_push(session_factory, at(index), text=f"push {index}") for index in range(4)]
    with session_factory.begin() as session:
        for push in pushes[:3]:
            queries.enqueue_recipients(session, push.uuid)
    deliver(session_factory, pushes[1].uuid, [sent(1), failed(2, BLOCKED)])
    sql_log.clear()

    with session_factory.begin() as session:
        history = queries.recent_pushes(session, limit=3)

    assert len(sql_log.statements) == 2
    assert [row.push.text for row in history] == ["push 3", "push 2", "push 1"]
    assert [row.counts for row in history] == [
        PushCounts(),
        PushCounts(total=4, pending=4),
        PushCounts(
            total=4, pending=2, sent=1, failed=1, failed_by_reason={BLOCKED: 1}, retract_pending=1
        ),
    ]


def test_recent_pushes_of_an_empty_ledger(session_factory: Factory, sql_log: StatementLog) -> None:
    with session_factory.begin() as session:
        assert queries.recent_pushes(session) == []

    assert len(sql_log.statements) == 1


def test_push_counts_of_an_unknown_push_are_zero(session_factory: Factory) -> None:
    assert counts(session_factory, uuid4()) == PushCounts()
