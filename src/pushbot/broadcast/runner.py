"""The runner: one thread that runs this process's jobs one at a time, and the worker pool.

For each job it takes from the registry, the runner

1. waits for the broadcast lease (pushbot.broadcast.lease) while another process holds it,
   mirroring the ledger's counts meanwhile, and ends the job without sending if that other
   process handled its push (HANDLED_ELSEWHERE: no second report);
2. watches the lease in a thread of its own while the job runs: a holder that cannot tell
   whether it still holds it sends nothing new until it can, one that lost it to another
   process stops (INTERRUPTED), and a push another process changed stops too;
3. feeds the pool of `workers` threads from the ledger's keyset pages (pending recipients,
   copies to delete or copies to edit), never more than `workers` outcomes uncommitted (the
   crash bound, pushbot.broadcast.ledger), each item handed to the delivery policy;
4. finishes the job: its outcome (`done`, also after an edit; `retracted`; or how it was
   stopped) is stored and its report made, handed to `on_finished`, then published to
   whoever waits.

It owns the runner thread, the pool and the lease while jobs run; not the decisions to
launch or stop jobs (pushbot.broadcast.control) nor what one recipient's delivery does
(pushbot.broadcast.delivery).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from telegram import MessageEntity

from pushbot.broadcast.control import UnknownPush, ledger_baseline, load_push, store_status
from pushbot.broadcast.delivery import CopyEdit, Delivery
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.jobs import Job, JobRegistry
from pushbot.broadcast.lease import (
    CHECK_INTERVAL,
    POLL_INTERVAL,
    RECHECK_INTERVAL,
    BroadcastLease,
    LeaseUnavailable,
)
from pushbot.broadcast.ledger import (
    OutcomeWriter,
    copies_to_delete,
    copies_to_edit,
    pending_recipients,
)
from pushbot.broadcast.progress import Baseline, JobKind, JobReport, JobState
from pushbot.db import queries
from pushbot.db.models import PushStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Runner:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        registry: JobRegistry,
        lease: BroadcastLease,
        delivery: Delivery,
        gateway: TelegramGateway,
        workers: int,
        page_size: int,
        flush_batch: int,
        flush_interval: float,
        close_deadline: float,
        release_lease_if_idle: Callable[[], None],
        on_finished: Callable[[JobReport], None] | None = None,
        admin_ids: Collection[int] = (),
    ) -> None:
        self._factory = session_factory
        self._registry = registry
        self._lease = lease
        self._delivery = delivery
        self._gateway = gateway
        self._workers = workers
        self._page_size = page_size
        self._flush_batch = flush_batch
        self._flush_interval = flush_interval
        self._close_deadline = close_deadline
        self._release_lease_if_idle = release_lease_if_idle
        self._on_finished = on_finished
        self._admin_ids = admin_ids  # who a push to the `admins` segment reaches
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        # Cleared while a holder cannot tell whether it still holds the lease: no new sends.
        self._lease_confirmed = threading.Event()

    def start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="pushbot-send"
        )
        self._thread = threading.Thread(
            target=self._run_jobs, name="pushbot-broadcast-jobs", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Wait for the runner to end (the registry is closed and its jobs asked to stop),
        then for the pool's threads."""
        if self._thread is not None:
            self._thread.join()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # --- one job after the other -------------------------------------------------------------

    def _run_jobs(self) -> None:
        try:
            while (job := self._registry.next_job()) is not None:
                self._run_one(job)
                self._release_lease_if_idle()
        finally:
            self._lease.release()

    def _run_one(self, job: Job) -> None:
        try:
            if self._wait_for_lease(job):
                stop_watching = self._watch_lease(job)
                try:
                    if job.kind is JobKind.PUSH:
                        self._run_push(job)
                    elif job.kind is JobKind.EDIT:
                        self._run_edit(job)
                    else:
                        self._run_retract(job)
                finally:
                    stop_watching()
        except Exception as exc:
            logger.exception("%s job of push %s failed", job.kind, job.uuid)
            job.fail(f"{type(exc).__name__}: {exc}"[:200])
        report = job.make_report()
        self._registry.finished(job)
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
        job.publish(report)

    def _run_push(self, job: Job) -> None:
        push = load_push(self._factory, job.uuid)
        if self._handled_elsewhere(job, push.status):
            return
        if job.stop_signal.is_set() or push.status != PushStatus.RUNNING:
            # Paused, cancelled or shut down between launch and start: report the ledger.
            job.tally.set_baseline(ledger_baseline(self._factory, job.uuid, JobKind.PUSH))
            self._finish(job, success=None, stored=push.status)
            return
        with self._factory.begin() as session:
            queries.enqueue_recipients(session, job.uuid, admin_ids=self._admin_ids)
            counts = queries.push_counts(session, job.uuid)
        job.tally.set_baseline(Baseline.of(JobKind.PUSH, counts))
        writer = self._writer(job, queries.record_deliveries, _describe_delivery)
        source_chat_id, source_message_id = push.source_chat_id, push.source_message_id
        copy_options = push.copy_options  # silent, protected: the same for every copy
        deliver_copy = self._delivery.deliver_copy

        def deliver(chat_id: int) -> None:
            deliver_copy(job, writer, chat_id, source_chat_id, source_message_id, copy_options)

        recipients = self._while_leased(
            job, pending_recipients(self._factory, job.uuid, self._page_size)
        )
        lost = self._feed(job, writer, recipients, deliver)
        self._finish(job, success=PushStatus.DONE, lost=lost)

    def _run_retract(self, job: Job) -> None:
        push = load_push(self._factory, job.uuid)
        if self._handled_elsewhere(job, push.status):
            return
        job.tally.set_baseline(ledger_baseline(self._factory, job.uuid, JobKind.RETRACT))
        if job.stop_signal.is_set() or push.status != PushStatus.RETRACTING:
            self._finish(job, success=None, stored=push.status)
            return
        writer = self._writer(job, queries.record_retractions, _describe_retraction)
        delete_copy = self._delivery.delete_copy

        def retract(copy: tuple[int, int]) -> None:
            delete_copy(job, writer, copy[0], copy[1])

        copies = self._while_leased(job, copies_to_delete(self._factory, job.uuid, self._page_size))
        lost = self._feed(job, writer, copies, retract)
        self._finish(job, success=PushStatus.RETRACTED, lost=lost)

    def _run_edit(self, job: Job) -> None:
        push = load_push(self._factory, job.uuid)
        if self._handled_elsewhere(job, push.status):
            return
        job.tally.set_baseline(ledger_baseline(self._factory, job.uuid, JobKind.EDIT))
        if job.stop_signal.is_set() or push.status != PushStatus.EDITING:
            self._finish(job, success=None, stored=push.status)
            return
        if push.edited_text is None:
            raise RuntimeError("the push is being edited but no corrected text is stored")
        edit = CopyEdit(
            push.edited_text,
            MessageEntity.de_list(list(push.edited_entities), None),
            caption=push.content_type != "text",
        )
        writer = self._writer(job, queries.record_edits, _describe_edit)
        edit_copy = self._delivery.edit_copy

        def correct(copy: tuple[int, int]) -> None:
            edit_copy(job, writer, copy[0], copy[1], edit)

        copies = self._while_leased(job, copies_to_edit(self._factory, job.uuid, self._page_size))
        lost = self._feed(job, writer, copies, correct)
        self._finish(job, success=PushStatus.DONE, lost=lost)

    def _writer(
        self,
        job: Job,
        record: Callable[[Session, UUID, Any], None],
        describe: Callable[[Any], object],
    ) -> OutcomeWriter[Any]:
        def write(session: Session, batch: Any) -> None:
            record(session, job.uuid, batch)

        return OutcomeWriter(
            name=f"{job.kind}-{str(job.uuid)[:8]}",
            session_factory=self._factory,
            write=write,
            slots=self._workers,
            pacer=self._gateway.pacer_for(job.paid),
            batch_size=self._flush_batch,
            interval=self._flush_interval,
            close_deadline=self._close_deadline,
            describe_outcome=describe,
        )

    def _feed(
        self,
        job: Job,
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
                if not writer.take_slot(job.stop_signal):
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
        job: Job,
        success: PushStatus | None,
        lost: int = 0,
        stored: str | None = None,
    ) -> None:
        """Decide how the job ended; store `success` unless someone stopped it first."""
        if lost:
            job.conclude(JobState.FAILED, f"could not record {lost} outcomes")
        elif success is None:
            job.conclude(_state_for_stored_status(stored))
        else:

            def persist() -> None:
                store_status(self._factory, job.uuid, success)

            job.conclude(JobState(success.value), persist=persist)

    # --- the lease ---------------------------------------------------------------------------

    def _wait_for_lease(self, job: Job) -> bool:
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
            if job.stop_signal.wait(POLL_INTERVAL):
                return True

    def _mirror_ledger(self, job: Job) -> bool:
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

    def _refresh_baseline(self, job: Job) -> None:
        job.tally.set_baseline(ledger_baseline(self._factory, job.uuid, job.kind))

    def _handled_elsewhere(self, job: Job, status: str | None) -> bool:
        """End the job (as HANDLED_ELSEWHERE, which reports nothing) if its push is not in
        the status it expected and nobody in this process stopped it: another process ran,
        finished, paused, cancelled or retracted it meanwhile."""
        if status == job.expects:
            return False
        # A stop asked here persists its status before the job's stage changes, under the
        # job's lock: such a status is this process's own doing.
        if not job.end_handled_elsewhere():
            return False
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

    def _watch_lease(self, job: Job) -> Callable[[], None]:
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

    def _keep_watching_lease(self, job: Job, done: threading.Event) -> None:
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
                    job.expects,
                )
                job.ask_to_stop(JobState.INTERRUPTED)
                self._lease_confirmed.set()  # the feeder then sees the stop at once
                return
            if not self._lease_confirmed.is_set():
                logger.info("%s job of push %s carries on: lease held", job.kind, job.uuid)
                self._lease_confirmed.set()
            interval = CHECK_INTERVAL
            try:
                status = load_push(self._factory, job.uuid).status
            except (SQLAlchemyError, UnknownPush):
                continue
            if status != job.expects and job.ask_to_stop(JobState.HANDLED_ELSEWHERE):
                # (Refused if this process stopped or finished the job itself.)
                logger.warning(
                    "%s job of push %s stops: another process made the push %s",
                    job.kind,
                    job.uuid,
                    status,
                )
                return

    def _while_leased(self, job: Job, items: Iterator[T]) -> Iterator[T]:
        """Feed items only while the lease is confirmed: a holder whose database connection
        broke sends nothing new until it knows that it still holds the lease."""
        for item in items:
            while not self._lease_confirmed.is_set():
                if job.stop_signal.is_set():
                    return
                self._lease_confirmed.wait(RECHECK_INTERVAL)
            yield item


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


def _describe_edit(outcome: queries.EditOutcome) -> object:
    return (outcome.chat_id, outcome.status, outcome.error)
