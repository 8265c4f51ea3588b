"""A job's life as one state, and the registry of jobs: alone, without a database or Telegram."""

from __future__ import annotations

import threading
import uuid

import pytest

from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.jobs import FINISHED_JOBS_KEPT, Job, JobRegistry, Persist, Phase, Stage
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobKind, JobState
from pushbot.db.models import PushStatus

GATEWAY = TelegramGateway(Pacer(1000.0))


class Ledger:
    """Records what the transitions asked to persist; can be made to fail."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.down = False

    def storing(self, what: str) -> Persist:
        def persist() -> None:
            if self.down:
                raise RuntimeError("the database is gone")
            self.stored.append(what)

        return persist


def push_job() -> Job:
    return Job(uuid.uuid4(), JobKind.PUSH)


def test_a_new_job_is_active_and_shows_running() -> None:
    job = push_job()
    assert job.stage == Stage(Phase.ACTIVE, JobState.RUNNING)
    assert not job.stop_signal.is_set() and not job.decided and not job.finished
    assert job.progress(GATEWAY).state is JobState.RUNNING
    assert job.expects is PushStatus.RUNNING
    assert Job(uuid.uuid4(), JobKind.RETRACT).expects is PushStatus.RETRACTING


def test_a_pause_is_persisted_first_and_may_still_become_a_cancel() -> None:
    ledger = Ledger()
    job = push_job()
    assert job.ask_to_stop(JobState.PAUSED, ledger.storing("paused"))
    assert job.stage == Stage(Phase.STOPPING, JobState.PAUSED, stop=JobState.PAUSED)
    assert job.stop_signal.is_set()
    assert job.progress(GATEWAY).state is JobState.PAUSED

    assert not job.ask_to_stop(JobState.PAUSED, ledger.storing("paused again"))
    assert not job.ask_to_stop(JobState.INTERRUPTED)
    assert job.ask_to_stop(JobState.CANCELLED, ledger.storing("cancelled"))
    assert not job.ask_to_stop(JobState.PAUSED, ledger.storing("paused after cancel"))
    assert job.stage.state is JobState.CANCELLED
    assert ledger.stored == ["paused", "cancelled"]


def test_a_shutdown_does_not_override_an_admins_decision_nor_the_other_way_round() -> None:
    paused = push_job()
    assert paused.ask_to_stop(JobState.PAUSED)
    assert not paused.ask_to_stop(JobState.INTERRUPTED)
    assert paused.stage.state is JobState.PAUSED

    interrupted = push_job()
    assert interrupted.ask_to_stop(JobState.INTERRUPTED)
    assert not interrupted.ask_to_stop(JobState.CANCELLED)
    assert interrupted.stage.state is JobState.INTERRUPTED


def test_a_decision_that_could_not_be_stored_changes_nothing() -> None:
    ledger = Ledger()
    ledger.down = True
    job = push_job()
    with pytest.raises(RuntimeError):
        job.ask_to_stop(JobState.PAUSED, ledger.storing("paused"))
    assert job.stage == Stage()
    assert not job.stop_signal.is_set()
    ledger.down = False
    assert job.ask_to_stop(JobState.PAUSED, ledger.storing("paused"))


def test_an_undo_supersedes_any_stop_but_not_a_decided_end() -> None:
    ledger = Ledger()
    job = push_job()
    assert job.ask_to_stop(JobState.INTERRUPTED)
    job.supersede(ledger.storing("retracting"))
    assert job.stage.state is JobState.SUPERSEDED and job.stage.phase is Phase.STOPPING

    done = push_job()
    done.conclude(JobState.DONE)
    done.supersede(ledger.storing("retracting, after done"))
    assert done.stage.state is JobState.DONE  # its end stands; the status is stored anyway
    assert ledger.stored == ["retracting", "retracting, after done"]


def test_a_fatal_error_stops_only_an_active_job_and_its_reason_stays() -> None:
    ledger = Ledger()
    job = push_job()
    assert job.stop_on_error(JobState.PAUSED, "invalid token", ledger.storing("paused"))
    assert not job.stop_on_error(JobState.PAUSED, "again", ledger.storing("paused again"))
    assert job.ask_to_stop(JobState.CANCELLED)
    assert job.stage.error == "invalid token" and job.stage.state is JobState.CANCELLED

    cancelled = push_job()
    assert cancelled.ask_to_stop(JobState.CANCELLED)
    assert not cancelled.stop_on_error(JobState.PAUSED, "invalid token", ledger.storing("no"))
    assert ledger.stored == ["paused"]


def test_the_runner_concludes_as_the_stop_asked_or_else_stores_its_outcome() -> None:
    ledger = Ledger()
    stopped = push_job()
    stopped.ask_to_stop(JobState.PAUSED)
    stopped.conclude(JobState.DONE, persist=ledger.storing("done"))
    assert stopped.stage == Stage(Phase.ENDED, JobState.PAUSED, stop=JobState.PAUSED)
    assert stopped.decided and not stopped.ask_to_stop(JobState.CANCELLED)

    finished = push_job()
    finished.conclude(JobState.DONE, persist=ledger.storing("done"))
    assert finished.stage == Stage(Phase.ENDED, JobState.DONE)
    assert finished.stop_signal.is_set()
    assert ledger.stored == ["done"]


def test_handled_elsewhere_only_when_nobody_here_stopped_the_job() -> None:
    job = push_job()
    assert job.end_handled_elsewhere()
    assert job.stage == Stage(Phase.ENDED, JobState.HANDLED_ELSEWHERE)

    paused_here = push_job()
    paused_here.ask_to_stop(JobState.PAUSED)
    assert not paused_here.end_handled_elsewhere()
    assert paused_here.stage.state is JobState.PAUSED


def test_a_broken_job_fails_and_remembers_the_stop_it_was_asked_for() -> None:
    job = push_job()
    job.ask_to_stop(JobState.PAUSED)
    job.fail("OperationalError: the database is gone")
    assert job.stage == Stage(
        Phase.ENDED,
        JobState.FAILED,
        "OperationalError: the database is gone",
        stop=JobState.PAUSED,
    )


def test_the_clock_stops_when_the_job_is_asked_to_stop() -> None:
    job = push_job()
    running = job.progress(GATEWAY).elapsed
    assert job.progress(GATEWAY).elapsed > running
    job.ask_to_stop(JobState.PAUSED)
    stopped_at = job.progress(GATEWAY).elapsed
    assert job.progress(GATEWAY).elapsed == stopped_at
    assert job.make_report().elapsed == stopped_at


def test_wait_returns_the_published_report() -> None:
    job = push_job()
    with pytest.raises(TimeoutError):
        job.wait(timeout=0)
    waiting = threading.Event()
    got: list[JobState] = []

    def waiter() -> None:
        waiting.set()
        got.append(job.wait(timeout=30).state)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(10)
    job.conclude(JobState.DONE)
    assert not job.finished
    job.publish(job.make_report())
    thread.join(timeout=10)
    assert got == [JobState.DONE]
    assert job.finished and job.wait_until_finished(0)


# --- the registry ---------------------------------------------------------------------------


def test_one_job_at_a_time_unless_forced() -> None:
    registry = JobRegistry()
    registry.open()
    first, second, third = push_job(), push_job(), push_job()
    assert registry.enqueue_if_idle(first) is None
    assert registry.enqueue_if_idle(second) is first
    registry.enqueue(third)
    assert registry.unfinished() == [first, third]
    assert registry.active() is first
    assert registry.find(third.uuid, JobKind.PUSH) is third
    assert registry.find(third.uuid, JobKind.RETRACT) is None


def test_the_runner_takes_jobs_in_order_and_ends_once_closed() -> None:
    registry = JobRegistry()
    assert registry.open() and not registry.open()
    taken: list[Job | None] = []

    def runner() -> None:
        while True:
            job = registry.next_job()
            taken.append(job)
            if job is None:
                return
            registry.finished(job)

    thread = threading.Thread(target=runner)
    thread.start()
    jobs = [push_job(), push_job()]
    for job in jobs:
        registry.enqueue(job)
    assert registry.close() is not None
    thread.join(timeout=10)
    assert taken == [*jobs, None]
    assert registry.idle()
    assert registry.latest(jobs[0].uuid) is jobs[0]
    with pytest.raises(RuntimeError):
        registry.enqueue(push_job())
    assert not registry.open()  # a Broadcaster's start() after its shutdown does nothing
    assert registry.close() is None  # nor does a second shutdown

    never_opened = JobRegistry()
    assert never_opened.close() is None
    with pytest.raises(RuntimeError):
        never_opened.open()


def test_the_latest_job_of_a_push_and_the_last_finished_ones_are_kept() -> None:
    registry = JobRegistry()
    registry.open()
    jobs = [push_job() for _ in range(FINISHED_JOBS_KEPT + 1)]
    for job in jobs:
        registry.enqueue(job)
        assert registry.next_job() is job
        registry.finished(job)
    assert registry.latest(jobs[0].uuid) is None  # the oldest was let go
    assert registry.latest(jobs[-1].uuid) is jobs[-1]

    again = Job(jobs[-1].uuid, JobKind.RETRACT)
    registry.enqueue(again)
    assert registry.latest(jobs[-1].uuid) is again  # queued beats finished


def test_a_paused_snapshot_gives_way_to_a_job_of_that_push() -> None:
    registry = JobRegistry()
    registry.open()
    job = push_job()
    snapshot = job.tally.progress(JobState.PAUSED)
    registry.remember_paused(snapshot)
    assert registry.latest_or_snapshot(job.uuid) is snapshot
    registry.enqueue(job)
    assert registry.latest_or_snapshot(job.uuid) is job
    assert registry.next_job() is job
    registry.finished(job)
    assert registry.latest_or_snapshot(job.uuid) is job
