"""/edit in the engine: every delivered copy is corrected exactly once, whatever Telegram does."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.orm import Session, sessionmaker
from telegram import MessageEntity

from pushbot.broadcast.engine import BroadcastBusy, Broadcaster, InvalidPushState
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobKind, JobState
from pushbot.broadcast.service import (
    BroadcastService,
    CannotEdit,
    EditVerdict,
    InvalidEditText,
    UnknownBroadcast,
    edit_text_problem,
)
from pushbot.config import Settings
from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.queries import EditedText
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene, budget_floods, post_as_admin
from tests.broadcast.test_bad_days import quick_probes
from tests.fixtures.process import BotProcess, base_env
from tests.tgstandin.support import raw
from tgstandin import StandIn, StandInConfig

BOLD_FIX: tuple[dict[str, Any], ...] = ({"type": "bold", "offset": 0, "length": 5},)
FIX = EditedText("Fixed news, everyone!", BOLD_FIX)


def successful_edits(scene: Scene, method: str = "editMessageText") -> Counter[int]:
    return Counter(
        int(call.params["chat_id"]) for call in scene.tg.calls(method) if call.status == 200
    )


def copy_of(scene: Scene, chat_id: int) -> dict[str, Any]:
    [copy] = [m for m in scene.tg.inbox(chat_id) if m.get("copied_from")]
    return copy


def pushed(scene: Scene, broadcaster: Broadcaster) -> UUID:
    push_uuid = scene.push()
    assert broadcaster.launch_push(push_uuid).wait(timeout=30).state is JobState.DONE
    return push_uuid


def stored(scene: Scene, push_uuid: UUID) -> queries.PushSummary:
    with scene.factory.begin() as session:
        push = queries.get_push(session, push_uuid)
    assert push is not None
    return push


def test_every_delivered_copy_is_edited_once_and_a_deleted_copy_is_unchanged(
    scene: Scene,
) -> None:
    users = scene.users(40, blocked=4)
    reachable = users[4:]
    broadcaster = scene.broadcaster()
    push_uuid = pushed(scene, broadcaster)
    deleted_by_user = reachable[:2]
    for chat_id in deleted_by_user:
        scene.tg.user_deletes_message(chat_id, copy_of(scene, chat_id)["message_id"])

    handle = broadcaster.launch_edit(push_uuid, FIX)
    report = handle.wait(timeout=30)

    assert handle.kind is JobKind.EDIT
    assert report.kind is JobKind.EDIT and report.state is JobState.DONE
    assert (report.total, report.sent, report.failed, report.purged) == (36, 34, 0, 0)
    assert report.unchanged_by_reason == {"deleted by the user": 2}
    assert report.left == 0
    edited = [chat_id for chat_id in reachable if chat_id not in deleted_by_user]
    assert successful_edits(scene) == Counter(edited)
    for chat_id in edited:
        copy = copy_of(scene, chat_id)
        assert copy["text"] == FIX.text and copy["entities"] == list(BOLD_FIX)
    push = stored(scene, push_uuid)
    assert push.status is PushStatus.DONE and push.edited_at is not None
    assert (push.edited_text, push.edited_entities) == (FIX.text, BOLD_FIX)
    assert push.text == "hello", "the original text stays on record"
    counts = helpers.counts(scene.factory, push_uuid)
    assert (counts.edited, counts.edit_unchanged, counts.edit_failed) == (34, 2, 0)
    assert counts.edit_pending == 0
    rows = helpers.notifications(scene.factory, push_uuid)
    assert {rows[chat_id].edit_error for chat_id in deleted_by_user} == {"deleted by the user"}
    assert all(rows[chat_id].edited_at is not None for chat_id in reachable)


def test_each_edit_is_a_new_round_over_every_copy(scene: Scene) -> None:
    users = scene.users(12)
    broadcaster = scene.broadcaster()
    push_uuid = pushed(scene, broadcaster)
    assert broadcaster.launch_edit(push_uuid, FIX).wait(timeout=30).sent == 12

    same = broadcaster.launch_edit(push_uuid, FIX).wait(timeout=30)
    assert same.sent == 0 and same.unchanged_by_reason == {"already had this text": 12}

    again = broadcaster.launch_edit(push_uuid, EditedText("Third time")).wait(timeout=30)
    assert again.state is JobState.DONE and again.sent == 12 and again.unchanged == 0
    assert all(copy_of(scene, u)["text"] == "Third time" for u in users)
    assert "entities" not in copy_of(scene, users[0]), "the new text's formatting, not the old"
    assert successful_edits(scene) == Counter(users * 2)


def test_a_blocked_user_cannot_get_the_edit_and_stays_in_the_audience(scene: Scene) -> None:
    users = scene.users(6)
    broadcaster = scene.broadcaster()
    push_uuid = pushed(scene, broadcaster)
    scene.tg.set_user_state(users[0], "blocked", notify=False)

    report = broadcaster.launch_edit(push_uuid, FIX).wait(timeout=30)

    assert report.sent == 5 and report.failed_by_reason == {"blocked": 1}
    assert report.purged == 0 and helpers.purged(scene.factory) == {}
    assert helpers.counts(scene.factory, push_uuid).edit_failed_by_reason == {"blocked": 1}


def test_five_percent_of_edits_answered_502_lose_none_and_double_none(scene: Scene) -> None:
    users = scene.users(300)
    broadcaster = scene.broadcaster(workers=8, gateway=quick_probes(1e6))
    push_uuid = pushed(scene, broadcaster)
    scene.tg.inject_faults(kind="502", rate=0.05, methods={"editMessageText"})

    report = broadcaster.launch_edit(push_uuid, FIX).wait(timeout=60)
    scene.tg.inject_faults(rate=0.0)

    assert scene.tg.count("editMessageText", 502) > 0
    assert report.sent == 300 and report.failed == 0 and report.unchanged == 0
    assert successful_edits(scene) == Counter(users)
    assert all(copy_of(scene, u)["text"] == FIX.text for u in users)


def test_a_429_for_one_chat_delays_that_copy_only(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    users = scene.users(40)
    helpers.subscribe(scene.factory, [scene.admin])
    broadcaster = scene.broadcaster(workers=8)
    push_uuid = pushed(scene, broadcaster)
    scene.tg.set_limits(
        enabled=True, global_rate=10_000, global_burst=10_000, per_chat_rate=1, per_chat_burst=1
    )
    # The admin's chat (the first the edit reaches: the lowest id) has just had a message
    # from the bot that went around our budgets: its one-per-second slot is spent.
    assert raw(scene.tg, "sendMessage", chat_id=scene.admin, text="status").status_code == 200

    report = broadcaster.launch_edit(push_uuid, FIX).wait(timeout=60)

    assert scene.tg.count("editMessageText", 429) == 1
    assert budget_floods(caplog) == 0  # nobody else waited
    assert report.sent == 41 and report.failed == 0 and report.unchanged == 0
    assert successful_edits(scene) == Counter([*users, scene.admin])


def test_a_broadcast_too_old_to_retract_can_still_be_edited(scene: Scene) -> None:
    users = scene.users(5)
    broadcaster = scene.broadcaster()
    push_uuid = pushed(scene, broadcaster)
    scene.tg.age_messages(72)

    edited = broadcaster.launch_edit(push_uuid, FIX).wait(timeout=30)
    retracted = broadcaster.launch_retract(push_uuid).wait(timeout=30)

    assert edited.sent == 5 and edited.failed == 0
    assert all(copy_of(scene, u)["text"] == FIX.text for u in users)
    assert retracted.sent == 0 and retracted.failed_by_reason == {"older than 48 hours": 5}


def test_a_media_broadcast_has_its_caption_edited(scene: Scene) -> None:
    users = scene.users(8)
    photo = scene.tg.send_photo(scene.admin, "Old caption")
    source = int(photo.get("message", photo)["message_id"])
    with scene.factory.begin() as session:
        push_uuid = queries.create_push(
            session,
            queries.PushDraft(
                text="Old caption",
                content_type="photo",
                source_chat_id=scene.admin,
                source_message_id=source,
                admin_id=scene.admin,
            ),
        ).uuid
    broadcaster = scene.broadcaster()
    broadcaster.launch_push(push_uuid).wait(timeout=30)

    report = broadcaster.launch_edit(push_uuid, EditedText("New caption", BOLD_FIX)).wait(30)

    assert report.sent == 8 and report.failed == 0
    assert successful_edits(scene, "editMessageCaption") == Counter(users)
    assert scene.tg.count("editMessageText") == 0
    for user in users:
        copy = copy_of(scene, user)
        assert copy["caption"] == "New caption" and copy["caption_entities"] == list(BOLD_FIX)
        assert "photo" in copy


def test_an_undo_overtakes_a_running_edit_and_removes_every_copy(scene: Scene) -> None:
    users = scene.users(300)
    broadcaster = scene.broadcaster(rate=150.0)
    push_uuid = pushed(scene, broadcaster)
    editing = broadcaster.launch_edit(push_uuid, FIX)
    scene.tg.wait_for(lambda: scene.tg.count("editMessageText", 200) >= 40, timeout=20)

    retracting = broadcaster.launch_retract(push_uuid)

    assert editing.wait(timeout=10).state is JobState.SUPERSEDED
    report = retracting.wait(timeout=30)
    assert report.state is JobState.RETRACTED and report.sent == 300 and report.failed == 0
    edited = scene.tg.count("editMessageText", 200)
    assert edited < 300, "the edit stopped before it reached everyone"
    assert all(not scene.tg.inbox(u) for u in users)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.RETRACTED
    broadcaster.shutdown()
    assert scene.broadcaster().resume_unfinished() == []


def test_an_undo_after_an_edit_removes_every_copy(scene: Scene) -> None:
    users = scene.users(20)
    broadcaster = scene.broadcaster()
    push_uuid = pushed(scene, broadcaster)
    broadcaster.launch_edit(push_uuid, FIX).wait(timeout=30)

    report = broadcaster.launch_retract(push_uuid).wait(timeout=30)

    assert report.sent == 20 and report.failed == 0
    assert all(not scene.tg.inbox(u) for u in users)


def test_an_interrupted_edit_resumes_with_only_what_is_left(scene: Scene) -> None:
    users = scene.users(200)
    push_uuid = pushed(scene, scene.broadcaster())
    slow = scene.broadcaster(rate=150.0)
    editing = slow.launch_edit(push_uuid, FIX)
    scene.tg.wait_for(lambda: scene.tg.count("editMessageText", 200) >= 40, timeout=20)
    slow.shutdown()
    assert editing.wait(timeout=1).state is JobState.INTERRUPTED
    assert helpers.status(scene.factory, push_uuid) == PushStatus.EDITING

    restarted = scene.broadcaster()
    assert restarted.resume_unfinished() == [push_uuid]
    report = restarted.wait(push_uuid, timeout=30)

    # A clean shutdown records every edit in flight: nothing is edited twice.
    assert report.kind is JobKind.EDIT and report.state is JobState.DONE
    assert report.sent == 200 and report.unchanged == 0 and report.failed == 0
    assert successful_edits(scene) == Counter(users)
    assert scene.tg.count("editMessageText") == 200
    assert all(copy_of(scene, u)["text"] == FIX.text for u in users)


def test_retractions_resume_first_then_edits_then_pushes(scene: Scene) -> None:
    scene.users(5)
    broadcaster = scene.broadcaster()
    to_edit, to_retract = pushed(scene, broadcaster), pushed(scene, broadcaster)
    broadcaster.shutdown()
    with scene.factory.begin() as session:
        assert queries.begin_edit(session, to_edit, FIX)
        assert queries.change_push_status(session, to_retract, PushStatus.RETRACTING)
    to_send = scene.push()  # running, never started

    restarted = scene.broadcaster()
    assert restarted.resume_unfinished() == [to_retract, to_edit, to_send]
    assert restarted.wait(to_send, timeout=30).state is JobState.DONE
    assert restarted.wait(to_edit).sent == 5
    assert restarted.wait(to_retract).state is JobState.RETRACTED


def test_only_a_finished_broadcast_is_edited_and_one_job_at_a_time(scene: Scene) -> None:
    scene.users(200)
    broadcaster = scene.broadcaster(rate=50.0)
    done = pushed(scene, broadcaster)
    running = scene.push()
    sending = broadcaster.launch_push(running)
    scene.wait_until_sent(201)

    with pytest.raises(BroadcastBusy) as busy:
        broadcaster.launch_edit(done, FIX)
    assert busy.value.active.uuid == running
    assert helpers.status(scene.factory, done) == PushStatus.DONE, "a refused edit stores nothing"
    assert stored(scene, done).edited_text is None

    assert broadcaster.cancel(running)
    assert sending.wait(timeout=10).state is JobState.CANCELLED
    with pytest.raises(InvalidPushState):
        broadcaster.launch_edit(running, FIX)  # cancelled part-way
    assert helpers.status(scene.factory, running) == PushStatus.CANCELLED
    never_sent = scene.push()  # `running` in the ledger, no copy out yet
    with pytest.raises(InvalidPushState):
        broadcaster.launch_edit(never_sent, FIX)
    assert helpers.status(scene.factory, never_sent) == PushStatus.RUNNING


# --- the service: what /edit may do, and where its status goes ---------------------------------


def test_the_service_says_which_broadcasts_can_be_edited(scene: Scene) -> None:
    scene.users(3)
    broadcaster = scene.broadcaster()
    service = BroadcastService(scene.factory, broadcaster)
    done = pushed(scene, broadcaster)
    never_sent = scene.push()
    cancelled = scene.push()
    retracted = pushed(scene, broadcaster)
    with scene.factory.begin() as session:
        assert queries.change_push_status(session, cancelled, PushStatus.CANCELLED)
        assert queries.change_push_status(session, retracted, PushStatus.RETRACTING)
        assert queries.change_push_status(session, retracted, PushStatus.RETRACTED)

    verdicts = {
        push_uuid: service.check_edit(push_uuid).verdict
        for push_uuid in (done, never_sent, cancelled, retracted)
    }

    assert verdicts == {
        done: EditVerdict.EDIT,
        never_sent: EditVerdict.NOT_DONE,
        cancelled: EditVerdict.CANCELLED,
        retracted: EditVerdict.ALREADY_RETRACTED,
    }
    assert service.check_edit(done).copies == 3
    assert [row.push.uuid for row in service.editable(10)] == [done]
    with pytest.raises(UnknownBroadcast):
        service.check_edit(uuid4())
    with pytest.raises(CannotEdit) as refused:
        service.edit(cancelled, "Fixed")
    assert refused.value.check.verdict is EditVerdict.CANCELLED


def test_nothing_delivered_or_nothing_to_correct_is_refused(scene: Scene) -> None:
    broadcaster = scene.broadcaster()
    service = BroadcastService(scene.factory, broadcaster)
    nobody = pushed(scene, broadcaster)  # an empty audience
    scene.users(2)
    with scene.factory.begin() as session:
        sticker = queries.create_push(
            session,
            queries.PushDraft(None, "sticker", scene.admin, scene.source_message_id, scene.admin),
        ).uuid
        assert queries.change_push_status(session, sticker, PushStatus.DONE)

    assert service.check_edit(nobody).verdict is EditVerdict.NOTHING_DELIVERED
    assert service.check_edit(sticker).verdict is EditVerdict.NO_TEXT


@pytest.mark.parametrize(
    ("content_type", "text", "problem"),
    [
        ("text", "   ", "the corrected text is empty"),
        ("text", "x" * 4097, "the corrected text is 4097 characters long; Telegram allows 4096"),
        (
            "photo",
            "é" * 1025,
            "the corrected caption is 1025 characters long; Telegram allows 1024",
        ),
        # Telegram counts UTF-16 code units: an emoji outside the BMP is two.
        ("text", "🎉" * 2049, "the corrected text is 4098 characters long; Telegram allows 4096"),
    ],
)
def test_a_text_telegram_would_refuse_is_refused_in_one_line(
    content_type: str, text: str, problem: str
) -> None:
    assert edit_text_problem(content_type, text) == problem
    assert edit_text_problem(content_type, "Fine") is None


def test_an_edit_through_the_service_shows_its_status_where_asked(scene: Scene) -> None:
    users = scene.users(5)
    service = BroadcastService(scene.factory, scene.broadcaster())
    report = service.push(draft_of(scene, status_message_id=70)).wait(timeout=30)
    service.report_posted(report.uuid, 71)
    bold = MessageEntity(MessageEntity.BOLD, 0, 5)

    with pytest.raises(InvalidEditText, match="empty"):
        service.edit(report.uuid, "", status_message=(scene.admin, 80))
    assert service.check_edit(report.uuid).push.status_message_id == 70, "refused: unchanged"
    edited = service.edit(report.uuid, "Fixed text", [bold], (scene.admin, 80)).wait(timeout=30)
    service.report_posted(report.uuid, 81)

    assert edited.sent == 5
    assert all(copy_of(scene, u)["entities"] == [bold.to_dict()] for u in users)
    push = service.get(report.uuid)
    assert push is not None and push.edited_text == "Fixed text"
    assert (push.report_chat_id, push.status_message_id, push.report_message_id) == (
        scene.admin,
        80,
        81,
    )
    assert service.find_by_message(scene.admin, 81) == push
    assert service.undo(report.uuid).wait(timeout=30).sent == 5
    assert all(not scene.tg.inbox(u) for u in users)


def draft_of(scene: Scene, status_message_id: int) -> queries.PushDraft:
    return queries.PushDraft(
        text="Big news, everyone!",
        content_type="text",
        source_chat_id=scene.admin,
        source_message_id=scene.source_message_id,
        admin_id=scene.admin,
        status_message_id=status_message_id,
    )


# --- across processes ------------------------------------------------------------------------


def test_a_bot_process_resumes_an_edit_and_pushbot_push_waits_its_turn(
    standin_factory: Callable[..., StandIn],
    bot_process: BotProcess,
    db_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """An edit `editing` in the ledger, as a killed bot leaves it: the next bot process
    carries it on, and a `pushbot push` meanwhile is refused, naming the edit."""
    tg = standin_factory(StandInConfig(limits_enabled=False, latency=(0.01, 0.03)))
    admin = tg.add_user(helpers.ADMIN_ID)
    source = post_as_admin(tg, admin, "Once, with a typo.")
    users = tg.add_users(300)
    helpers.subscribe(session_factory, users)
    push_uuid = helpers.create_push(session_factory, admin, source)
    with session_factory.begin() as session:
        queries.set_push_message_ids(session, push_uuid, report_chat_id=admin)
    settings = Settings(bot_token=tg.token, telegram_base_url=tg.base_url, broadcast_rate=1000.0)
    sender = Broadcaster(settings, session_factory, pacer=Pacer(1000.0))
    with sender:
        assert sender.launch_push(push_uuid).wait(timeout=60).sent == 300
    with session_factory.begin() as session:
        assert queries.begin_edit(session, push_uuid, FIX)
    env = {
        "BOT_TOKEN": tg.token,
        "TELEGRAM_BASE_URL": tg.base_url,
        "ADMIN_IDS": str(admin),
        "DATABASE_URL": db_url,
        "LOG_LEVEL": "INFO",
    }
    bot_process.env.update(env)

    bot_process.start()  # at the default 29.8 edits/s: about ten seconds
    tg.wait_for(lambda: sum(successful_edits_of(tg, admin).values()) >= 30, timeout=60)
    refused = subprocess.run(
        [sys.executable, "-m", "pushbot", "push", "Me too, right now"],
        env=base_env(**{**env, "LOG_LEVEL": "WARNING"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"pushbot: broadcast {push_uuid} is still being edited; one at a time."
    ]
    assert sum(successful_edits_of(tg, admin).values()) < 300, "refused while editing"
    report = tg.wait_for_message(
        admin, lambda m: "Broadcast edited" in m.get("text", ""), timeout=90
    )
    assert "Edited 300 · Unchanged 0 · Could not edit 0" in report["text"]
    assert successful_edits_of(tg, admin) == Counter(users)
    assert helpers.status(session_factory, push_uuid) == PushStatus.DONE


def successful_edits_of(tg: StandIn, admin: int) -> Counter[int]:
    return Counter(
        int(c.params["chat_id"])
        for c in tg.calls("editMessageText")
        if c.status == 200 and int(c.params["chat_id"]) != admin
    )
