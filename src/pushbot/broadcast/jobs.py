"""A job and its life: one run of a push, a retraction or an edit, and the registry of this
process's jobs.

A job's life is one value, its `Stage`, replaced as a whole under the job's lock:

    ACTIVE ──(asked to stop)──▶ STOPPING ──(the runner is done)──▶ ENDED ──▶ REPORTED
       └─────────────(the runner is done, or found nothing to do)────▲

* ACTIVE: queued, waiting for the lease, or sending.
* STOPPING: asked to end as `stage.state` (paused, cancelled, superseded by an /undo,
  interrupted by a shutdown or a lost lease, changed by another process, stopped by an
  error); its in-flight sends still land in the ledger. Only a pause may still become a
  cancel, and an /undo supersedes any stop; every other decision stands.
* ENDED: how it ended is decided; the runner is writing the report.
* REPORTED: the report is out; `wait()` returns it.

A decision that must survive a restart is persisted by the `persist` callable a transition
is given, under the job's lock and before the stage changes: a finishing job can never write
`done` over a `paused` a moment after it was stored. `stop_signal` mirrors the stage for the
senders' waits (the gateway, the pacer and the ledger writer wait on a `threading.Event`):
it is set exactly when the job leaves ACTIVE, by the stage change itself.

The registry (`JobRegistry`) holds the queue, the job running now and the last few finished,
plus the progress of paused pushes this process never ran. It makes no decisions: those are
pushbot.broadcast.control's; the runner (pushbot.broadcast.runner) takes the jobs it runs
from here.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from uuid import UUID

from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.progress import JobKind, JobReport, JobState, JobTally, Progress
from pushbot.db.models import PushStatus

__all__ = ["FINISHED_JOBS_KEPT", "Job", "JobHandle", "JobRegistry", "Persist", "Phase", "Stage"]

FINISHED_JOBS_KEPT = 32

# Stores a decision (a push status) in the ledger; raises if it could not.
Persist = Callable[[], object]


class Phase(Enum):
    ACTIVE = "active"
    STOPPING = "stopping"
    ENDED = "ended"
    REPORTED = "reported"


@dataclass(frozen=True, slots=True)
class Stage:
    phase: Phase = Phase.ACTIVE
    # What Progress and the report say: running while active, then the stop asked for,
    # then how the job ended.
    state: JobState = JobState.RUNNING
    # Why the job stopped by itself (a fatal error, a failure); kept by later changes.
    error: str | None = None
    # The stop asked for, if any. It stands once the job has ended, even if the job broke
    # while stopping (then `state` is FAILED).
    stop: JobState | None = None


class Job:
    """One run of a push, a retraction or an edit, from launch to its report.

    `expects`: the push's status when the job runs; any other means that another process
    handled the push meanwhile. `paid`: whether its requests spend the paid budget.
    """

    def __init__(
        self,
        push_uuid: UUID,
        kind: JobKind,
        *,
        expects: PushStatus | None = None,
        paid: bool = False,
    ) -> None:
        self.uuid = push_uuid
        self.kind = kind
        if expects is None:
            expects = _STATUS_WHILE_RUNNING[kind]
        self.expects = expects
        self.paid = paid
        self.tally = JobTally(push_uuid, kind)
        self.stop_signal = threading.Event()
        self._changes = threading.Condition(threading.Lock())
        self._stage = Stage()
        self._report: JobReport | None = None

    def __repr__(self) -> str:
        return f"Job({self.kind}, {self.uuid}, {self._stage.phase.value})"

    # --- reading (no lock: the stage is replaced whole) --------------------------------------

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def decided(self) -> bool:
        """How the job ends is fixed: nothing can stop it any more."""
        return self._stage.phase in (Phase.ENDED, Phase.REPORTED)

    @property
    def finished(self) -> bool:
        return self._stage.phase is Phase.REPORTED

    def progress(self, gateway: TelegramGateway) -> Progress:
        stage = self._stage
        return self.tally.progress(
            stage.state,
            stage.error,
            flood_wait=gateway.flood_wait(paid=self.paid),
            unreachable_since=gateway.down_since(),
        )

    def wait(self, timeout: float | None = None) -> JobReport:
        """Block until the report is out; TimeoutError if it was not in time."""
        with self._changes:
            if not self._changes.wait_for(lambda: self._report is not None, timeout):
                raise TimeoutError(f"{self.kind} job of push {self.uuid} still running")
            assert self._report is not None
            return self._report

    def wait_until_finished(self, timeout: float | None) -> bool:
        with self._changes:
            return self._changes.wait_for(lambda: self._report is not None, timeout)

    # --- stopping ----------------------------------------------------------------------------

    def ask_to_stop(self, state: JobState, persist: Persist | None = None) -> bool:
        """Ask the job to end as `state` (persisting first). False if it is already
        stopping for another reason that stands, or its end is decided."""
        with self._changes:
            stage = self._stage
            may_change = stage.phase is Phase.ACTIVE or (
                stage.phase is Phase.STOPPING
                and stage.state is JobState.PAUSED
                and state is JobState.CANCELLED
            )
            if not may_change:
                return False
            if persist is not None:
                persist()
            self._stop_as(state)
            return True

    def supersede(self, persist: Persist) -> None:
        """/undo of the push this job sends (or edits): it stops as SUPERSEDED whatever stop
        was asked before (unless its end is decided), and `persist` (the push becomes
        `retracting`) runs under the same lock, so that the job's finish cannot store `done`
        after it."""
        with self._changes:
            if not self.decided:
                self._stop_as(JobState.SUPERSEDED)
            persist()

    def stop_on_error(self, state: JobState, error: str, persist: Persist) -> bool:
        """No recipient can succeed: end as `state` with `error` (persisting first), unless
        the job was stopped already or its end is decided."""
        with self._changes:
            if self._stage.phase is not Phase.ACTIVE:
                return False
            persist()
            self._stop_as(state, error)
            return True

    # --- ending (the runner) -----------------------------------------------------------------

    def end_handled_elsewhere(self) -> bool:
        """End without doing anything, because another process ran or changed the push;
        False if this process stopped the job itself (that status is its own doing)."""
        with self._changes:
            if self._stage.phase is not Phase.ACTIVE:
                return False
            self._enter(Stage(Phase.ENDED, JobState.HANDLED_ELSEWHERE))
            return True

    def conclude(
        self, state: JobState, error: str | None = None, persist: Persist | None = None
    ) -> None:
        """The runner is done: the job ends as the stop asked for it, if one was (that was
        persisted when it was asked); otherwise as `state`, after `persist`."""
        with self._changes:
            stage = self._stage
            if stage.phase is Phase.STOPPING:
                self._enter(dataclasses.replace(stage, phase=Phase.ENDED))
                return
            if stage.phase is not Phase.ACTIVE:
                return
            if persist is not None:
                persist()
            self._enter(Stage(Phase.ENDED, state, error))

    def fail(self, error: str) -> None:
        """The job itself broke: it ends as FAILED, whatever was decided before."""
        with self._changes:
            self._enter(
                dataclasses.replace(
                    self._stage, phase=Phase.ENDED, state=JobState.FAILED, error=error
                )
            )

    def make_report(self) -> JobReport:
        stage = self._stage
        return self.tally.report(stage.state, stage.error)

    def publish(self, report: JobReport) -> None:
        """The report is out: the job is finished, `wait()` returns `report`."""
        with self._changes:
            self._report = report
            self._enter(dataclasses.replace(self._stage, phase=Phase.REPORTED))
            self._changes.notify_all()

    def _stop_as(self, state: JobState, error: str | None = None) -> None:
        stage = self._stage
        self._enter(
            Stage(
                Phase.STOPPING,
                state,
                error if error is not None else stage.error,
                stop=state,
            )
        )

    def _enter(self, stage: Stage) -> None:
        # Called with the lock held.
        if self._stage.phase is Phase.ACTIVE:
            self.tally.stop_clock()
            self.stop_signal.set()
        self._stage = stage


# The push's status while a job of each kind runs.
_STATUS_WHILE_RUNNING = {
    JobKind.PUSH: PushStatus.RUNNING,
    JobKind.RETRACT: PushStatus.RETRACTING,
    JobKind.EDIT: PushStatus.EDITING,
}


class JobHandle:
    """What launch_* return: a handle on that one job."""

    def __init__(self, job: Job, gateway: TelegramGateway) -> None:
        self._job = job
        self._gateway = gateway

    @property
    def uuid(self) -> UUID:
        return self._job.uuid

    @property
    def kind(self) -> JobKind:
        return self._job.kind

    def progress(self) -> Progress:
        return self._job.progress(self._gateway)

    def done(self) -> bool:
        return self._job.finished

    def wait(self, timeout: float | None = None) -> JobReport:
        return self._job.wait(timeout)

    def __repr__(self) -> str:
        return f"JobHandle({self.kind}, {self.uuid})"


class JobRegistry:
    """This process's jobs: the queue, the one running (`current`), the last
    FINISHED_JOBS_KEPT finished ones, and snapshots of paused pushes it never ran.

    Thread-safe; its lock is never held for I/O or while calling out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._recent: OrderedDict[UUID, Job] = OrderedDict()
        self._snapshots: dict[UUID, Progress] = {}
        self._opened = False
        self._closing = False

    # --- the engine's life -------------------------------------------------------------------

    def open(self) -> bool:
        """Start taking jobs; False if open already. RuntimeError once closed."""
        with self._lock:
            if self._opened:
                return False
            if self._closing:
                raise RuntimeError("a Broadcaster cannot be restarted after shutdown")
            self._opened = True
            return True

    def close(self) -> list[Job] | None:
        """Take no more jobs; the runner ends once the queue is empty. The unfinished jobs
        (queued ones first), or None if it was not open (or closing already)."""
        with self._lock:
            was_open = self._opened and not self._closing
            self._closing = True
            if not was_open:
                return None
            self._wakeup.notify_all()
            return self._unfinished_locked()

    def require_open(self) -> None:
        if not self._opened or self._closing:
            raise RuntimeError("the Broadcaster is not running (call start(), not after shutdown)")

    # --- queueing ----------------------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        with self._lock:
            self._append_locked(job)

    def enqueue_if_idle(self, job: Job) -> Job | None:
        """Queue the job only if no other is active or queued; else that other one."""
        with self._lock:
            self._refuse_if_closing_locked()
            busy = self._active_locked()
            if busy is not None:
                return busy
            self._append_locked(job)
            return None

    def next_job(self) -> Job | None:
        """For the runner: block until a job is queued and make it the current one; None once
        closed with nothing left."""
        with self._lock:
            while not self._queue and not self._closing:
                self._wakeup.wait()
            if not self._queue:
                return None
            job = self._queue.popleft()
            self._current = job
            return job

    def finished(self, job: Job) -> None:
        """For the runner: the current job is over; it is kept among the recent ones."""
        with self._lock:
            self._current = None
            self._recent[job.uuid] = job
            self._recent.move_to_end(job.uuid)
            while len(self._recent) > FINISHED_JOBS_KEPT:
                self._recent.popitem(last=False)

    # --- looking up --------------------------------------------------------------------------

    def active(self) -> Job | None:
        """The job running now, or the next one to."""
        with self._lock:
            return self._active_locked()

    def idle(self) -> bool:
        with self._lock:
            return self._current is None and not self._queue

    def unfinished(self) -> list[Job]:
        """Queued jobs first, then the current one."""
        with self._lock:
            return self._unfinished_locked()

    def find(self, push_uuid: UUID, kind: JobKind) -> Job | None:
        """The unfinished job of this push and kind, running or queued."""
        with self._lock:
            for job in (self._current, *self._queue):
                if job is not None and job.uuid == push_uuid and job.kind is kind:
                    return job
        return None

    def latest(self, push_uuid: UUID) -> Job | None:
        """The latest job of this push: queued, running or recently finished."""
        with self._lock:
            return self._latest_locked(push_uuid)

    def latest_or_snapshot(self, push_uuid: UUID) -> Job | Progress | None:
        """The latest job of this push or else what is known of it paused."""
        with self._lock:
            return self._latest_locked(push_uuid) or self._snapshots.get(push_uuid)

    # --- paused pushes this process never ran ------------------------------------------------

    def remember_paused(self, progress: Progress) -> None:
        with self._lock:
            self._snapshots[progress.uuid] = progress

    def forget_paused(self, push_uuid: UUID) -> None:
        with self._lock:
            self._snapshots.pop(push_uuid, None)

    # --- with the lock held ------------------------------------------------------------------

    def _refuse_if_closing_locked(self) -> None:
        if self._closing:
            raise RuntimeError("the Broadcaster is shutting down")

    def _append_locked(self, job: Job) -> None:
        self._refuse_if_closing_locked()
        self._queue.append(job)
        self._snapshots.pop(job.uuid, None)
        self._wakeup.notify_all()

    def _active_locked(self) -> Job | None:
        return self._current or (self._queue[0] if self._queue else None)

    def _unfinished_locked(self) -> list[Job]:
        return [*self._queue, *([self._current] if self._current else [])]

    def _latest_locked(self, push_uuid: UUID) -> Job | None:
        for job in reversed(self._queue):
            if job.uuid == push_uuid:
                return job
        if self._current is not None and self._current.uuid == push_uuid:
            return self._current
        return self._recent.get(push_uuid)
