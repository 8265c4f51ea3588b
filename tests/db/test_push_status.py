"""The statuses issue 11 adds to a push's life: `scheduled` (before it is sent) and `editing`
(/edit correcting the delivered copies), through the one compare-and-set (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import PUSH_TRANSITIONS, PushStatus
from pushbot.db.queries import PushDraft

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
S = PushStatus

Factory = sessionmaker[Session]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def push_in(factory: Factory, *path: PushStatus, scheduled: bool = False) -> UUID:
    """A push moved along `path` from running (or from scheduled)."""
    with factory.begin() as session:
        push = queries.create_push(session, PushDraft("Hi", "text", 900, 1, 900), T0)
        if scheduled:
            # Nothing creates scheduled pushes yet (issue 11, item 2): start it there by hand.
            session.execute(
                update(queries.PUSHES)
                .where(queries.PUSHES.c.uuid == push.uuid)
                .values(status=S.SCHEDULED.value, scheduled_at=at(120))
            )
    for minute, step in enumerate(path, start=1):
        assert change(factory, push.uuid, step, at(minute)), f"{step} refused"
    return push.uuid


def change(factory: Factory, push_uuid: UUID, status: PushStatus, when: datetime) -> bool:
    with factory.begin() as session:
        return queries.change_push_status(session, push_uuid, status, now=when)


def stored(factory: Factory, push_uuid: UUID) -> tuple[str, datetime | None, datetime | None]:
    pushes = queries.PUSHES.c
    with factory.begin() as session:
        row = session.execute(
            select(pushes.status, pushes.finished_at, pushes.edited_at).where(
                pushes.uuid == push_uuid
            )
        ).one()
    return row.status, utc(row.finished_at), utc(row.edited_at)


def utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_the_table_holds_the_new_statuses_as_described() -> None:
    assert PUSH_TRANSITIONS[S.SCHEDULED] == {S.RUNNING, S.CANCELLED}
    assert PUSH_TRANSITIONS[S.DONE] == {S.EDITING, S.RETRACTING}
    assert PUSH_TRANSITIONS[S.EDITING] == {S.DONE, S.RETRACTING}
    assert not S.SCHEDULED.finished and not S.EDITING.finished
    assert not S.SCHEDULED.sending and not S.EDITING.sending


def test_a_scheduled_push_starts_running_when_due(session_factory: Factory) -> None:
    push_uuid = push_in(session_factory, scheduled=True)

    assert change(session_factory, push_uuid, S.RUNNING, at(120))
    assert stored(session_factory, push_uuid) == ("running", None, None)


def test_a_cancelled_schedule_is_finished(session_factory: Factory) -> None:
    push_uuid = push_in(session_factory, scheduled=True)

    assert change(session_factory, push_uuid, S.CANCELLED, at(30))
    assert stored(session_factory, push_uuid) == ("cancelled", at(30), None)


@pytest.mark.parametrize("refused", [S.DONE, S.PAUSED, S.RETRACTING, S.EDITING])
def test_a_scheduled_push_goes_nowhere_else(session_factory: Factory, refused: S) -> None:
    push_uuid = push_in(session_factory, scheduled=True)

    assert not change(session_factory, push_uuid, refused, at(30))
    assert stored(session_factory, push_uuid) == ("scheduled", None, None)


@pytest.mark.parametrize("refused", [S.RUNNING, S.PAUSED, S.CANCELLED])
def test_nothing_goes_back_to_scheduled_and_a_sent_push_cannot_be_rescheduled(
    session_factory: Factory, refused: S
) -> None:
    push_uuid = push_in(session_factory, *([] if refused is S.RUNNING else [refused]))

    assert not change(session_factory, push_uuid, S.SCHEDULED, at(30))
    assert stored(session_factory, push_uuid)[0] == refused.value


def test_an_edit_ends_done_keeping_the_broadcasts_finish_time(session_factory: Factory) -> None:
    push_uuid = push_in(session_factory, S.DONE)  # done at minute 1
    assert change(session_factory, push_uuid, S.EDITING, at(10))
    assert stored(session_factory, push_uuid) == ("editing", at(1), None)
    # A resumed edit job re-asserts its own status, as running and retracting jobs do.
    assert change(session_factory, push_uuid, S.EDITING, at(11))

    assert change(session_factory, push_uuid, S.DONE, at(12))

    assert stored(session_factory, push_uuid) == ("done", at(1), at(12))


def test_an_edited_push_can_be_edited_again_and_then_retracted(session_factory: Factory) -> None:
    push_uuid = push_in(session_factory, S.DONE, S.EDITING, S.DONE, S.EDITING)

    assert change(session_factory, push_uuid, S.RETRACTING, at(20))
    assert change(session_factory, push_uuid, S.RETRACTED, at(21))
    # Retracting mid-edit leaves the last finished edit's time alone.
    assert stored(session_factory, push_uuid) == ("retracted", at(21), at(3))


@pytest.mark.parametrize("path", [(), (S.PAUSED,), (S.CANCELLED,), (S.RETRACTING,)], ids=str)
def test_only_a_done_push_is_edited(session_factory: Factory, path: tuple[S, ...]) -> None:
    push_uuid = push_in(session_factory, *path)
    before = stored(session_factory, push_uuid)

    assert not change(session_factory, push_uuid, S.EDITING, at(30))
    assert stored(session_factory, push_uuid) == before


@pytest.mark.parametrize("refused", [S.RUNNING, S.PAUSED, S.CANCELLED, S.RETRACTED])
def test_an_edit_ends_done_or_is_overtaken_by_a_retraction_only(
    session_factory: Factory, refused: S
) -> None:
    push_uuid = push_in(session_factory, S.DONE, S.EDITING)

    assert not change(session_factory, push_uuid, refused, at(30))
    assert stored(session_factory, push_uuid)[0] == "editing"
