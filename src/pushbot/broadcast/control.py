"""Job control: what may be launched, paused, resumed, cancelled, retracted or edited, and what
that stores.

Every decision about a job is taken here, under one lock (launches and steering never
interleave), and a decision that must survive a restart (paused, cancelled, retracting,
editing) is stored through `queries.change_push_status` before the call that made it
returns. A push this process is not running is steered in the ledger alone (compare-and-set
on its status).

One job at a time, across processes too: before a launch this process takes the broadcast
lease (pushbot.broadcast.lease) unless it holds it already for jobs of its own; when another
process holds it, the launch is refused with that process's progress from the ledger (a
retraction of the very push the other process sends is the exception: it waits). The
runner holds the lease while jobs run and lets go once this process is idle.

It owns the decisions and their persistence; not the jobs' states (pushbot.broadcast.jobs),
nor running them or waiting for and watching the lease (pushbot.broadcast.runner).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from uuid import UUID

from sqlalchemy.orm import Session, sessionmaker

from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.jobs import Job, JobHandle, JobRegistry, Persist
from pushbot.broadcast.lease import BroadcastLease, LeaseUnavailable
from pushbot.broadcast.progress import Baseline, JobKind, JobState, JobTally, Progress
from pushbot.db import queries
from pushbot.db.models import PushStatus

logger = logging.getLogger(__name__)

__all__ = [
    "UNKNOWN_PUSH",
    "BroadcastBusy",
    "BroadcastError",
    "InvalidPushState",
    "JobControl",
    "UnknownPush",
    "ledger_baseline",
    "load_push",
    "store_status",
]

# Who is busy when the ledger cannot tell (a placeholder uuid: all zeros).
UNKNOWN_PUSH = UUID(int=0)
# The job some process runs for a push in each of these statuses.
_KIND_WHILE = {
    PushStatus.RETRACTING: JobKind.RETRACT,
    PushStatus.EDITING: JobKind.EDIT,
    PushStatus.RUNNING: JobKind.PUSH,
}


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


# --- the ledger's view of a push (also the runner's) ---------------------------------------------


def load_push(factory: sessionmaker[Session], push_uuid: UUID) -> queries.PushSummary:
    with factory.begin() as session:
        push = queries.get_push(session, push_uuid)
    if push is None:
        raise UnknownPush(push_uuid)
    return push


def store_status(factory: sessionmaker[Session], push_uuid: UUID, status: PushStatus) -> None:
    with factory.begin() as session:
        queries.change_push_status(session, push_uuid, status)


def ledger_baseline(factory: sessionmaker[Session], push_uuid: UUID, kind: JobKind) -> Baseline:
    with factory.begin() as session:
        return Baseline.of(kind, queries.push_counts(session, push_uuid))


def unknown_progress() -> Progress:
    return JobTally(UNKNOWN_PUSH, JobKind.PUSH).progress()


class JobControl:
    """Thread-safe. Its methods do a little database work: call them from a thread."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        registry: JobRegistry,
        lease: BroadcastLease,
        gateway: TelegramGateway,
        *,
        paid_copies: bool,
        winding_down_timeout: float,
    ) -> None:
        self._factory = session_factory
        self._registry = registry
        self._lease = lease
        self._gateway = gateway
        self._paid_copies = paid_copies
        # How long resume() waits for a job paused a moment ago to wind down.
        self._winding_down_timeout = winding_down_timeout
        self._lock = threading.RLock()

    # --- launching ---------------------------------------------------------------------------

    def launch_push(self, push_uuid: UUID) -> JobHandle:
        """See Broadcaster.launch_push."""
        with self._lock:
            self._registry.require_open()
            same = self._registry.find(push_uuid, JobKind.PUSH)
            if same is not None:
                return self._handle(same)
            push = load_push(self._factory, push_uuid)
            if push.status != PushStatus.RUNNING:
                raise InvalidPushState(push_uuid, push.status, "only a running push is launched")
            self._claim_lease(push_uuid, JobKind.PUSH, busy_with_self=False)
            with self._lease_kept_on_success():
                job = self._job(push_uuid, JobKind.PUSH, PushStatus.RUNNING)
                busy = self._registry.enqueue_if_idle(job)
                if busy is not None:
                    raise BroadcastBusy(busy.progress(self._gateway))
            return self._handle(job)

    def launch_retract(self, push_uuid: UUID) -> JobHandle:
        """See Broadcaster.launch_retract."""
        with self._lock:
            self._registry.require_open()
            same = self._registry.find(push_uuid, JobKind.RETRACT)
            if same is not None:
                return self._handle(same)
            push = load_push(self._factory, push_uuid)
            # Its sending, or its edit: either stops, and its copies are deleted.
            sending = self._registry.find(push_uuid, JobKind.PUSH) or self._registry.find(
                push_uuid, JobKind.EDIT
            )
            others = [job for job in self._registry.unfinished() if job is not sending]
            if others:
                raise BroadcastBusy(others[0].progress(self._gateway))
            if sending is None:
                self._claim_lease(push_uuid, JobKind.RETRACT, busy_with_self=False)
            expected = PushStatus.RETRACTING
            with self._lease_kept_on_success():
                if sending is not None:
                    sending.supersede(self._storing(push_uuid, PushStatus.RETRACTING))
                elif push.status != PushStatus.RETRACTED:
                    store_status(self._factory, push_uuid, PushStatus.RETRACTING)
                else:
                    # A second undo of a retracted push just reports that nothing is left.
                    expected = PushStatus.RETRACTED
                job = self._job(push_uuid, JobKind.RETRACT, expected)
                self._registry.enqueue(job)
            return self._handle(job)

    def launch_edit(self, push_uuid: UUID, edit: queries.EditedText) -> JobHandle:
        """See Broadcaster.launch_edit."""
        with self._lock:
            self._registry.require_open()
            # Checked before anything is stored: a refused edit must leave the push `done`.
            busy = self._registry.active()
            if busy is not None:
                raise BroadcastBusy(busy.progress(self._gateway))
            push = load_push(self._factory, push_uuid)
            if push.status not in (PushStatus.DONE, PushStatus.EDITING):
                raise InvalidPushState(push_uuid, push.status, "only a finished push is edited")
            # (busy_with_self: another process may be editing this very push.)
            self._claim_lease(push_uuid, JobKind.EDIT, busy_with_self=True)
            with self._lease_kept_on_success():
                with self._factory.begin() as session:
                    if not queries.begin_edit(session, push_uuid, edit):
                        current = queries.get_push(session, push_uuid)
                        status = "gone" if current is None else current.status
                        raise InvalidPushState(push_uuid, status, "only a finished push is edited")
                job = self._job(push_uuid, JobKind.EDIT, PushStatus.EDITING)
                self._registry.enqueue(job)
            return self._handle(job)

    def resume_unfinished(self) -> list[UUID]:
        """See Broadcaster.resume_unfinished."""
        with self._lock:
            self._registry.require_open()
            with self._factory.begin() as session:
                unfinished = queries.unfinished_pushes(session)
            retracting = [p for p in unfinished if p.status == PushStatus.RETRACTING]
            editing = [p for p in unfinished if p.status == PushStatus.EDITING]
            running = [p for p in unfinished if p.status == PushStatus.RUNNING]
            for push in unfinished:
                if push.status == PushStatus.PAUSED:
                    self._remember_paused(push.uuid)
            resumed: list[UUID] = []
            for push, kind in [
                *((p, JobKind.RETRACT) for p in retracting),
                *((p, JobKind.EDIT) for p in editing),
                *((p, JobKind.PUSH) for p in running),
            ]:
                if self._registry.find(push.uuid, kind) is None:
                    # If another process holds the lease (it may be resuming the same push),
                    # the job waits for it, then carries on only what the ledger still owes.
                    self._registry.enqueue(self._job(push.uuid, kind, PushStatus(push.status)))
                    resumed.append(push.uuid)
            if resumed:
                logger.info("resuming %d unfinished job(s): %s", len(resumed), resumed)
            return resumed

    # --- steering ----------------------------------------------------------------------------

    def pause(self, push_uuid: UUID) -> bool:
        """See Broadcaster.pause."""
        with self._lock:
            job = self._registry.find(push_uuid, JobKind.PUSH)
            if job is not None:
                if job.ask_to_stop(JobState.PAUSED, self._storing(push_uuid, PushStatus.PAUSED)):
                    return True
                if not job.decided:
                    return False  # already stopping
            if self._registry.find(push_uuid, JobKind.RETRACT) is not None:
                return False
            return self._change_stored_status(push_uuid, {PushStatus.RUNNING}, PushStatus.PAUSED)

    def resume(self, push_uuid: UUID) -> bool:
        """See Broadcaster.resume."""
        with self._lock:
            self._registry.require_open()
            winding_down = self._registry.find(push_uuid, JobKind.PUSH)
            if winding_down is not None:
                if winding_down.stage.stop is not JobState.PAUSED:
                    return False
                # Paused a moment ago: let its in-flight sends land in the ledger first.
                if not winding_down.wait_until_finished(self._winding_down_timeout):
                    raise BroadcastBusy(winding_down.progress(self._gateway))
            if self._registry.find(push_uuid, JobKind.RETRACT) is not None:
                return False
            push = load_push(self._factory, push_uuid)
            if push.status not in (PushStatus.PAUSED, PushStatus.RUNNING):
                return False
            busy = self._registry.active()
            if busy is not None:
                raise BroadcastBusy(busy.progress(self._gateway))
            self._claim_lease(push_uuid, JobKind.PUSH, busy_with_self=True)
            with self._lease_kept_on_success():
                if push.status == PushStatus.PAUSED:
                    store_status(self._factory, push_uuid, PushStatus.RUNNING)
                self._registry.enqueue(self._job(push_uuid, JobKind.PUSH, PushStatus.RUNNING))
            return True

    def cancel(self, push_uuid: UUID) -> bool:
        """See Broadcaster.cancel."""
        with self._lock:
            job = self._registry.find(push_uuid, JobKind.PUSH)
            if job is not None:
                if job.ask_to_stop(
                    JobState.CANCELLED, self._storing(push_uuid, PushStatus.CANCELLED)
                ):
                    return True
                if not job.decided:
                    return False  # already stopping
            if self._registry.find(push_uuid, JobKind.RETRACT) is not None:
                return False
            changed = self._change_stored_status(
                push_uuid, {PushStatus.RUNNING, PushStatus.PAUSED}, PushStatus.CANCELLED
            )
            if changed:
                self._registry.forget_paused(push_uuid)
            return changed

    def stop_on_fatal_error(self, job: Job, reason: str) -> None:
        """No recipient can succeed (bad token, source message deleted). A push is paused
        with the reason, so that nobody is marked failed and the admin can decide; a
        retraction stays `retracting` (an edit `editing`) in the ledger so that the next
        start tries again. (Called from a worker: it must not wait for this controller's
        lock.)"""

        def record() -> None:
            logger.error("%s job of push %s stopped: %s", job.kind, job.uuid, reason)
            if job.kind is not JobKind.PUSH:
                return
            try:
                store_status(self._factory, job.uuid, PushStatus.PAUSED)
            except Exception:
                logger.exception("could not mark push %s paused", job.uuid)

        state = JobState.PAUSED if job.kind is JobKind.PUSH else JobState.FAILED
        job.stop_on_error(state, reason, record)

    # --- the lease ---------------------------------------------------------------------------

    def busy(self) -> Progress | None:
        """See Broadcaster.busy."""
        job = self._registry.active()
        if job is not None:
            return job.progress(self._gateway)
        with self._lock:
            try:
                if self._lease.try_acquire():
                    self.release_lease_if_idle()
                    return None
            except LeaseUnavailable:
                return None  # cannot tell; launching decides (its job waits for the lease)
            return self._progress_elsewhere(None, include_self=True) or unknown_progress()

    def release_lease_if_idle(self) -> None:
        """Let go of the lease unless this process has a job (the runner calls this after
        each job)."""
        if not self._registry.idle():
            # Not idle. (Checked first without the lock: resume() may hold it while it waits
            # for the runner to wind a queued job down.)
            return
        # Under the lock: a launch cannot claim the lease between the check and the release.
        with self._lock:
            if self._registry.idle():
                self._lease.release()

    def _claim_lease(self, push_uuid: UUID, kind: JobKind, busy_with_self: bool) -> None:
        """Before a launch: take the lease if this process runs nothing, so that the job
        cannot start while another process's runs. BroadcastBusy when another holds it.

        A retraction is the exception when only its own push is active elsewhere: that
        process is sending this very push and stops within seconds of seeing it
        `retracting`; the retraction waits for the lease meanwhile."""
        if not self._registry.idle():
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
        raise BroadcastBusy(mine or unknown_progress())

    @contextlib.contextmanager
    def _lease_kept_on_success(self) -> Iterator[None]:
        """A lease claimed for a launch that then failed must not stay held by an idle
        process."""
        try:
            yield
        except BaseException:
            self.release_lease_if_idle()
            raise

    def _progress_elsewhere(self, push_uuid: UUID | None, include_self: bool) -> Progress | None:
        """The progress, from the ledger, of the job another process most likely runs: a
        retraction before a push, others before `push_uuid` (left out unless include_self)."""
        with self._factory.begin() as session:
            unfinished = queries.unfinished_pushes(session)
            candidates = sorted(
                (
                    p
                    for p in unfinished
                    if p.status in _KIND_WHILE and (include_self or p.uuid != push_uuid)
                ),
                key=lambda p: (p.uuid == push_uuid, p.status != PushStatus.RETRACTING),
            )
            if not candidates:
                return None
            push = candidates[0]
            counts = queries.push_counts(session, push.uuid)
        kind = _KIND_WHILE[push.status]
        tally = JobTally(push.uuid, kind)
        tally.set_baseline(Baseline.of(kind, counts))
        return tally.progress()

    # --- helpers -----------------------------------------------------------------------------

    def _job(self, push_uuid: UUID, kind: JobKind, expects: PushStatus) -> Job:
        # Telegram has no paid delete: retractions always spend the free budget.
        paid = kind is JobKind.PUSH and self._paid_copies
        return Job(push_uuid, kind, expects=expects, paid=paid)

    def _handle(self, job: Job) -> JobHandle:
        return JobHandle(job, self._gateway)

    def _storing(self, push_uuid: UUID, status: PushStatus) -> Persist:
        def persist() -> None:
            store_status(self._factory, push_uuid, status)

        return persist

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

    def _remember_paused(self, push_uuid: UUID) -> None:
        tally = JobTally(push_uuid, JobKind.PUSH)
        tally.set_baseline(ledger_baseline(self._factory, push_uuid, JobKind.PUSH))
        self._registry.remember_paused(tally.progress(JobState.PAUSED))
