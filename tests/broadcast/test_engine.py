"""Broadcasting end to end: real HTTP to the stand-in, the ledger in SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from pushbot.broadcast.engine import (
    BroadcastBusy,
    EngineOptions,
    InvalidPushState,
    UnknownPush,
)
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.health import TelegramHealth
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobKind, JobReport, JobState
from pushbot.db.models import PushStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import FAST, UNPACED, Scene, budget_floods


def test_exactly_one_copy_per_subscribed_chat_and_unreachable_chats_are_purged(
    scene: Scene,
) -> None:
    tg, factory = scene.tg, scene.factory
    # add_users: the first 3 blocked the bot, the next 2 deleted their accounts.
    users = scene.users(40, blocked=3, deactivated=2)
    blocked, deactivated, active = users[:3], users[3:5], users[5:]
    groups = [tg.add_group("Readers"), tg.add_group("Fans", supergroup=True)]
    kicked_group = tg.add_group("Gone", bot_status="kicked")
    helpers.subscribe(factory, [*groups, kicked_group])
    unknown = 424_242  # in our audience, unknown to Telegram
    helpers.subscribe(factory, [unknown])
    unsubscribed = scene.users(2)
    for chat_id in unsubscribed:
        helpers.unsubscribe(factory, chat_id)
    reports: list[JobReport] = []
    broadcaster = scene.broadcaster(on_finished=reports.append)

    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    report = handle.wait(timeout=60)

    assert report.state is JobState.DONE and report.kind is JobKind.PUSH
    assert scene.deliveries(active + groups) == {chat_id: 1 for chat_id in active + groups}
    assert scene.deliveries(unsubscribed + blocked + deactivated + [kicked_group]) == dict.fromkeys(
        unsubscribed + blocked + deactivated + [kicked_group], 0
    )
    expected_failures = {"blocked": 3, "deactivated": 2, "kicked": 1, "chat not found": 1}
    assert report.sent == len(active) + len(groups)
    assert report.failed_by_reason == expected_failures
    assert report.purged == 7 and report.total == len(active) + len(groups) + 7
    assert reports == [report]  # on_finished got the same report
    assert helpers.purged(factory) == {
        **dict.fromkeys(blocked, "blocked"),
        **dict.fromkeys(deactivated, "deactivated"),
        kicked_group: "kicked",
        unknown: "chat not found",
    }
    counts = helpers.counts(factory, push_uuid)
    assert (counts.total, counts.pending, counts.sent) == (report.total, 0, report.sent)
    assert counts.failed_by_reason == expected_failures
    assert helpers.status(factory, push_uuid) == PushStatus.DONE
    # The copy is the admin's message, and its id is in the ledger for /undo.
    rows = helpers.notifications(factory, push_uuid)
    first = active[0]
    copy = tg.message(first, rows[first].telegram_message_id)
    assert copy is not None and copy["text"] == "Big news, everyone!"
    progress = broadcaster.progress(push_uuid)
    assert progress is not None and progress.state is JobState.DONE and progress.left == 0
    assert broadcaster.active() is None


def test_the_next_push_skips_purged_chats(scene: Scene) -> None:
    users = scene.users(6, blocked=2)
    broadcaster = scene.broadcaster()
    broadcaster.launch_push(scene.push()).wait(timeout=30)
    second = scene.push()
    report = broadcaster.launch_push(second).wait(timeout=30)
    assert report.total == 4 and report.sent == 4 and report.failed == 0
    assert scene.deliveries(users[2:]) == dict.fromkeys(users[2:], 2)


def test_progress_while_running(scene: Scene) -> None:
    scene.users(120)
    broadcaster = scene.broadcaster(rate=60.0)
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(60)
    progress = handle.progress()
    assert progress.state is JobState.RUNNING and progress.kind is JobKind.PUSH
    assert progress.total == 120
    assert 55 <= progress.done <= 80 and progress.left == 120 - progress.done
    assert progress.rate == pytest.approx(60, rel=0.35)
    assert progress.eta_seconds is not None and 0.3 < progress.eta_seconds < 3
    active = broadcaster.active()
    assert active is not None and active.uuid == push_uuid
    handle.wait(timeout=30)


def test_one_job_at_a_time(scene: Scene) -> None:
    scene.users(100)
    broadcaster = scene.broadcaster(rate=50.0)
    first = scene.push()
    handle = broadcaster.launch_push(first)
    second = scene.push()
    with pytest.raises(BroadcastBusy) as busy:
        broadcaster.launch_push(second)
    assert busy.value.active.uuid == first
    with pytest.raises(BroadcastBusy):
        broadcaster.launch_retract(second)
    # Launching the same push again is harmless: it is the same job.
    assert broadcaster.launch_push(first).uuid == first
    assert broadcaster.cancel(first)
    assert handle.wait(timeout=10).state is JobState.CANCELLED
    assert broadcaster.launch_push(second).wait(timeout=30).state is JobState.DONE


def test_launch_checks_the_push(scene: Scene) -> None:
    broadcaster = scene.broadcaster()
    with pytest.raises(UnknownPush):
        broadcaster.launch_push(uuid.uuid4())
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid).wait(timeout=10)
    with pytest.raises(InvalidPushState):
        broadcaster.launch_push(push_uuid)  # done: nothing left to launch


def test_a_429_storm_loses_nobody_and_purges_nobody(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    tg = scene.tg
    users = scene.users(150)
    # Telegram's limits, and a pacer far too fast for them: the gate must do the work.
    tg.set_limits(enabled=True, global_rate=400.0, global_burst=50, per_chat_rate=100.0)
    broadcaster = scene.broadcaster(workers=10, rate=2000.0)
    push_uuid = scene.push()
    with caplog.at_level(logging.INFO, logger="pushbot.broadcast.gateway"):
        handle = broadcaster.launch_push(push_uuid)
        scene.wait_until_sent(50)
        tg.set_limits(global_rate=100.0, global_burst=10)  # tightened mid-broadcast
        report = handle.wait(timeout=90)

    assert tg.count("copyMessage", 429) > 0
    assert budget_floods(caplog) > 0  # the whole budget waited, not only single chats
    assert report.state is JobState.DONE
    assert report.sent == 150 and report.failed == 0 and report.purged == 0
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
    assert helpers.purged(scene.factory) == {}


def test_server_errors_and_timeouts_lose_nobody_and_purge_nobody(scene: Scene) -> None:
    tg = scene.tg
    users = scene.users(150)
    options = EngineOptions(
        max_attempts=12,
        backoff_base=0.01,
        backoff_cap=0.05,
        request_timeout=0.5,
        flush_interval=0.2,
    )
    broadcaster = scene.broadcaster(workers=10, options=options)
    tg.inject_faults(kind="500", rate=0.15, methods={"copyMessage"})
    first = broadcaster.launch_push(scene.push()).wait(timeout=60)
    tg.inject_faults(kind="502", rate=0.15, methods={"copyMessage"})
    second = broadcaster.launch_push(scene.push()).wait(timeout=60)
    # Held past the client's read timeout, then dropped: ptb raises TimedOut.
    tg.inject_faults(kind="timeout", rate=0.1, hold=1.0, methods={"copyMessage"})
    third = broadcaster.launch_push(scene.push()).wait(timeout=90)
    tg.inject_faults(rate=0.0)

    assert tg.count("copyMessage", 500) > 0 and tg.count("copyMessage", 502) > 0
    assert tg.count("copyMessage", 0) > 0  # the timeouts: no response at all
    for report in (first, second, third):
        assert report.state is JobState.DONE
        assert (report.sent, report.failed, report.purged) == (150, 0, 0)
    assert scene.deliveries(users) == dict.fromkeys(users, 3)
    assert helpers.purged(scene.factory) == {}


def test_a_chat_that_keeps_failing_while_others_succeed_is_failed_but_not_purged(
    scene: Scene,
) -> None:
    users = scene.users(20)
    broken = users[0]
    options = EngineOptions(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)
    broadcaster = scene.broadcaster(options=options)
    scene.tg.inject_faults(kind="500", rate=1.0, methods={"copyMessage"}, chat_ids={broken})
    push_uuid = scene.push()
    report = broadcaster.launch_push(push_uuid).wait(timeout=30)
    scene.tg.inject_faults(rate=0.0)

    assert report.state is JobState.DONE
    assert report.failed_by_reason == {"network error": 1} and report.purged == 0
    assert report.sent == 19
    # Three charged attempts; a first failure before Telegram had answered anyone is free.
    assert scene.tg.count("copyMessage", 500) in (3, 4)
    assert helpers.purged(scene.factory) == {}
    # Failed, not forgotten: a new push reaches them.
    assert broadcaster.launch_push(scene.push()).wait(timeout=30).sent == 20
    assert scene.deliveries([broken]) == {broken: 1}


def test_telegram_down_for_everyone_holds_the_push_and_charges_nobody(scene: Scene) -> None:
    """Every method answers 500: that is Telegram's state, not the chats'."""
    users = scene.users(5)
    options = EngineOptions(max_attempts=3, backoff_base=0.01, backoff_cap=0.02)
    health = TelegramHealth(backoff_base=0.1, backoff_cap=0.3)
    broadcaster = scene.broadcaster(
        options=options, gateway=TelegramGateway(Pacer(UNPACED), health=health)
    )
    scene.tg.start_outage(3600, kind="500")
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.tg.wait_for(lambda: handle.progress().unreachable_since is not None, timeout=30)
    # Held for more getMe probes than max_attempts would allow tries: nobody failed.
    scene.tg.wait_for(lambda: scene.tg.count("getMe", 500) >= 3, timeout=30)
    progress = handle.progress()
    assert progress.failed == 0 and progress.unreachable_since is not None
    assert not handle.done()
    scene.tg.end_outage()
    report = handle.wait(timeout=60)

    assert report.state is JobState.DONE
    assert report.sent == 5 and report.failed == 0
    assert helpers.purged(scene.factory) == {}
    assert scene.deliveries(users) == dict.fromkeys(users, 1)


def test_a_deleted_source_message_pauses_the_push_instead_of_failing_everyone(
    scene: Scene,
) -> None:
    scene.users(30)
    scene.tg.user_deletes_message(scene.admin, scene.source_message_id)
    broadcaster = scene.broadcaster(workers=4)
    push_uuid = scene.push()
    report = broadcaster.launch_push(push_uuid).wait(timeout=30)
    assert report.state is JobState.PAUSED and report.error == "source message not found"
    assert report.failed == 0
    assert helpers.status(scene.factory, push_uuid) == PushStatus.PAUSED
    assert helpers.counts(scene.factory, push_uuid).pending == 30


def test_a_rejected_token_pauses_the_push(scene: Scene) -> None:
    scene.users(10)
    broadcaster = scene.broadcaster(workers=4, token="123456:not-the-right-token")
    push_uuid = scene.push()
    report = broadcaster.launch_push(push_uuid).wait(timeout=30)
    assert report.state is JobState.PAUSED and report.error == "invalid token"
    assert helpers.counts(scene.factory, push_uuid).pending == 10


@pytest.mark.parametrize("paid", [False, True], ids=["free", "paid"])
def test_paid_broadcast_flag_is_sent_only_when_configured(scene: Scene, paid: bool) -> None:
    scene.users(3)
    broadcaster = scene.broadcaster(paid=paid)
    broadcaster.launch_push(scene.push()).wait(timeout=30)
    flags = {call.params.get("allow_paid_broadcast") for call in scene.tg.calls("copyMessage")}
    assert flags == ({True} if paid else {None})


def test_on_finished_runs_on_an_engine_thread(scene: Scene) -> None:
    scene.users(3)
    seen: list[str] = []
    done = threading.Event()

    def on_finished(report: JobReport) -> None:
        seen.append(threading.current_thread().name)
        done.set()

    broadcaster = scene.broadcaster(on_finished=on_finished)
    broadcaster.launch_push(scene.push())
    assert done.wait(30)
    assert seen and seen[0] != threading.main_thread().name


def test_the_ledger_keeps_up_without_a_commit_per_message(scene: Scene) -> None:
    """At Telegram's pace the writer groups outcomes (a couple of commits a second)."""
    scene.users(60)
    commits: list[int] = []
    from pushbot.db import queries

    original = queries.record_deliveries

    def counting(session: object, push_uuid: object, outcomes: list[object]) -> None:
        commits.append(len(outcomes))
        original(session, push_uuid, outcomes)  # type: ignore[arg-type]

    queries.record_deliveries = counting  # type: ignore[assignment]
    try:
        broadcaster = scene.broadcaster(workers=30, rate=30.0, options=FAST)
        started = time.monotonic()
        report = broadcaster.launch_push(scene.push()).wait(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        queries.record_deliveries = original
    assert report.sent == 60
    assert elapsed == pytest.approx(2.0, abs=0.6)  # paced at 30/s
    assert sum(commits) == 60 and len(commits) <= 10
