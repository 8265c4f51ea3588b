"""The broadcast service owns a push's life: create-and-launch (or refuse) as one step,
what /undo may do, and where the reports go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from pushbot.broadcast.engine import BroadcastBusy, Broadcaster
from pushbot.broadcast.progress import JobState, Progress
from pushbot.broadcast.service import (
    BroadcastService,
    CannotRetract,
    UndoVerdict,
    UnknownBroadcast,
)
from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.queries import PushDraft
from tests.broadcast.conftest import Scene

# A broadcast that is still running when the test acts: 200 copies at 20/s take 10 s.
SLOW_AUDIENCE = 200
SLOW_RATE = 20.0


def draft(scene: Scene, status_message_id: int | None = None) -> PushDraft:
    return PushDraft(
        text="Big news, everyone!",
        content_type="text",
        source_chat_id=scene.admin,
        source_message_id=scene.source_message_id,
        admin_id=scene.admin,
        preview_message_id=scene.source_message_id,
        status_message_id=status_message_id,
    )


def service_of(scene: Scene, broadcaster: Broadcaster | None = None) -> BroadcastService:
    return BroadcastService(scene.factory, broadcaster or scene.broadcaster())


def pushes_stored(scene: Scene) -> int:
    with scene.factory.begin() as session:
        return len(queries.recent_pushes(session, 100))


def test_push_creates_and_launches_in_one_step_and_reports_go_to_the_source_chat(
    scene: Scene,
) -> None:
    users = scene.users(20)
    service = service_of(scene)

    report = service.push(draft(scene, status_message_id=77)).wait(timeout=30)
    service.report_posted(report.uuid, 99)

    assert report.state is JobState.DONE and report.sent == 20
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
    stored = service.get(report.uuid)
    assert stored is not None and stored.status is PushStatus.DONE
    assert (stored.report_chat_id, stored.status_message_id, stored.report_message_id) == (
        scene.admin,
        77,
        99,
    )
    assert service.find_by_message(scene.admin, 99) == stored


def test_a_push_refused_while_another_runs_leaves_no_broadcast_behind(scene: Scene) -> None:
    scene.users(SLOW_AUDIENCE)
    service = service_of(scene, scene.broadcaster(rate=SLOW_RATE))
    first = service.push(draft(scene))
    scene.wait_until_sent(1)

    with pytest.raises(BroadcastBusy) as refused:
        service.push(draft(scene))

    assert refused.value.active.uuid == first.uuid
    assert pushes_stored(scene) == 1
    assert service.cancel(first.uuid)
    assert first.wait(timeout=30).state is JobState.CANCELLED


class LateToTheCheck(Broadcaster):
    """Sees nothing running at the check, as when another process's job starts between
    the service's check and its launch."""

    def busy(self) -> Progress | None:
        return None


def test_a_launch_refused_after_the_check_discards_the_push_it_created(scene: Scene) -> None:
    scene.users(SLOW_AUDIENCE)
    running_service = service_of(scene, scene.broadcaster(rate=SLOW_RATE))
    running = running_service.push(draft(scene))
    scene.wait_until_sent(1)
    late = LateToTheCheck(scene.settings(), scene.factory)
    scene.broadcasters.append(late)
    late.start()

    with pytest.raises(BroadcastBusy):
        BroadcastService(scene.factory, late).push(draft(scene))

    assert pushes_stored(scene) == 1
    assert running_service.cancel(running.uuid)
    running.wait(timeout=30)


def test_undo_is_refused_for_what_cannot_be_retracted(scene: Scene) -> None:
    service = service_of(scene)
    nobody = service.push(draft(scene)).wait(timeout=30)  # an empty audience
    with scene.factory.begin() as session:
        old = queries.create_push(session, draft(scene), now=datetime.now(UTC) - timedelta(days=3))

    assert service.check_undo(nobody.uuid).verdict is UndoVerdict.NOTHING_DELIVERED
    assert service.check_undo(old.uuid).verdict is UndoVerdict.TOO_OLD
    with pytest.raises(CannotRetract) as refused:
        service.undo(old.uuid)
    assert refused.value.check.verdict is UndoVerdict.TOO_OLD
    with pytest.raises(UnknownBroadcast):
        service.check_undo(UUID(int=1))
    assert scene.tg.count("deleteMessage") == 0


def test_undo_retracts_shows_its_status_where_asked_and_then_is_refused(scene: Scene) -> None:
    users = scene.users(10)
    service = service_of(scene)
    pushed = service.push(draft(scene)).wait(timeout=30)
    check = service.check_undo(pushed.uuid)
    assert check.verdict is UndoVerdict.RETRACT and not check.stops_sending_first

    report = service.undo(pushed.uuid, status_message=(scene.admin, 55)).wait(timeout=30)

    assert report.state is JobState.RETRACTED and report.removed == len(users)
    stored = service.get(pushed.uuid)
    assert stored is not None and stored.status is PushStatus.RETRACTED
    # The report chat stays the one the push was made in; the status is the message shown.
    assert (stored.report_chat_id, stored.status_message_id) == (scene.admin, 55)
    assert service.check_undo(pushed.uuid).verdict is UndoVerdict.ALREADY_RETRACTED
    with pytest.raises(CannotRetract):
        service.undo(pushed.uuid)


def test_undo_of_a_push_still_being_sent_stops_it_first(scene: Scene) -> None:
    users = scene.users(SLOW_AUDIENCE)
    service = service_of(scene, scene.broadcaster(rate=SLOW_RATE))
    sending = service.push(draft(scene))
    scene.wait_until_sent(1)
    assert service.check_undo(sending.uuid).stops_sending_first

    report = service.undo(sending.uuid).wait(timeout=60)

    assert report.state is JobState.RETRACTED
    assert 0 < report.removed < len(users)  # stopped before everyone got it
    assert sum(len(scene.tg.inbox(u)) for u in users) == 0
