"""The Broadcaster: sends a copy of a push to every recipient, or deletes every copy again.

Shape (the design card): a `ThreadPoolExecutor` of `broadcast_workers` threads. ptb 22 has
no synchronous API, so the engine owns one private asyncio loop in its own thread with one
`telegram.Bot` on it; a worker takes a ticket from the token's `TelegramGateway` (budgets,
per-chat limits, floods, outages), then hands the coroutine to that loop and waits for its
result. The Application's own loop never waits on a broadcast.

One job runs at a time, in a runner thread that feeds the pool from the ledger (keyset
pages of pending recipients) and finishes the job. Every push status change that must
survive a restart (paused, cancelled, retracting, done, retracted) is written to the
database before the call that caused it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from telegram import Bot, MessageId
from telegram.error import TelegramError, TimedOut
from telegram.request import HTTPXRequest

from pushbot.broadcast.errors import (
    Action,
    Verdict,
    classify_delete_error,
    classify_send_error,
)
from pushbot.broadcast.gateway import TelegramGateway, Ticket, answered_at_all
from pushbot.broadcast.lease import (
    CHECK_INTERVAL,
    POLL_INTERVAL,
    RECHECK_INTERVAL,
    BroadcastLease,
    LeaseUnavailable,
    LocalLease,
    lease_for,
)
from pushbot.broadcast.ledger import (
    CLOSE_DEADLINE,
    FLUSH_BATCH,
    FLUSH_INTERVAL,
    PAGE_SIZE,
    OutcomeWriter,
    copies_to_delete,
    pending_recipients,
)
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import (
    Baseline,
    JobKind,
    JobReport,
    JobState,
    JobTally,
    Progress,
)
from pushbot.config import Settings
from pushbot.db import queries
from pushbot.db.models import PushStatus, RetractStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "BroadcastBusy",
    "BroadcastError",
    "Broadcaster",
    "EngineOptions",
    "InvalidPushState",
    "JobEvent",
    "JobHandle",
    "JobKind",
    "JobReport",
    "JobState",
    "Progress",
    "UnknownPush",
]

INTERNAL_ERROR_REASON = "internal error"
FINISHED_JOBS_KEPT = 32


@dataclass(frozen=True)
class EngineOptions:
    """Knobs with production defaults; tests shrink the delays."""

    page_size: int = PAGE_SIZE
    flush_batch: int = FLUSH_BATCH
    flush_interval: float = FLUSH_INTERVAL
    # Attempts per recipient for transient errors (timeouts, 5xx) while Telegram answers
    # other requests; 429s and failures during an outage do not count.
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    # HTTP timeouts of the engine's Bot; a worker gives up on a request after 4x this.
    request_timeout: float = 10.0
    # How long shutdown keeps retrying to record outcomes when the database is down.
    close_deadline: float = CLOSE_DEADLINE


class BroadcastError(Exception):
    """Base of the errors the Broadcaster raises to its callers."""


class BroadcastBusy(BroadcastError):
    """Another job is active (one job at a time); `active` is its progress."""

    def __init__(self, active: Progress) -> None:
        super().__init__(f"a {active.kind} job is active for push {active.uuid}")
        self.active = active


class UnknownPush(BroadcastError, LookupError):
    def __init__(self, push_uuid: UUID) -> None:
        super().__init__(f"no push {push_uuid}")
        self.uuid = push_uuid


class InvalidPushState(BroadcastError):
    def __init__(self, push_uuid: UUID, status: str, wanted: str) -> None:
        super().__init__(f"push {push_uuid} is {status}; {wanted}")
        self.uuid = push_uuid
        self.status = status


@dataclass(frozen=True)
class JobEvent:
    """Something worth telling an operator while a job runs (called from engine threads).

    names: "started", "flood_wait" (detail: seconds), "database_error" (detail: message),
    "stopped_by_error" (detail: reason).
    """

    uuid: UUID
    kind: JobKind
    name: str
    detail: float | str | None = None


class _Job:
    """One run of a push or a retraction, from launch to its report."""

    def __init__(self, push_uuid: UUID, kind: JobKind) -> None:
        self.uuid = push_uuid
        self.kind = kind
        self.tally = JobTally(push_uuid, kind)
        self.stop_event = threading.Event()
        # Serialises "how does this job end" between the runner and pause/cancel/retract,
        # so that a persisted status is never overwritten by a racing finish.
        self.status_lock = threading.Lock()
        self.stop_reason: JobState | None = None
        self.finalized = False
        self.finished = threading.Event()
        self.report: JobReport | None = None


class JobHandle:
    """What launch_* return: a handle on that one job."""

    def __init__(self, broadcaster: Broadcaster, job: _Job) -> None:
        self._broadcaster = broadcaster
        self._job = job

    @property
    def uuid(self) -> UUID:
        return self._job.uuid

    @property
    def kind(self) -> JobKind:
        return self._job.kind

    def progress(self) -> Progress:
        return self._broadcaster._progress_of(self._job)

    def done(self) -> bool:
        return self._job.finished.is_set()

    def wait(self, timeout: float | None = None) -> JobReport:
        return self._broadcaster._wait_for(self._job, timeout)

    def __repr__(self) -> str:
        return f"JobHandle({self.kind}, {self.uuid})"


class Broadcaster:
    """Runs pushes and retractions against the Bot API, one job at a time, from the ledger.

    Thread-safe. `progress()` and `active()` only read memory, so they may be called from
    an event loop; the other methods do a little database work and belong in a thread
    (`asyncio.to_thread`).
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        pacer: Pacer | None = None,
        gateway: TelegramGateway | None = None,
        on_finished: Callable[[JobReport], None] | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        options: EngineOptions | None = None,
        lease: BroadcastLease | None = None,
    ) -> None:
        self._settings = settings
        self._factory = session_factory
        if gateway is None:
            gateway = (
                TelegramGateway(pacer)
                if pacer is not None
                else TelegramGateway.for_settings(settings)
            )
        self._gateway = gateway
        self._on_finished = on_finished
        self._on_event = on_event
        self._options = options or EngineOptions()
        self._workers = settings.effective_broadcast_workers
        self._paid: dict[str, Any] = (
            {"allow_paid_broadcast": True} if settings.paid_broadcast else {}
        )

        self._lock = threading.Lock()  # guards the job registry below; never held for I/O
        self._wakeup = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        self._recent: OrderedDict[UUID, _Job] = OrderedDict()
        self._snapshots: dict[UUID, Progress] = {}  # paused pushes this process never ran
        self._control = threading.RLock()  # serialises launch/pause/resume/cancel
        self._started = False
        self._closing = False

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._request: HTTPXRequest | None = None
        self._bot: Bot | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._runner: threading.Thread | None = None

        # One job at a time across processes too (pushbot.broadcast.lease): the runner holds
        # the lease while this process has jobs; another process's jobs wait for it.
        self._owns_lease = lease is None
        self._lease = lease if lease is not None else _lease_of(session_factory)
        # Cleared while a holder cannot tell whether it still holds the lease: no new sends.
        self._lease_confirmed = threading.Event()
        # The status each queued job's push must have when it runs; guarded by _lock.
        self._expected: dict[_Job, PushStatus] = {}

    @property
    def gateway(self) -> TelegramGateway:
        return self._gateway

    @property
    def _paid_copies(self) -> bool:
        return bool(self._paid)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the event loop thread, the Bot, the worker pool and the job runner."""
        with self._lock:
            if self._started:
                return
            if self._closing:
                raise RuntimeError("a Broadcaster cannot be restarted after shutdown")
            self._started = True
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(
            target=_run_loop_forever, args=(loop,), name="pushbot-broadcast-loop", daemon=True
        )
        self._loop_thread.start()
        timeout = self._options.request_timeout
        self._request = HTTPXRequest(
            connection_pool_size=self._settings.effective_broadcast_pool_size,
            read_timeout=timeout,
            write_timeout=timeout,
            connect_timeout=timeout,
            # Workers may outnumber connections: waiting for one is not an error.
            pool_timeout=timeout,
        )
        # Not Bot.initialize(): it calls getMe (a request at every start) and would put the
        # token into the InvalidToken message it raises.
        self._bot = Bot(
            self._settings.bot_token,
            base_url=self._settings.telegram_base_url,
            request=self._request,
        )
        asyncio.run_coroutine_threadsafe(self._request.initialize(), loop).result()
        self._gateway.set_probes(sync_probe=self._telegram_answers)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="pushbot-send"
        )
        self._runner = threading.Thread(
            target=self._run_jobs, name="pushbot-broadcast-jobs", daemon=True
        )
        self._runner.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop: the active job ends as `interrupted` once its in-flight sends are recorded.

        Its push stays running (or retracting) in the ledger, as do queued ones, so the next
        `resume_unfinished()` carries on. With wait=False the winding down happens in the
        background.
        """
        with self._lock:
            if not self._started or self._closing:
                self._closing = True
                return
            self._closing = True
            jobs = [*self._queue, *([self._current] if self._current else [])]
            self._wakeup.notify_all()
        for job in jobs:
            self._request_stop(job, JobState.INTERRUPTED, persist=None)
        if wait:
            self._close_down()
        else:
            threading.Thread(target=self._close_down, name="pushbot-broadcast-close").start()

    def _close_down(self) -> None:
        if self._runner is not None:
            self._runner.join()
        self._lease.release()
        if self._owns_lease:
            self._lease.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        loop = self._loop
        if loop is not None and self._request is not None:
            asyncio.run_coroutine_threadsafe(self._request.shutdown(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join()
            loop.close()

    def __enter__(self) -> Broadcaster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # --- launching ---------------------------------------------------------------------------

    def launch_push(self, push_uuid: UUID) -> JobHandle:
        """Send the push to every recipient still pending. Recipients are enqueued (one bulk
        insert, idempotent) by the job itself, so this returns at once.

        Raises BroadcastBusy if a job is active, here or in another process of the bot (see
        pushbot.broadcast.lease), UnknownPush, InvalidPushState unless the push is `running`
        (what create_push makes).
        """
        with self._control:
            self._require_started()
            same = self._find_job(push_uuid, JobKind.PUSH)
            if same is not None:
                return JobHandle(self, same)
            push = self._load_push(push_uuid)
            if push.status != PushStatus.RUNNING:
                raise InvalidPushState(push_uuid, push.status, "only a running push is launched")
            self._claim_lease(push_uuid, JobKind.PUSH, busy_with_self=False)
            with self._lease_kept_on_success():
                job = self._enqueue(_Job(push_uuid, JobKind.PUSH), expected=PushStatus.RUNNING)
            return JobHandle(self, job)

    def launch_retract(self, push_uuid: UUID) -> JobHandle:
        """Delete every copy recorded as sent. If that push is being sent right now, its
        sending stops first (its in-flight copies are recorded, then deleted too).

        The push is `retracting` in the ledger before this returns, so a crash cannot bring
        the sending back. Raises BroadcastBusy if another push's job is active (another
        process sending this very push stops within seconds of seeing it `retracting`).
        """
        with self._control:
            self._require_started()
            same = self._find_job(push_uuid, JobKind.RETRACT)
            if same is not None:
                return JobHandle(self, same)
            push = self._load_push(push_uuid)
            sending = self._find_job(push_uuid, JobKind.PUSH)
            with self._lock:
                others = [
                    job
                    for job in (*self._queue, *([self._current] if self._current else []))
                    if job is not sending
                ]
            if others:
                raise BroadcastBusy(self._progress_of(others[0]))
            if sending is None:
                self._claim_lease(push_uuid, JobKind.RETRACT, busy_with_self=False)
            expected = PushStatus.RETRACTING
            with self._lease_kept_on_success():
                if sending is not None:
                    # Under the job's status lock: its finish cannot write `done` after this.
                    with sending.status_lock:
                        if not sending.finalized:
                            self._mark_stopping(sending, JobState.SUPERSEDED)
                        self._persist_status(push_uuid, PushStatus.RETRACTING)
                elif push.status != PushStatus.RETRACTED:
                    self._persist_status(push_uuid, PushStatus.RETRACTING)
                else:
                    # A second undo of a retracted push just reports that nothing is left.
                    expected = PushStatus.RETRACTED
                job = self._enqueue(_Job(push_uuid, JobKind.RETRACT), force=True, expected=expected)
            return JobHandle(self, job)

    def resume_unfinished(self) -> list[UUID]:
        """At start-up: carry on every `running` and `retracting` push from the ledger
        (retractions first: an undo is urgent). Paused ones stay paused but their progress
        is known; cancelled ones stay cancelled. Returns the resumed pushes in run order."""
        with self._control:
            self._require_started()
            with self._factory.begin() as session:
                unfinished = queries.unfinished_pushes(session)
            retracting = [p for p in unfinished if p.status == PushStatus.RETRACTING]
            running = [p for p in unfinished if p.status == PushStatus.RUNNING]
            for push in unfinished:
                if push.status == PushStatus.PAUSED:
                    self._remember_paused(push.uuid)
            resumed: list[UUID] = []
            for push, kind in [
                *((p, JobKind.RETRACT) for p in retracting),
                *((p, JobKind.PUSH) for p in running),
            ]:
                if self._find_job(push.uuid, kind) is None:
                    # If another process holds the lease (it may be resuming the same push),
                    # the job waits for it, then carries on only what the ledger still owes.
                    self._enqueue(
                        _Job(push.uuid, kind), force=True, expected=PushStatus(push.status)
                    )
                    resumed.append(push.uuid)
            if resumed:
                logger.info("resuming %d unfinished job(s): %s", len(resumed), resumed)
            return resumed

    # --- steering ----------------------------------------------------------------------------

    def pause(self, push_uuid: UUID) -> bool:
        """Pause a push (persisted: it stays paused across restarts). Retractions cannot be
        paused. False when there is nothing to pause."""
        with self._control:
            job = self._find_job(push_uuid, JobKind.PUSH)
            if job is not None:
                if self._request_stop(job, JobState.PAUSED, PushStatus.PAUSED):
                    return True
                if not job.finalized:
                    return False  # already stopping
            if self._find_job(push_uuid, JobKind.RETRACT) is not None:
                return False
            return self._change_stored_status(push_uuid, {PushStatus.RUNNING}, PushStatus.PAUSED)

    def resume(self, push_uuid: UUID) -> bool:
        """Carry on a paused push (also one paused before a restart), or a `running` one
        that no job is sending (its job failed). False if there is nothing to resume;
        BroadcastBusy if another job is active, here or in another process."""
        with self._control:
            self._require_started()
            winding_down = self._find_job(push_uuid, JobKind.PUSH)
            if winding_down is not None:
                if winding_down.stop_reason is not JobState.PAUSED:
                    return False
                # Paused a moment ago: let its in-flight sends land in the ledger first.
                if not winding_down.finished.wait(self._winding_down_timeout):
                    raise BroadcastBusy(self._progress_of(winding_down))
            if self._find_job(push_uuid, JobKind.RETRACT) is not None:
                return False
            push = self._load_push(push_uuid)
            if push.status not in (PushStatus.PAUSED, PushStatus.RUNNING):
                return False
            with self._lock:
                busy = self._current or (self._queue[0] if self._queue else None)
            if busy is not None:
                raise BroadcastBusy(self._progress_of(busy))
            self._claim_lease(push_uuid, JobKind.PUSH, busy_with_self=True)
            with self._lease_kept_on_success():
                if push.status == PushStatus.PAUSED:
                    self._persist_status(push_uuid, PushStatus.RUNNING)
                job = _Job(push_uuid, JobKind.PUSH)
                self._enqueue(job, force=True, expected=PushStatus.RUNNING)
            return True

    @property
    def _winding_down_timeout(self) -> float:
        # In-flight requests end within the engine's own request deadline, then one flush.
        return 4 * self._options.request_timeout + self._options.close_deadline

    def cancel(self, push_uuid: UUID) -> bool:
        """Cancel a running or paused push for good (copies already sent stay; /undo can
        still retract them). Retractions cannot be cancelled."""
        with self._control:
            job = self._find_job(push_uuid, JobKind.PUSH)
            if job is not None:
                if self._request_stop(job, JobState.CANCELLED, PushStatus.CANCELLED):
                    return True
                if not job.finalized:
                    return False  # already stopping
            if self._find_job(push_uuid, JobKind.RETRACT) is not None:
                return False
            changed = self._change_stored_status(
                push_uuid, {PushStatus.RUNNING, PushStatus.PAUSED}, PushStatus.CANCELLED
            )
            if changed:
                with self._lock:
                    self._snapshots.pop(push_uuid, None)
            return changed

    # --- observing ---------------------------------------------------------------------------

    def progress(self, push_uuid: UUID) -> Progress | None:
        """The latest job of this push (running, queued or recently finished), or a paused
        push known from the ledger; None if this process knows nothing about it."""
        with self._lock:
            job = self._latest_job_locked(push_uuid)
            snapshot = self._snapshots.get(push_uuid)
        if job is not None:
            return self._progress_of(job)
        return snapshot

    def active(self) -> Progress | None:
        """The job running now (or about to), if any."""
        with self._lock:
            job = self._current or (self._queue[0] if self._queue else None)
        return None if job is None else self._progress_of(job)

    def wait(self, push_uuid: UUID, timeout: float | None = None) -> JobReport:
        """Block until the latest job of this push ends; its report. TimeoutError if it
        did not end in time, UnknownPush if no job of this push is known."""
        with self._lock:
            job = self._latest_job_locked(push_uuid)
        if job is None:
            raise UnknownPush(push_uuid)
        return self._wait_for(job, timeout)

    def _wait_for(self, job: _Job, timeout: float | None) -> JobReport:
        if not job.finished.wait(timeout):
            raise TimeoutError(f"{job.kind} job of push {job.uuid} still running")
        assert job.report is not None
        return job.report

    def _progress_of(self, job: _Job) -> Progress:
        return job.tally.progress(
            flood_wait=self._gateway.flood_wait(paid=self._uses_paid_budget(job)),
            unreachable_since=self._gateway.down_since(),
        )

    def _uses_paid_budget(self, job: _Job) -> bool:
        # Telegram has no paid delete: retractions always spend the free budget.
        return job.kind is JobKind.PUSH and self._paid_copies

    # --- the job registry --------------------------------------------------------------------

    def _require_started(self) -> None:
        if not self._started or self._closing:
            raise RuntimeError("the Broadcaster is not running (call start(), not after shutdown)")

    def _enqueue(self, job: _Job, force: bool = False, expected: PushStatus | None = None) -> _Job:
        """Queue a job; unless `force`, only when nothing else is active or queued.
        `expected`: the push's status when the job runs; any other means another process
        handled it meanwhile (default: running for a push, retracting for a retraction)."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the Broadcaster is shutting down")
            busy = self._current or (self._queue[0] if self._queue else None)
            if busy is not None and not force:
                raise BroadcastBusy(self._progress_of(busy))
            if expected is not None:
                self._expected[job] = expected
            self._queue.append(job)
            self._snapshots.pop(job.uuid, None)
            self._wakeup.notify_all()
        return job

    def _find_job(self, push_uuid: UUID, kind: JobKind) -> _Job | None:
        """The unfinished job of this push and kind, running or queued."""
        with self._lock:
            for job in (self._current, *self._queue):
                if job is not None and job.uuid == push_uuid and job.kind is kind:
                    return job
        return None

    def _latest_job_locked(self, push_uuid: UUID) -> _Job | None:
        for job in reversed(self._queue):
            if job.uuid == push_uuid:
                return job
        if self._current is not None and self._current.uuid == push_uuid:
            return self._current
        return self._recent.get(push_uuid)

    def _remember_finished_locked(self, job: _Job) -> None:
        self._recent[job.uuid] = job
        self._recent.move_to_end(job.uuid)
        while len(self._recent) > FINISHED_JOBS_KEPT:
            self._recent.popitem(last=False)

    def _remember_paused(self, push_uuid: UUID) -> None:
        with self._factory.begin() as session:
            counts = queries.push_counts(session, push_uuid)
        tally = JobTally(push_uuid, JobKind.PUSH)
        tally.set_baseline(_push_baseline(counts))
        tally.set_state(JobState.PAUSED)
        with self._lock:
            self._snapshots[push_uuid] = tally.progress()

    # --- stopping ----------------------------------------------------------------------------

    def _request_stop(self, job: _Job, state: JobState, persist: PushStatus | None) -> bool:
        """Ask a job to end as `state`, persisting `persist` first. False if it is already
        finishing that way (or for good)."""
        with job.status_lock:
            if job.finalized:
                return False
            # Only a pause may still turn into a cancel; a shutdown or a retraction that
            # already stopped the job, or an admin's earlier decision, stands.
            may_change = job.stop_reason is None or (
                job.stop_reason is JobState.PAUSED and state is JobState.CANCELLED
            )
            if not may_change:
                return False
            if persist is not None:
                self._persist_status(job.uuid, persist)
            self._mark_stopping(job, state)
            return True

    def _mark_stopping(self, job: _Job, state: JobState, error: str | None = None) -> None:
        job.stop_reason = state
        job.tally.set_state(state, error)
        job.stop_event.set()

    def _stop_on_fatal_error(self, job: _Job, reason: str) -> None:
        """No recipient can succeed (bad token, source message deleted). A push is paused
        with the reason, so that nobody is marked failed and the admin can decide; a
        retraction stays `retracting` in the ledger so that the next start tries again."""
        with job.status_lock:
            if job.finalized or job.stop_reason is not None:
                return
            logger.error("%s job of push %s stopped: %s", job.kind, job.uuid, reason)
            if job.kind is JobKind.RETRACT:
                self._mark_stopping(job, JobState.FAILED, reason)
            else:
                try:
                    self._persist_status(job.uuid, PushStatus.PAUSED)
                except Exception:
                    logger.exception("could not mark push %s paused", job.uuid)
                self._mark_stopping(job, JobState.PAUSED, reason)
        self._emit(job, "stopped_by_error", reason)

    # --- the runner --------------------------------------------------------------------------

    def _run_jobs(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._closing:
                        self._wakeup.wait()
                    if not self._queue:
                        return
                    job = self._queue.popleft()
                    self._current = job
                self._run_one(job)
                self._release_lease_if_idle()
        finally:
            self._lease.release()

    def _run_one(self, job: _Job) -> None:
        try:
            if self._wait_for_lease(job):
                stop_watching = self._watch_lease(job)
                try:
                    if job.kind is JobKind.PUSH:
                        self._run_push(job)
                    else:
                        self._run_retract(job)
                finally:
                    stop_watching()
        except Exception as exc:
            logger.exception("%s job of push %s failed", job.kind, job.uuid)
            with job.status_lock:
                job.finalized = True
            job.tally.set_state(JobState.FAILED, f"{type(exc).__name__}: {exc}"[:200])
        report = job.tally.report()
        job.report = report
        with self._lock:
            self._current = None
            self._expected.pop(job, None)
            self._remember_finished_locked(job)
        logger.info(
            "%s job of push %s ended %s: %d ok, %d failed, %.1f s, %.1f/s",
            job.kind,
            job.uuid,
            report.state,
            report.sent,
            report.failed,
            report.elapsed,
            report.pace,
        )
        if self._on_finished is not None:
            try:
                self._on_finished(report)
            except Exception:
                logger.exception("on_finished callback failed for push %s", job.uuid)
        job.finished.set()

    def _run_push(self, job: _Job) -> None:
        push = self._load_push(job.uuid)
        if self._handled_elsewhere(job, push.status):
            return
        if job.stop_event.is_set() or push.status != PushStatus.RUNNING:
            # Paused, cancelled or shut down between launch and start: report the ledger.
            with self._factory.begin() as session:
                job.tally.set_baseline(_push_baseline(queries.push_counts(session, job.uuid)))
            self._finish(job, success=None, stored=push.status)
            return
        with self._factory.begin() as session:
            queries.enqueue_recipients(session, job.uuid)
            counts = queries.push_counts(session, job.uuid)
        job.tally.set_baseline(_push_baseline(counts))
        self._emit(job, "started", float(counts.pending))
        writer = self._writer(job, queries.record_deliveries, _describe_delivery)
        source_chat_id, source_message_id = push.source_chat_id, push.source_message_id

        def deliver(chat_id: int) -> None:
            self._deliver(job, writer, chat_id, source_chat_id, source_message_id)

        recipients = self._while_leased(
            job, pending_recipients(self._factory, job.uuid, self._page_size)
        )
        lost = self._feed(job, writer, recipients, deliver)
        self._finish(job, success=PushStatus.DONE, lost=lost)

    def _run_retract(self, job: _Job) -> None:
        push = self._load_push(job.uuid)
        if self._handled_elsewhere(job, push.status):
            return
        with self._factory.begin() as session:
            counts = queries.push_counts(session, job.uuid)
        job.tally.set_baseline(
            Baseline(
                total=counts.sent,
                sent=counts.retracted,
                failed_by_reason=counts.retract_failed_by_reason,
            )
        )
        if job.stop_event.is_set() or push.status != PushStatus.RETRACTING:
            self._finish(job, success=None, stored=push.status)
            return
        self._emit(job, "started", float(counts.retract_pending))
        writer = self._writer(job, queries.record_retractions, _describe_retraction)

        def retract(copy: tuple[int, int]) -> None:
            self._retract(job, writer, copy[0], copy[1])

        copies = self._while_leased(job, copies_to_delete(self._factory, job.uuid, self._page_size))
        lost = self._feed(job, writer, copies, retract)
        self._finish(job, success=PushStatus.RETRACTED, lost=lost)

    @property
    def _page_size(self) -> int:
        return self._options.page_size

    def _writer(
        self,
        job: _Job,
        record: Callable[[Session, UUID, Any], None],
        describe: Callable[[Any], object],
    ) -> OutcomeWriter[Any]:
        def write(session: Session, batch: Any) -> None:
            record(session, job.uuid, batch)

        def on_error(exc: Exception) -> None:
            self._emit(job, "database_error", str(exc)[:200])

        return OutcomeWriter(
            name=f"{job.kind}-{str(job.uuid)[:8]}",
            session_factory=self._factory,
            write=write,
            slots=self._workers,
            pacer=self._gateway.pacer_for(self._uses_paid_budget(job)),
            batch_size=self._options.flush_batch,
            interval=self._options.flush_interval,
            close_deadline=self._options.close_deadline,
            on_write_error=on_error,
            describe_outcome=describe,
        )

    def _feed(
        self,
        job: _Job,
        writer: OutcomeWriter[Any],
        items: Iterator[T],
        task: Callable[[T], None],
    ) -> int:
        """Hand every item to the pool, never more than `workers` uncommitted at a time;
        returns how many outcomes could not be recorded (see OutcomeWriter.close)."""
        assert self._executor is not None
        writer.start()
        try:
            for item in items:
                if not writer.take_slot(job.stop_event):
                    break
                try:
                    self._executor.submit(task, item)
                except BaseException:
                    writer.give_back_slot()
                    raise
        finally:
            writer.wait_for_senders()
            lost = writer.close()
        return lost

    def _finish(
        self,
        job: _Job,
        success: PushStatus | None,
        lost: int = 0,
        stored: str | None = None,
    ) -> None:
        """Decide how the job ended; store `success` unless someone stopped it first."""
        with job.status_lock:
            job.finalized = True
            if job.stop_reason is not None:
                return  # the status was stored when the stop was asked for
            if lost:
                job.tally.set_state(JobState.FAILED, f"could not record {lost} outcomes")
                return
            if success is None:
                job.tally.set_state(_state_for_stored_status(stored))
                return
            self._persist_status(job.uuid, success)
            job.tally.set_state(JobState(success.value))

    # --- one recipient -----------------------------------------------------------------------

    def _deliver(
        self,
        job: _Job,
        writer: OutcomeWriter[queries.DeliveryOutcome],
        chat_id: int,
        source_chat_id: int,
        source_message_id: int,
    ) -> None:
        def copy() -> Coroutine[Any, Any, MessageId]:
            return self._bot_or_fail().copy_message(
                chat_id=chat_id,
                from_chat_id=source_chat_id,
                message_id=source_message_id,
                **self._paid,
            )

        try:
            result, verdict = self._attempt(
                job, chat_id, copy, classify_send_error, paid=self._paid_copies
            )
        except Exception:
            logger.exception("delivery to chat %s failed unexpectedly", chat_id)
            result, verdict = None, Verdict(Action.FAIL, INTERNAL_ERROR_REASON)
        if verdict is None:
            writer.give_back_slot()
            return
        now = datetime.now(UTC)
        if verdict.action is Action.SUCCEEDED and result is not None:
            writer.submit(queries.DeliveryOutcome(chat_id, result.message_id, None, False, now))
            job.tally.succeeded()
        else:
            reason = verdict.reason or INTERNAL_ERROR_REASON
            writer.submit(queries.DeliveryOutcome(chat_id, None, reason, verdict.purges, now))
            job.tally.failed(reason, verdict.purges)

    def _retract(
        self,
        job: _Job,
        writer: OutcomeWriter[queries.RetractOutcome],
        chat_id: int,
        message_id: int,
    ) -> None:
        def delete() -> Coroutine[Any, Any, Any]:
            return self._bot_or_fail().delete_message(chat_id=chat_id, message_id=message_id)

        try:
            _, verdict = self._attempt(job, chat_id, delete, classify_delete_error, paid=False)
        except Exception:
            logger.exception("deleting the copy in chat %s failed unexpectedly", chat_id)
            verdict = Verdict(Action.FAIL, INTERNAL_ERROR_REASON)
        if verdict is None:
            writer.give_back_slot()
            return
        now = datetime.now(UTC)
        if verdict.action in (Action.SUCCEEDED, Action.GONE):
            status = (
                RetractStatus.DELETED if verdict.action is Action.SUCCEEDED else RetractStatus.GONE
            )
            writer.submit(queries.RetractOutcome(chat_id, status.value, None, now))
            job.tally.succeeded()
        else:
            reason = verdict.reason or INTERNAL_ERROR_REASON
            writer.submit(queries.RetractOutcome(chat_id, RetractStatus.FAILED.value, reason, now))
            job.tally.failed(reason, purged=False)

    def _attempt(
        self,
        job: _Job,
        chat_id: int,
        request: Callable[[], Coroutine[Any, Any, T]],
        classify: Callable[[BaseException], Verdict],
        paid: bool,
    ) -> tuple[T | None, Verdict | None]:
        """Send until there is a final verdict. (result, SUCCEEDED) on success, (None,
        verdict) on a final failure, (None, None) if the job stopped first: then nothing is
        recorded and the recipient stays pending for a resume.

        Only transient failures that happened while Telegram answered other requests count
        as attempts (see TelegramHealth): an outage of any length charges nobody."""
        attempts = 0
        failures = 0
        while True:
            ticket = self._gateway.acquire(chat_id, paid=paid, stop=job.stop_event)
            if ticket is None:
                return None, None
            try:
                result = self._call(request())
            except Exception as exc:
                verdict = classify(exc)
            else:
                self._gateway.answered(ticket)
                return result, _SUCCEEDED
            if verdict.action is Action.TRANSIENT:
                failures += 1
                if self._gateway.failed(ticket):
                    attempts += 1
                    if attempts >= self._options.max_attempts:
                        return None, Verdict(Action.FAIL, verdict.reason)
                    pause = self._backoff(attempts)
                else:
                    # Telegram failed everyone: the gateway holds the senders from here on;
                    # a short pause only spaces the retries until it notices.
                    pause = self._backoff(1)
                if job.stop_event.wait(pause):
                    return None, None
                continue
            if verdict.action is Action.RETRY_AFTER:
                self._on_flood(job, ticket, verdict.retry_after)
                continue
            self._gateway.answered(ticket)
            if verdict.action is Action.FATAL:
                self._stop_on_fatal_error(job, verdict.reason or "fatal error")
                return None, None
            return None, verdict

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=4 * self._options.request_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimedOut("the engine gave up waiting for the request") from None

    def _telegram_answers(self) -> bool:
        """The outage probe: does Telegram answer getMe (whatever it says)?"""
        try:
            self._call(self._bot_or_fail().get_me())
        except TelegramError as exc:
            return answered_at_all(exc)
        return True

    def _bot_or_fail(self) -> Bot:
        if self._bot is None:
            raise RuntimeError("the Broadcaster is not started")
        return self._bot

    def _on_flood(self, job: _Job, ticket: Ticket, retry_after: float) -> None:
        if self._gateway.flooded(ticket, retry_after):
            self._emit(job, "flood_wait", retry_after)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._options.backoff_cap, self._options.backoff_base * 2 ** (failures - 1))
        # Full jitter: workers that failed together do not retry together.
        return random.uniform(ceiling / 2, ceiling)

    # --- helpers -----------------------------------------------------------------------------

    def _load_push(self, push_uuid: UUID) -> queries.PushSummary:
        with self._factory.begin() as session:
            push = queries.get_push(session, push_uuid)
        if push is None:
            raise UnknownPush(push_uuid)
        return push

    def _persist_status(self, push_uuid: UUID, status: PushStatus) -> None:
        with self._factory.begin() as session:
            queries.change_push_status(session, push_uuid, status)

    def _change_stored_status(
        self, push_uuid: UUID, allowed: set[PushStatus], new: PushStatus
    ) -> bool:
        """For a push this process is not running: change its stored status if allowed."""
        with self._factory.begin() as session:
            if not queries.change_push_status(session, push_uuid, new, expected=allowed):
                return False
        if new is PushStatus.PAUSED:
            self._remember_paused(push_uuid)
        return True

    def _emit(self, job: _Job, name: str, detail: float | str | None = None) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(JobEvent(job.uuid, job.kind, name, detail))
        except Exception:
            logger.exception("on_event callback failed (%s)", name)

    # --- the lease ---------------------------------------------------------------------------

    def busy(self) -> Progress | None:
        """What keeps a new push from starting now: a job of this process, or (from the
        ledger) the job another process of the bot runs; None when one could start. Does
        database work: call it from a thread."""
        with self._lock:
            job = self._current or (self._queue[0] if self._queue else None)
        if job is not None:
            return self._progress_of(job)
        with self._control:
            try:
                if self._lease.try_acquire():
                    self._release_lease_if_idle()
                    return None
            except LeaseUnavailable:
                return None  # cannot tell; launching decides (its job waits for the lease)
            return self._progress_elsewhere(None, include_self=True) or _unknown_progress()

    def _claim_lease(self, push_uuid: UUID, kind: JobKind, busy_with_self: bool) -> None:
        """Before a launch: take the lease if this process runs nothing, so that the job
        cannot start while another process's runs. BroadcastBusy when another holds it.

        A retraction is the exception when only its own push is active elsewhere: that
        process is sending this very push and stops within seconds of seeing it
        `retracting`; the retraction waits for the lease meanwhile."""
        with self._lock:
            if self._current is not None or self._queue:
                return  # this process holds the lease or waits for it already
        try:
            if self._lease.try_acquire():
                return
        except LeaseUnavailable as exc:
            # Nobody can tell right now; the job waits until somebody can.
            logger.warning("broadcast lease: %s; the job waits for it", exc)
            return
        other = self._progress_elsewhere(push_uuid, include_self=False)
        if other is not None:
            raise BroadcastBusy(other)
        if kind is JobKind.RETRACT:
            return
        mine = self._progress_elsewhere(push_uuid, include_self=True) if busy_with_self else None
        raise BroadcastBusy(mine or _unknown_progress())

    @contextlib.contextmanager
    def _lease_kept_on_success(self) -> Iterator[None]:
        """A lease claimed for a launch that then failed must not stay held by an idle
        process."""
        try:
            yield
        except BaseException:
            self._release_lease_if_idle()
            raise

    def _release_lease_if_idle(self) -> None:
        with self._lock:
            if self._current is not None or self._queue:
                # Not idle. (Checked first without _control: resume() may hold _control
                # while it waits for the runner to wind a queued job down.)
                return
        # Under _control: a launch cannot claim the lease between the check and the release.
        with self._control:
            with self._lock:
                idle = self._current is None and not self._queue
            if idle:
                self._lease.release()

    def _expected_status(self, job: _Job) -> PushStatus:
        with self._lock:
            expected = self._expected.get(job)
        if expected is not None:
            return expected
        return PushStatus.RUNNING if job.kind is JobKind.PUSH else PushStatus.RETRACTING

    def _wait_for_lease(self, job: _Job) -> bool:
        """Hold the lease before the job runs, waiting while another process holds it.
        False if the job ended while waiting because another process handled its push;
        True otherwise (a job stopped here while waiting runs only to report that)."""
        announced = False
        while True:
            try:
                if self._lease.try_acquire():
                    if announced:
                        logger.info("%s job of push %s has the lease now", job.kind, job.uuid)
                    self._lease_confirmed.set()
                    return True
                if not announced:
                    logger.info(
                        "%s job of push %s waits: another process holds the broadcast lease (%s)",
                        job.kind,
                        job.uuid,
                        self._lease.holder() or "holder unknown",
                    )
            except LeaseUnavailable as exc:
                if not announced:
                    logger.warning("%s job of push %s waits: %s", job.kind, job.uuid, exc)
            announced = True
            if not self._mirror_ledger(job):
                return False
            if job.stop_event.wait(POLL_INTERVAL):
                return True

    def _mirror_ledger(self, job: _Job) -> bool:
        """While a job waits: show the ledger's counts (another process is making progress)
        and notice when its push was handled elsewhere (then the job ends: False)."""
        try:
            with self._factory.begin() as session:
                push = queries.get_push(session, job.uuid)
            if self._handled_elsewhere(job, None if push is None else push.status):
                return False
            self._refresh_baseline(job)
        except SQLAlchemyError as exc:
            logger.warning("%s job of push %s cannot read the ledger: %s", job.kind, job.uuid, exc)
        return True

    def _refresh_baseline(self, job: _Job) -> None:
        with self._factory.begin() as session:
            counts = queries.push_counts(session, job.uuid)
        if job.kind is JobKind.PUSH:
            job.tally.set_baseline(_push_baseline(counts))
        else:
            job.tally.set_baseline(_retract_baseline(counts))

    def _handled_elsewhere(self, job: _Job, status: str | None) -> bool:
        """End the job (as HANDLED_ELSEWHERE, which reports nothing) if its push is not in
        the status it expected and nobody in this process stopped it: another process ran,
        finished, paused, cancelled or retracted it meanwhile."""
        if status == self._expected_status(job):
            return False
        with job.status_lock:
            # A stop asked here persists its status before setting the stop reason, under
            # this lock: such a status is this process's own doing.
            if job.finalized or job.stop_reason is not None:
                return False
            job.finalized = True
            job.tally.set_state(JobState.HANDLED_ELSEWHERE)
        logger.info(
            "%s job of push %s ends without sending: the push is %s in the ledger "
            "(another process handled it)",
            job.kind,
            job.uuid,
            status,
        )
        try:
            self._refresh_baseline(job)  # the counts as the other process left them
        except SQLAlchemyError:
            logger.warning("could not read the final counts of push %s", job.uuid)
        return True

    def _watch_lease(self, job: _Job) -> Callable[[], None]:
        """Check every few seconds, in a thread of its own, that this process still holds
        the lease and that the push still is what the job expects; returns the function
        that stops the check."""
        if not self._lease.held:
            return lambda: None  # stopped while waiting: the job will not send anything
        done = threading.Event()
        watcher = threading.Thread(
            target=self._keep_watching_lease,
            args=(job, done),
            name="pushbot-broadcast-lease",
            daemon=True,
        )
        watcher.start()

        def stop() -> None:
            done.set()
            watcher.join()

        return stop

    def _keep_watching_lease(self, job: _Job, done: threading.Event) -> None:
        expected = self._expected_status(job)
        interval = CHECK_INTERVAL
        while not done.wait(interval):
            try:
                held = self._lease.still_held()
            except LeaseUnavailable as exc:
                if self._lease_confirmed.is_set():
                    logger.warning(
                        "%s job of push %s holds new sends: cannot tell whether this process "
                        "still holds the broadcast lease (%s)",
                        job.kind,
                        job.uuid,
                        exc,
                    )
                self._lease_confirmed.clear()
                interval = RECHECK_INTERVAL
                continue
            if not held:
                logger.error(
                    "%s job of push %s stops: another process took the broadcast lease "
                    "(%s); the push stays %s in the ledger",
                    job.kind,
                    job.uuid,
                    self._lease.holder() or "holder unknown",
                    expected,
                )
                self._request_stop(job, JobState.INTERRUPTED, persist=None)
                self._lease_confirmed.set()  # the feeder then sees the stop at once
                return
            if not self._lease_confirmed.is_set():
                logger.info("%s job of push %s carries on: lease held", job.kind, job.uuid)
                self._lease_confirmed.set()
            interval = CHECK_INTERVAL
            try:
                status = self._load_push(job.uuid).status
            except (SQLAlchemyError, UnknownPush):
                continue
            if status != expected and self._request_stop(
                job, JobState.HANDLED_ELSEWHERE, persist=None
            ):
                # (_request_stop refuses if this process stopped or finished the job itself.)
                logger.warning(
                    "%s job of push %s stops: another process made the push %s",
                    job.kind,
                    job.uuid,
                    status,
                )
                return

    def _while_leased(self, job: _Job, items: Iterator[T]) -> Iterator[T]:
        """Feed items only while the lease is confirmed: a holder whose database connection
        broke sends nothing new until it knows that it still holds the lease."""
        for item in items:
            while not self._lease_confirmed.is_set():
                if job.stop_event.is_set():
                    return
                self._lease_confirmed.wait(RECHECK_INTERVAL)
            yield item

    def _progress_elsewhere(self, push_uuid: UUID | None, include_self: bool) -> Progress | None:
        """The progress, from the ledger, of the job another process most likely runs: a
        retraction before a push, others before `push_uuid` (left out unless include_self)."""
        with self._factory.begin() as session:
            unfinished = queries.unfinished_pushes(session)
            candidates = sorted(
                (
                    p
                    for p in unfinished
                    if p.status in (PushStatus.RETRACTING, PushStatus.RUNNING)
                    and (include_self or p.uuid != push_uuid)
                ),
                key=lambda p: (p.uuid == push_uuid, p.status != PushStatus.RETRACTING),
            )
            if not candidates:
                return None
            push = candidates[0]
            counts = queries.push_counts(session, push.uuid)
        if push.status == PushStatus.RETRACTING:
            tally = JobTally(push.uuid, JobKind.RETRACT)
            tally.set_baseline(_retract_baseline(counts))
        else:
            tally = JobTally(push.uuid, JobKind.PUSH)
            tally.set_baseline(_push_baseline(counts))
        return tally.progress()


_SUCCEEDED = Verdict(Action.SUCCEEDED)


def _run_loop_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _lease_of(session_factory: sessionmaker[Session]) -> BroadcastLease:
    bind = session_factory.kw.get("bind")
    if isinstance(bind, Connection):
        bind = bind.engine
    if isinstance(bind, Engine):
        return lease_for(bind)
    # No engine to tell the database by: nothing beyond this process can be excluded.
    logger.warning("the session factory has no engine: the broadcast lease is process-local")
    return LocalLease()


# Who is busy when the ledger cannot tell (a placeholder uuid: all zeros).
UNKNOWN_PUSH = UUID(int=0)


def _unknown_progress() -> Progress:
    return JobTally(UNKNOWN_PUSH, JobKind.PUSH).progress()


def _retract_baseline(counts: queries.PushCounts) -> Baseline:
    return Baseline(
        total=counts.sent,
        sent=counts.retracted,
        failed_by_reason=counts.retract_failed_by_reason,
    )


def _push_baseline(counts: queries.PushCounts) -> Baseline:
    return Baseline(
        total=counts.total,
        sent=counts.sent,
        failed_by_reason=counts.failed_by_reason,
        purged=Baseline.purged_among(counts.failed_by_reason),
    )


_STATE_FOR_STORED_STATUS = {
    PushStatus.PAUSED: JobState.PAUSED,
    PushStatus.CANCELLED: JobState.CANCELLED,
    PushStatus.DONE: JobState.DONE,
    PushStatus.RETRACTED: JobState.RETRACTED,
}


def _state_for_stored_status(status: str | None) -> JobState:
    """How a job that found its push in `status` at its start ends (without doing work)."""
    if status is None:
        return JobState.INTERRUPTED
    return _STATE_FOR_STORED_STATUS.get(PushStatus(status), JobState.INTERRUPTED)


def _describe_delivery(outcome: queries.DeliveryOutcome) -> object:
    return (outcome.chat_id, outcome.message_id, outcome.error)


def _describe_retraction(outcome: queries.RetractOutcome) -> object:
    return (outcome.chat_id, outcome.status, outcome.error)
