"""The Broadcaster: sends a copy of a push to every recipient, corrects every copy's text, or
deletes every copy again.

It executes jobs and nothing else (a push's life is pushbot.broadcast.service's), one at a
time, here and across processes. It is the facade of its parts, each of which says in its
docstring what it owns and what it does not:

* `transport.py` — the engine's own event loop thread and `telegram.Bot`, which the worker
  threads drive with `asyncio.run_coroutine_threadsafe`;
* `delivery.py` — the delivery policy: one recipient's copy, edit or deletion, its tries through
  the gateway, their classification (`errors.py`) and back-off (`backoff.py`);
* `runner.py` — the runner thread and the worker pool: waits for and watches the
  cross-process lease, feeds the pool from the ledger's pages, finishes each job;
* `jobs.py` — a job's life as one state (`Stage`), and the registry of this process's jobs;
* `control.py` — launching, pausing, resuming, cancelling, retracting and editing: the decisions and
  the push statuses they store, and the lease claimed at a launch;
* `ledger.py` — pending rows in, outcomes out in group commits, the crash bound;
  `lease.py` — the broadcast lease itself.

Every push status change that must survive a restart (paused, cancelled, retracting, editing,
done, retracted) is written to the database before the call that caused it returns.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import uvloop
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from pushbot.broadcast.backoff import Backoff
from pushbot.broadcast.control import (
    UNKNOWN_PUSH,
    BroadcastBusy,
    BroadcastError,
    InvalidPushState,
    JobControl,
    UnknownPush,
)
from pushbot.broadcast.delivery import Delivery
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.jobs import Job, JobHandle, JobRegistry
from pushbot.broadcast.lease import BroadcastLease, LocalLease, lease_for
from pushbot.broadcast.ledger import (
    CLOSE_DEADLINE,
    FLUSH_BATCH,
    FLUSH_INTERVAL,
    PAGE_SIZE,
    follow_to_supergroup,
)
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobKind, JobReport, JobState, Progress
from pushbot.broadcast.runner import Runner
from pushbot.broadcast.transport import (
    REQUEST_DEADLINE_FACTOR,
    LoopFactory,
    RequestFactory,
    Transport,
)
from pushbot.config import Settings
from pushbot.db.queries import EditedText

logger = logging.getLogger(__name__)

__all__ = [
    "UNKNOWN_PUSH",
    "BroadcastBusy",
    "BroadcastError",
    "Broadcaster",
    "EngineOptions",
    "InvalidPushState",
    "JobHandle",
    "JobKind",
    "JobReport",
    "JobState",
    "Progress",
    "RequestFactory",
    "UnknownPush",
]


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
    # The engine's event loop: uvloop's (measured: 11-17 % more copies/s unpaced, ~10 % less
    # CPU per copy than asyncio's; bench/engine_overhead.py compares both).
    loop_factory: LoopFactory = uvloop.new_event_loop


class Broadcaster:
    """Runs pushes, edits and retractions against the Bot API, one job at a time, from the
    ledger.

    Thread-safe. `progress()` and `active()` only read memory, so they may be called from
    an event loop; the other methods do a little database work and belong in a thread
    (`asyncio.to_thread`).

    `request_factory` makes the ptb request object of the engine's Bot (default: the
    TELEGRAM_TRANSPORT's, with BROADCAST_POOL_SIZE connections and `options.request_timeout`).
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        pacer: Pacer | None = None,
        gateway: TelegramGateway | None = None,
        on_finished: Callable[[JobReport], None] | None = None,
        options: EngineOptions | None = None,
        lease: BroadcastLease | None = None,
        request_factory: RequestFactory | None = None,
    ) -> None:
        if gateway is None:
            gateway = (
                TelegramGateway(pacer)
                if pacer is not None
                else TelegramGateway.for_settings(settings)
            )
        self._gateway = gateway
        options = options or EngineOptions()
        # One job at a time across processes too (pushbot.broadcast.lease): the runner holds
        # the lease while this process has jobs; another process's jobs wait for it.
        self._owns_lease = lease is None
        self._lease = lease if lease is not None else _lease_of(session_factory)
        self._registry = JobRegistry()
        self._transport = Transport(
            settings, options.request_timeout, request_factory, options.loop_factory
        )
        self._control = JobControl(
            session_factory,
            self._registry,
            self._lease,
            gateway,
            paid_copies=settings.paid_broadcast,
            # In-flight requests end within the engine's own request deadline, then one flush.
            winding_down_timeout=REQUEST_DEADLINE_FACTOR * options.request_timeout
            + options.close_deadline,
        )
        delivery = Delivery(
            self._transport,
            gateway,
            max_attempts=options.max_attempts,
            backoff=Backoff(options.backoff_base, options.backoff_cap, jitter=True),
            paid_copies=settings.paid_broadcast,
            on_fatal=self._control.stop_on_fatal_error,
            follow_migration=functools.partial(_follow_migration, session_factory),
        )
        self._runner = Runner(
            session_factory=session_factory,
            registry=self._registry,
            lease=self._lease,
            delivery=delivery,
            gateway=gateway,
            workers=settings.effective_broadcast_workers,
            page_size=options.page_size,
            flush_batch=options.flush_batch,
            flush_interval=options.flush_interval,
            close_deadline=options.close_deadline,
            release_lease_if_idle=self._control.release_lease_if_idle,
            on_finished=on_finished,
            admin_ids=settings.admin_ids,
        )

    @property
    def gateway(self) -> TelegramGateway:
        return self._gateway

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the event loop thread, the Bot, the worker pool and the job runner."""
        if not self._registry.open():
            return
        self._transport.start()
        self._gateway.set_probes(sync_probe=self._transport.telegram_answers)
        self._runner.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop: the active job ends as `interrupted` once its in-flight sends are recorded.

        Its push stays running (or retracting) in the ledger, as do queued ones, so the next
        `resume_unfinished()` carries on. With wait=False the winding down happens in the
        background.
        """
        jobs = self._registry.close()
        if jobs is None:
            return
        for job in jobs:
            job.ask_to_stop(JobState.INTERRUPTED)
        if wait:
            self._close_down()
        else:
            threading.Thread(target=self._close_down, name="pushbot-broadcast-close").start()

    def _close_down(self) -> None:
        self._runner.stop()
        self._lease.release()
        if self._owns_lease:
            self._lease.close()
        self._transport.close()

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
        return self._control.launch_push(push_uuid)

    def launch_retract(self, push_uuid: UUID) -> JobHandle:
        """Delete every copy recorded as sent. If that push is being sent right now, its
        sending stops first (its in-flight copies are recorded, then deleted too).

        The push is `retracting` in the ledger before this returns, so a crash cannot bring
        the sending back. Raises BroadcastBusy if another push's job is active (another
        process sending this very push stops within seconds of seeing it `retracting`).
        """
        return self._control.launch_retract(push_uuid)

    def launch_edit(self, push_uuid: UUID, edit: EditedText) -> JobHandle:
        """Correct every delivered copy of a finished push: `editMessageText`, or
        `editMessageCaption` for media, with `edit`'s text and formatting.

        The push is `editing` with the new text before this returns, and every copy is owed
        the edit again (a crash resumes with only the copies not yet reached). Raises
        BroadcastBusy if any job is active, here or in another process; InvalidPushState
        unless the push is `done` (or `editing`, an unfinished round started over);
        UnknownPush. An /undo overtakes a running edit as it overtakes a sending."""
        return self._control.launch_edit(push_uuid, edit)

    def resume_unfinished(self) -> list[UUID]:
        """At start-up: carry on every `running`, `editing` and `retracting` push from the
        ledger (retractions first: an undo is urgent; then edits: wrong text is on screens
        now). Paused ones stay paused but their progress is known; cancelled ones stay
        cancelled. Returns the resumed pushes in run order."""
        return self._control.resume_unfinished()

    # --- steering ----------------------------------------------------------------------------

    def pause(self, push_uuid: UUID) -> bool:
        """Pause a push (persisted: it stays paused across restarts). Retractions cannot be
        paused. False when there is nothing to pause."""
        return self._control.pause(push_uuid)

    def resume(self, push_uuid: UUID) -> bool:
        """Carry on a paused push (also one paused before a restart), or a `running` one
        that no job is sending (its job failed). False if there is nothing to resume;
        BroadcastBusy if another job is active, here or in another process."""
        return self._control.resume(push_uuid)

    def cancel(self, push_uuid: UUID) -> bool:
        """Cancel a running or paused push for good (copies already sent stay; /undo can
        still retract them). Retractions cannot be cancelled."""
        return self._control.cancel(push_uuid)

    # --- observing ---------------------------------------------------------------------------

    def busy(self) -> Progress | None:
        """What keeps a new push from starting now: a job of this process, or (from the
        ledger) the job another process of the bot runs; None when one could start. Does
        database work: call it from a thread."""
        return self._control.busy()

    def progress(self, push_uuid: UUID) -> Progress | None:
        """The latest job of this push (running, queued or recently finished), or a paused
        push known from the ledger; None if this process knows nothing about it."""
        found = self._registry.latest_or_snapshot(push_uuid)
        if isinstance(found, Job):
            return found.progress(self._gateway)
        return found

    def active(self) -> Progress | None:
        """The job running now (or about to), if any."""
        job = self._registry.active()
        return None if job is None else job.progress(self._gateway)

    def wait(self, push_uuid: UUID, timeout: float | None = None) -> JobReport:
        """Block until the latest job of this push ends; its report. TimeoutError if it
        did not end in time, UnknownPush if no job of this push is known."""
        job = self._registry.latest(push_uuid)
        if job is None:
            raise UnknownPush(push_uuid)
        return job.wait(timeout)


def _follow_migration(
    factory: sessionmaker[Session], job: Job, old_chat_id: int, new_chat_id: int
) -> bool:
    return follow_to_supergroup(factory, job.uuid, old_chat_id, new_chat_id)


def _lease_of(session_factory: sessionmaker[Session]) -> BroadcastLease:
    bind = session_factory.kw.get("bind")
    if isinstance(bind, Connection):
        bind = bind.engine
    if isinstance(bind, Engine):
        return lease_for(bind)
    # No engine to tell the database by: nothing beyond this process can be excluded.
    logger.warning("the session factory has no engine: the broadcast lease is process-local")
    return LocalLease()
