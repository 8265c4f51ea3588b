"""/undo: every delivered copy is deleted exactly once, whatever state the push was in."""

from __future__ import annotations

from pushbot.broadcast.progress import JobKind, JobState
from pushbot.db.models import PushStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene


def copies_left(scene: Scene, chat_ids: list[int]) -> int:
    return sum(len(scene.tg.inbox(chat_id)) for chat_id in chat_ids)


def delete_calls_per_chat(scene: Scene) -> dict[int, int]:
    per_chat: dict[int, int] = {}
    for call in scene.tg.calls("deleteMessage"):
        assert isinstance(call.chat_id, int)
        per_chat[call.chat_id] = per_chat.get(call.chat_id, 0) + 1
    return per_chat


def test_retract_deletes_every_copy_once_and_already_gone_counts_as_removed(
    scene: Scene,
) -> None:
    users = scene.users(60, blocked=4)
    reachable = users[4:]
    broadcaster = scene.broadcaster()
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid).wait(timeout=30)
    rows = helpers.notifications(scene.factory, push_uuid)
    # Two users deleted the copy themselves: Telegram says "message to delete not found".
    for chat_id in reachable[:2]:
        scene.tg.user_deletes_message(chat_id, rows[chat_id].telegram_message_id)

    report = broadcaster.launch_retract(push_uuid).wait(timeout=30)

    assert report.kind is JobKind.RETRACT and report.state is JobState.RETRACTED
    assert report.sent == len(reachable) and report.removed == len(reachable)
    assert report.failed == 0 and report.purged == 0
    assert copies_left(scene, reachable) == 0
    assert delete_calls_per_chat(scene) == dict.fromkeys(reachable, 1)
    counts = helpers.counts(scene.factory, push_uuid)
    assert (counts.retracted, counts.retract_failed, counts.retract_pending) == (56, 0, 0)
    statuses = {
        row.retract_status
        for row in helpers.notifications(scene.factory, push_uuid).values()
        if row.status == "sent"
    }
    assert statuses == {"deleted", "gone"}
    summary = helpers.status(scene.factory, push_uuid)
    assert summary == PushStatus.RETRACTED
    # A retracted push is not resumed, and a second undo has nothing left to delete.
    assert broadcaster.launch_retract(push_uuid).wait(timeout=10).sent == len(reachable)
    assert delete_calls_per_chat(scene) == dict.fromkeys(reachable, 1)


def test_copies_older_than_48_hours_cannot_be_deleted(scene: Scene) -> None:
    users = scene.users(10)
    broadcaster = scene.broadcaster()
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid).wait(timeout=30)
    scene.tg.age_messages(49)
    report = broadcaster.launch_retract(push_uuid).wait(timeout=30)
    assert report.state is JobState.RETRACTED
    assert report.sent == 0 and report.failed_by_reason == {"older than 48 hours": 10}
    assert copies_left(scene, users) == 10
    assert helpers.counts(scene.factory, push_uuid).retract_failed == 10


def test_retract_while_the_push_is_still_sending(scene: Scene) -> None:
    users = scene.users(300)
    broadcaster = scene.broadcaster(rate=150.0)
    push_uuid = scene.push()
    sending = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(60)

    retracting = broadcaster.launch_retract(push_uuid)
    # Persisted at once: a crash now cannot bring the sending back.
    assert helpers.status(scene.factory, push_uuid) in {PushStatus.RETRACTING, PushStatus.RETRACTED}
    assert sending.wait(timeout=10).state is JobState.SUPERSEDED
    report = retracting.wait(timeout=30)

    sent = scene.sent_so_far()
    assert sent < 300
    assert report.state is JobState.RETRACTED and report.sent == sent and report.failed == 0
    assert copies_left(scene, users) == 0
    assert sum(delete_calls_per_chat(scene).values()) == sent
    assert helpers.status(scene.factory, push_uuid) == PushStatus.RETRACTED

    broadcaster.shutdown()  # every engine thread has ended: nothing can be sent after this
    assert scene.sent_so_far() == sent  # the sending really stopped at its report
    assert scene.broadcaster().resume_unfinished() == []


def test_an_interrupted_retraction_is_resumed_at_the_next_start(scene: Scene) -> None:
    users = scene.users(200)
    broadcaster = scene.broadcaster()
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid).wait(timeout=30)
    broadcaster.shutdown()

    slow = scene.broadcaster(rate=150.0)
    retracting = slow.launch_retract(push_uuid)
    scene.tg.wait_for(lambda: scene.tg.count("deleteMessage", 200) >= 40, timeout=20)
    slow.shutdown()
    assert retracting.wait(timeout=1).state is JobState.INTERRUPTED
    assert helpers.status(scene.factory, push_uuid) == PushStatus.RETRACTING

    restarted = scene.broadcaster()
    assert restarted.resume_unfinished() == [push_uuid]
    report = restarted.wait(push_uuid, timeout=30)
    assert report.state is JobState.RETRACTED and report.sent == 200
    assert copies_left(scene, users) == 0
    assert delete_calls_per_chat(scene) == dict.fromkeys(users, 1)
