"""Pause, resume, cancel, shutdown and crashes: what the ledger remembers across restarts."""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

import pytest

from pushbot.broadcast.engine import Broadcaster, EngineOptions, JobHandle
from pushbot.broadcast.progress import JobReport, JobState
from pushbot.config import Settings
from pushbot.db import queries
from pushbot.db.models import PushStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene

SLOW = 150.0  # msgs/s: slow enough to act mid-broadcast, fast enough for a test


def sent_by_the_stopped_job(scene: Scene, handle: JobHandle) -> tuple[JobReport, int]:
    """Wait for the job's report: its in-flight sends have ended by then, so every copy
    that went out is in the ledger. The report, and how many copies went out."""
    report = handle.wait(timeout=10)
    sent = scene.sent_so_far()
    assert helpers.counts(scene.factory, handle.uuid).sent == sent
    return report, sent


def shut_down_and_check_nothing_more_was_sent(
    scene: Scene, broadcaster: Broadcaster, sent: int
) -> None:
    """Once shutdown() has returned, the broadcaster's threads are gone: anything it would
    still have sent after the report has reached the stand-in by now."""
    broadcaster.shutdown()
    assert scene.sent_so_far() == sent


def uncommitted(scene: Scene, push_uuid: UUID) -> int:
    """Copies that reached Telegram but are not recorded as sent in the ledger."""
    return scene.sent_so_far() - helpers.counts(scene.factory, push_uuid).sent


def test_pause_is_persisted_and_resume_works_after_a_restart(scene: Scene) -> None:
    users = scene.users(200)
    broadcaster = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(40)

    assert broadcaster.pause(push_uuid)
    assert not broadcaster.pause(push_uuid)  # already paused
    report, sent = sent_by_the_stopped_job(scene, handle)
    assert report.state is JobState.PAUSED
    assert 40 <= sent < 200
    assert helpers.status(scene.factory, push_uuid) == PushStatus.PAUSED
    progress = broadcaster.progress(push_uuid)
    assert progress is not None and progress.state is JobState.PAUSED and progress.sent == sent

    shut_down_and_check_nothing_more_was_sent(scene, broadcaster, sent)
    restarted = scene.broadcaster(rate=2000.0)
    assert restarted.resume_unfinished() == []  # paused stays paused
    assert restarted.active() is None  # no job: nothing can be sent
    known = restarted.progress(push_uuid)
    assert known is not None and known.state is JobState.PAUSED
    assert (known.sent, known.left) == (sent, 200 - sent)

    assert restarted.resume(push_uuid)
    assert not restarted.resume(push_uuid)  # running again: nothing to resume
    final = restarted.wait(push_uuid, timeout=30)
    assert final.state is JobState.DONE and final.sent == 200
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.DONE


def test_cancel_is_final(scene: Scene) -> None:
    scene.users(200)
    broadcaster = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(30)
    assert broadcaster.cancel(push_uuid)
    report, sent = sent_by_the_stopped_job(scene, handle)
    assert report.state is JobState.CANCELLED
    assert helpers.status(scene.factory, push_uuid) == PushStatus.CANCELLED
    assert helpers.counts(scene.factory, push_uuid).pending == 200 - sent
    assert not broadcaster.resume(push_uuid)
    assert not broadcaster.pause(push_uuid)
    assert not broadcaster.cancel(push_uuid)

    shut_down_and_check_nothing_more_was_sent(scene, broadcaster, sent)
    restarted = scene.broadcaster()
    assert restarted.resume_unfinished() == []
    assert restarted.active() is None  # no job: nothing can be sent
    shut_down_and_check_nothing_more_was_sent(scene, restarted, sent)


def test_a_paused_push_can_be_cancelled(scene: Scene) -> None:
    scene.users(100)
    broadcaster = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(20)
    assert broadcaster.pause(push_uuid)
    handle.wait(timeout=10)
    assert broadcaster.cancel(push_uuid)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.CANCELLED
    assert not broadcaster.resume(push_uuid)


def test_pause_and_cancel_of_a_push_this_process_is_not_running(scene: Scene) -> None:
    scene.users(5)
    broadcaster = scene.broadcaster()
    push_uuid = scene.push()  # running in the ledger, never launched here
    assert broadcaster.pause(push_uuid)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.PAUSED
    assert broadcaster.resume(push_uuid)
    assert broadcaster.wait(push_uuid, timeout=30).state is JobState.DONE
    assert not broadcaster.pause(push_uuid) and not broadcaster.cancel(push_uuid)


def test_shutdown_leaves_the_push_running_and_the_next_start_finishes_it(scene: Scene) -> None:
    users = scene.users(200)
    broadcaster = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(50)
    broadcaster.shutdown()  # returns once the broadcaster's threads are gone
    assert broadcaster.wait(push_uuid, timeout=1).state is JobState.INTERRUPTED
    sent = scene.sent_so_far()
    assert sent < 200
    assert helpers.status(scene.factory, push_uuid) == PushStatus.RUNNING
    # A graceful stop records every copy it sent: nothing will be sent twice.
    assert helpers.counts(scene.factory, push_uuid).sent == sent

    restarted = scene.broadcaster(rate=2000.0)
    assert restarted.resume_unfinished() == [push_uuid]
    report = restarted.wait(push_uuid, timeout=30)
    assert report.state is JobState.DONE and report.sent == 200
    assert scene.deliveries(users) == dict.fromkeys(users, 1)


def test_a_crash_duplicates_at_most_one_copy_per_worker(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stops taking outcomes mid-broadcast (as if the process died right
    there): sending stalls at the uncommitted bound, and the restart re-sends only those."""
    workers = 6
    users = scene.users(300)
    database_down = threading.Event()
    refused = threading.Event()
    record = queries.record_deliveries

    def record_unless_down(session: Any, push_uuid: Any, outcomes: Any) -> None:
        if database_down.is_set():
            refused.set()
            raise RuntimeError("server closed the connection unexpectedly")
        record(session, push_uuid, outcomes)

    monkeypatch.setattr(queries, "record_deliveries", record_unless_down)
    options = EngineOptions(flush_interval=0.1, close_deadline=0.5, backoff_base=0.01)
    broadcaster = scene.broadcaster(workers=workers, rate=300.0, options=options)
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(60)
    database_down.set()
    # From the first refused write on nothing more is recorded (one writer thread): the
    # senders stall once every slot is held by a copy that went out unrecorded.
    assert refused.wait(timeout=30)
    scene.tg.wait_for(lambda: uncommitted(scene, push_uuid) >= workers, timeout=30)
    with caplog.at_level(logging.ERROR, logger="pushbot.broadcast.ledger"):
        broadcaster.shutdown()
    assert "giving up on" in caplog.text
    assert uncommitted(scene, push_uuid) == workers  # and not one more went out
    database_down.clear()

    restarted = scene.broadcaster(workers=workers)
    assert restarted.resume_unfinished() == [push_uuid]
    report = restarted.wait(push_uuid, timeout=30)
    assert report.state is JobState.DONE and report.sent == 300

    deliveries = scene.deliveries(users)
    assert min(deliveries.values()) == 1  # nobody lost
    duplicates = sum(n - 1 for n in deliveries.values())
    assert 1 <= duplicates <= workers


def test_a_paid_broadcast_keeps_the_derived_number_of_sends_in_flight_and_no_more(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PAID_BROADCAST=true, BROADCAST_RATE=1000 and no BROADCAST_WORKERS: 150 sends in
    flight (rate × 0.15 s), which is also the crash bound: with the database refusing
    outcomes, exactly 150 copies go out unrecorded and not one more."""
    settings = Settings(
        bot_token=scene.tg.token,
        telegram_base_url=scene.tg.base_url,
        paid_broadcast=True,
        broadcast_rate=1000.0,
    )
    workers = settings.effective_broadcast_workers
    assert workers == 150
    users = scene.users(600)
    database_down = threading.Event()
    record = queries.record_deliveries

    def record_unless_down(session: Any, push_uuid: Any, outcomes: Any) -> None:
        if database_down.is_set():
            raise RuntimeError("server closed the connection unexpectedly")
        record(session, push_uuid, outcomes)

    monkeypatch.setattr(queries, "record_deliveries", record_unless_down)
    options = EngineOptions(flush_interval=0.1, close_deadline=0.5, backoff_base=0.01)
    broadcaster = Broadcaster(settings, scene.factory, options=options)
    scene.broadcasters.append(broadcaster)
    broadcaster.start()
    push_uuid = scene.push()
    database_down.set()
    broadcaster.launch_push(push_uuid)
    scene.tg.wait_for(lambda: uncommitted(scene, push_uuid) >= workers, timeout=30)
    broadcaster.shutdown()
    assert uncommitted(scene, push_uuid) == workers
    assert helpers.counts(scene.factory, push_uuid).sent == 0
    assert len(users) > workers


def test_retract_of_a_paused_push_and_pause_of_a_retraction(scene: Scene) -> None:
    scene.users(100)
    broadcaster = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(20)
    broadcaster.pause(push_uuid)
    handle.wait(timeout=10)
    retract = broadcaster.launch_retract(push_uuid)
    assert not broadcaster.pause(push_uuid)  # an undo is not paused halfway
    assert not broadcaster.cancel(push_uuid)
    report = retract.wait(timeout=30)
    assert report.state is JobState.RETRACTED
    assert report.sent == helpers.counts(scene.factory, push_uuid).sent
    assert not broadcaster.resume(push_uuid)
