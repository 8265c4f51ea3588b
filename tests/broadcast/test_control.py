"""Pause, resume, cancel, shutdown and crashes: what the ledger remembers across restarts."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from pushbot.broadcast.engine import EngineOptions
from pushbot.broadcast.progress import JobState
from pushbot.db import queries
from pushbot.db.models import PushStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene

SLOW = 150.0  # msgs/s: slow enough to act mid-broadcast, fast enough for a test


def sent_settles(scene: Scene, quiet: float = 0.4, timeout: float = 10.0) -> int:
    """Wait until no copy has been sent for `quiet` seconds; the number sent."""
    deadline = time.monotonic() + timeout
    last = scene.sent_so_far()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = scene.sent_so_far()
        if now == last:
            return now
        last = now
    raise AssertionError("copies kept being sent")


def test_pause_is_persisted_and_resume_works_after_a_restart(scene: Scene) -> None:
    users = scene.users(200)
    broadcaster = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(40)

    assert broadcaster.pause(push_uuid)
    assert not broadcaster.pause(push_uuid)  # already paused
    report = handle.wait(timeout=10)
    assert report.state is JobState.PAUSED
    sent = sent_settles(scene)
    assert 40 <= sent < 200
    assert helpers.status(scene.factory, push_uuid) == PushStatus.PAUSED
    progress = broadcaster.progress(push_uuid)
    assert progress is not None and progress.state is JobState.PAUSED and progress.sent == sent

    broadcaster.shutdown()
    restarted = scene.broadcaster(rate=2000.0)
    assert restarted.resume_unfinished() == []  # paused stays paused
    time.sleep(0.3)
    assert scene.sent_so_far() == sent
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
    report = handle.wait(timeout=10)
    assert report.state is JobState.CANCELLED
    sent = sent_settles(scene)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.CANCELLED
    assert helpers.counts(scene.factory, push_uuid).pending == 200 - sent
    assert not broadcaster.resume(push_uuid)
    assert not broadcaster.pause(push_uuid)
    assert not broadcaster.cancel(push_uuid)

    broadcaster.shutdown()
    restarted = scene.broadcaster()
    assert restarted.resume_unfinished() == []
    time.sleep(0.3)
    assert scene.sent_so_far() == sent


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
    broadcaster.shutdown()
    assert broadcaster.wait(push_uuid, timeout=1).state is JobState.INTERRUPTED
    sent = sent_settles(scene)
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
    record = queries.record_deliveries

    def record_unless_down(session: Any, push_uuid: Any, outcomes: Any) -> None:
        if database_down.is_set():
            raise RuntimeError("server closed the connection unexpectedly")
        record(session, push_uuid, outcomes)

    monkeypatch.setattr(queries, "record_deliveries", record_unless_down)
    options = EngineOptions(flush_interval=0.1, close_deadline=0.5, backoff_base=0.01)
    broadcaster = scene.broadcaster(workers=workers, rate=300.0, options=options)
    push_uuid = scene.push()
    broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(60)
    database_down.set()
    sent_settles(scene)  # stalled: every slot is held by an uncommitted copy
    with caplog.at_level(logging.ERROR, logger="pushbot.broadcast.ledger"):
        broadcaster.shutdown()
    assert "giving up on" in caplog.text
    database_down.clear()

    restarted = scene.broadcaster(workers=workers)
    assert restarted.resume_unfinished() == [push_uuid]
    report = restarted.wait(push_uuid, timeout=30)
    assert report.state is JobState.DONE and report.sent == 300

    deliveries = scene.deliveries(users)
    assert min(deliveries.values()) == 1  # nobody lost
    duplicates = sum(n - 1 for n in deliveries.values())
    assert 1 <= duplicates <= workers


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
