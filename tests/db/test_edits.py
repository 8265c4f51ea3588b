"""/edit in the ledger: an edit round, the copies it owes, its outcomes and counts (both
backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.queries import (
    ChatInfo,
    DeliveryOutcome,
    EditedText,
    EditOutcome,
    PushDraft,
    RetractOutcome,
)
from tests.db.conftest import StatementLog

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
S = PushStatus
FIX = EditedText("Fixed «text» ✓", ({"type": "bold", "offset": 0, "length": 5},))

Factory = sessionmaker[Session]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def delivered_push(factory: Factory, chat_ids: range, *path: PushStatus) -> UUID:
    """A push delivered to every chat but the last (blocked), then moved along `path`."""
    with factory.begin() as session:
        for chat_id in chat_ids:
            queries.subscribe_chat(session, ChatInfo(id=chat_id, type="private"), T0)
        push = queries.create_push(session, PushDraft("Typo", "text", 900, 1, 900), T0)
        queries.enqueue_recipients(session, push.uuid, T0)
        *reached, blocked = chat_ids
        outcomes = [DeliveryOutcome(c, c + 1000, None, False, at(1)) for c in reached]
        outcomes.append(DeliveryOutcome(blocked, None, "blocked", False, at(1)))
        queries.record_deliveries(session, push.uuid, outcomes)
        for step in path:
            assert queries.change_push_status(session, push.uuid, step, now=at(2))
    return push.uuid


def begin(factory: Factory, push_uuid: UUID, edit: EditedText = FIX) -> bool:
    with factory.begin() as session:
        return queries.begin_edit(session, push_uuid, edit, now=at(5))


def record(factory: Factory, push_uuid: UUID, outcomes: list[EditOutcome]) -> None:
    with factory.begin() as session:
        queries.record_edits(session, push_uuid, outcomes)


def get(factory: Factory, push_uuid: UUID) -> queries.PushSummary:
    with factory.begin() as session:
        push = queries.get_push(session, push_uuid)
    assert push is not None
    return push


def pages(factory: Factory, push_uuid: UUID, size: int) -> list[list[tuple[int, int]]]:
    found: list[list[tuple[int, int]]] = []
    after: int | None = None
    while True:
        with factory.begin() as session:
            page = queries.copies_to_edit(session, push_uuid, after, size)
        if not page:
            return found
        found.append(page)
        after = page[-1][0]


def test_an_edit_round_stores_the_text_with_its_formatting(session_factory: Factory) -> None:
    push_uuid = delivered_push(session_factory, range(1, 4), S.DONE)

    assert begin(session_factory, push_uuid)

    push = get(session_factory, push_uuid)
    assert push.status is S.EDITING
    assert (push.edited_text, push.edited_entities) == (FIX.text, FIX.entities)
    assert push.current_text == FIX.text and push.text == "Typo"
    assert push.edited_at is None, "stamped when the round ends"


def test_copies_to_edit_are_the_delivered_ones_in_pages(session_factory: Factory) -> None:
    push_uuid = delivered_push(session_factory, range(1, 9), S.DONE)
    begin(session_factory, push_uuid)

    assert pages(session_factory, push_uuid, 3) == [
        [(1, 1001), (2, 1002), (3, 1003)],
        [(4, 1004), (5, 1005), (6, 1006)],
        [(7, 1007)],
    ]


def test_edit_outcomes_in_one_statement_and_their_counts(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    push_uuid = delivered_push(session_factory, range(1, 8), S.DONE)
    begin(session_factory, push_uuid)
    sql_log.clear()

    record(
        session_factory,
        push_uuid,
        [
            EditOutcome(1, "edited", None, at(6)),
            EditOutcome(2, "edited", None, at(6)),
            EditOutcome(3, "unchanged", "deleted by the user", at(6)),
            EditOutcome(4, "failed", "blocked", at(6)),
        ],
    )

    assert [(s.verb, s.executemany, s.rows) for s in sql_log.statements] == [("UPDATE", True, 4)]
    with session_factory.begin() as session:
        counts = queries.push_counts(session, push_uuid)
    assert counts.edited == 2
    assert counts.edit_unchanged_by_reason == {"deleted by the user": 1}
    assert counts.edit_failed_by_reason == {"blocked": 1}
    assert (counts.edit_unchanged, counts.edit_failed, counts.edit_pending) == (1, 1, 2)
    assert pages(session_factory, push_uuid, 10) == [[(5, 1005), (6, 1006)]]
    assert (counts.sent, counts.failed) == (6, 1), "the delivery counts stay"


def test_a_new_round_owes_every_copy_the_edit_again(session_factory: Factory) -> None:
    push_uuid = delivered_push(session_factory, range(1, 5), S.DONE)
    begin(session_factory, push_uuid)
    record(session_factory, push_uuid, [EditOutcome(c, "edited", None, at(6)) for c in (1, 2, 3)])
    with session_factory.begin() as session:
        assert queries.change_push_status(session, push_uuid, S.DONE, now=at(7))

    assert begin(session_factory, push_uuid, EditedText("Second fix"))

    with session_factory.begin() as session:
        counts = queries.push_counts(session, push_uuid)
    assert (counts.edited, counts.edit_pending) == (0, 3)
    assert [c for c, _ in pages(session_factory, push_uuid, 10)[0]] == [1, 2, 3]
    push = get(session_factory, push_uuid)
    assert (push.edited_text, push.edited_entities) == ("Second fix", ())
    assert push.edited_at == at(7), "the last finished round's time until this one ends"


def test_an_unfinished_round_can_start_over_with_another_text(session_factory: Factory) -> None:
    push_uuid = delivered_push(session_factory, range(1, 4), S.DONE)
    begin(session_factory, push_uuid)
    record(session_factory, push_uuid, [EditOutcome(1, "edited", None, at(6))])

    assert begin(session_factory, push_uuid, EditedText("Better"))

    assert get(session_factory, push_uuid).edited_text == "Better"
    assert len(pages(session_factory, push_uuid, 10)[0]) == 2


@pytest.mark.parametrize(
    "path",
    [(), (S.PAUSED,), (S.CANCELLED,), (S.RETRACTING,), (S.DONE, S.RETRACTING, S.RETRACTED)],
    ids=["running", "paused", "cancelled", "retracting", "retracted"],
)
def test_only_a_finished_broadcast_starts_a_round(
    session_factory: Factory, path: tuple[PushStatus, ...]
) -> None:
    push_uuid = delivered_push(session_factory, range(1, 3), *path)
    before = get(session_factory, push_uuid)

    assert not begin(session_factory, push_uuid)

    assert get(session_factory, push_uuid) == before


def test_retracted_copies_are_not_edited(session_factory: Factory) -> None:
    push_uuid = delivered_push(session_factory, range(1, 4), S.DONE, S.RETRACTING)
    with session_factory.begin() as session:
        queries.record_retractions(session, push_uuid, [RetractOutcome(1, "deleted", None, at(3))])

    assert pages(session_factory, push_uuid, 10) == [[(2, 1002)]]


def test_an_editing_push_is_resumed_after_a_crash(session_factory: Factory) -> None:
    push_uuid = delivered_push(session_factory, range(1, 3), S.DONE)
    begin(session_factory, push_uuid)

    with session_factory.begin() as session:
        unfinished = queries.unfinished_pushes(session)

    assert [(p.uuid, p.status) for p in unfinished] == [(push_uuid, S.EDITING)]
