"""The crash-safe delivery ledger: what the workers are fed and how their outcomes are stored.

* Recipients are inserted `pending` in one bulk insert at launch, so the ledger always knows
  who is still owed a copy; workers are fed keyset pages of them (never the whole list:
  100,000 recipients must not mean 100,000 rows in memory).
* Outcomes go to one writer thread that stores them in bulk (group commit): when a batch
  is full, when the oldest outcome is a second old, or at once when the senders are
  starved for slots.
* The crash bound: a send takes an "uncommitted" slot before it starts and gives it back
  only when its outcome is committed. With `slots` = number of workers, a SIGKILL can leave
  at most that many copies delivered-but-still-pending, which is all that a resume can send
  twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar
from uuid import UUID

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pushbot.broadcast.backoff import Backoff
from pushbot.broadcast.pacing import Pacer
from pushbot.db import queries

logger = logging.getLogger(__name__)

OutcomeT = TypeVar("OutcomeT")
ItemT = TypeVar("ItemT")

PAGE_SIZE = 1000
FLUSH_BATCH = 300
FLUSH_INTERVAL = 1.0
# While senders wait for slots, the writer still lets outcomes pile up as long as the pacer
# keeps the senders busy for longer than this (a flush is a few ms), so that a paced
# broadcast commits a couple of times a second rather than once per message.
MIN_FLUSH_SLACK = 0.05
# Unpaced (limits lifted, paid broadcasts) outcomes arrive faster than a transaction per
# outcome can be afforded: a commit costs ~1 ms of Python (GIL) time, about half a send. So a
# starved writer still waits for half of the slots, or for STARVED_HOLD at most. Measured on
# loopback: flushing at a quarter of 30 slots cost ~20% throughput, at half ~5%, because the
# event loop thread (the bottleneck) loses less GIL time and scans a smaller httpx pool.
STARVED_BATCH_FRACTION = 2
STARVED_HOLD = 0.05
FLUSH_RETRY_FIRST_DELAY = 0.5
FLUSH_RETRY_MAX_DELAY = 30.0
# Failed commits and failed page reads wait 0.5 s, 1 s, 2 s … at most 30 s before retrying.
RETRY_BACKOFF = Backoff(FLUSH_RETRY_FIRST_DELAY, FLUSH_RETRY_MAX_DELAY)
CLOSE_DEADLINE = 30.0
READ_ATTEMPTS = 3
LOST_IDS_SHOWN = 50


def follow_to_supergroup(
    factory: sessionmaker[Session], push_uuid: UUID, old_chat_id: int, new_chat_id: int
) -> bool:
    """A recipient group became a supergroup: move its pending row (and the chat's record)
    to the new id, committed before the copy goes there, so that a crash resumes with the
    new id. False when the new id has its own row in this push or the database refused:
    the old row is then recorded as failed ("migrated to supergroup"), never purged."""
    try:
        with factory.begin() as session:
            return queries.move_recipient(session, push_uuid, old_chat_id, new_chat_id)
    except SQLAlchemyError:
        logger.exception("could not move chat %s to %s", old_chat_id, new_chat_id)
        return False


def pending_recipients(
    session_factory: sessionmaker[Session], push_uuid: UUID, page_size: int = PAGE_SIZE
) -> Iterator[int]:
    """Chat ids still owed this push, in id order, one short read transaction per page."""

    def page(after: int | None) -> list[int]:
        with session_factory.begin() as session:
            return queries.pending_chat_ids(session, push_uuid, after, page_size)

    return _keyset_pages(page, lambda chat_id: chat_id, page_size)


def copies_to_delete(
    session_factory: sessionmaker[Session], push_uuid: UUID, page_size: int = PAGE_SIZE
) -> Iterator[tuple[int, int]]:
    """(chat_id, message_id) of delivered copies not yet retracted, in chat id order."""

    def page(after: int | None) -> list[tuple[int, int]]:
        with session_factory.begin() as session:
            return queries.sent_copies(session, push_uuid, after, page_size)

    return _keyset_pages(page, lambda copy: copy[0], page_size)


def copies_to_edit(
    session_factory: sessionmaker[Session], push_uuid: UUID, page_size: int = PAGE_SIZE
) -> Iterator[tuple[int, int]]:
    """(chat_id, message_id) of delivered copies the current /edit round has not reached yet
    (not retracted), in chat id order."""

    def page(after: int | None) -> list[tuple[int, int]]:
        with session_factory.begin() as session:
            return queries.copies_to_edit(session, push_uuid, after, page_size)

    return _keyset_pages(page, lambda copy: copy[0], page_size)


def _keyset_pages(
    fetch: Callable[[int | None], list[ItemT]],
    chat_id_of: Callable[[ItemT], int],
    page_size: int,
) -> Iterator[ItemT]:
    # Rows already handed out may still be pending while their outcome is in flight; the
    # cursor moves past them, so nobody is handed out twice within a run.
    after: int | None = None
    while True:
        rows = _read_with_retries(fetch, after)
        yield from rows
        if len(rows) < page_size:
            return
        after = chat_id_of(rows[-1])


def _read_with_retries(
    fetch: Callable[[int | None], list[ItemT]], after: int | None
) -> list[ItemT]:
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return fetch(after)
        except Exception as exc:
            if attempt == READ_ATTEMPTS:
                raise
            logger.warning("ledger read failed (attempt %d), retrying: %s", attempt, exc)
            time.sleep(RETRY_BACKOFF.delay(attempt))
    raise AssertionError("unreachable")


class OutcomeWriter(Generic[OutcomeT]):
    """One writer thread per job: group commit of outcomes and the uncommitted-sends bound.

    Senders call `take_slot()` before a send, then exactly one of `submit(outcome)` (the
    slot comes back when the outcome is committed) or `give_back_slot()` (nothing was
    recorded: stopped before sending, or abandoned mid-retry).
    """

    def __init__(
        self,
        *,
        name: str,
        session_factory: sessionmaker[Session],
        write: Callable[[Session, Sequence[OutcomeT]], None],
        slots: int,
        pacer: Pacer | None = None,
        batch_size: int = FLUSH_BATCH,
        interval: float = FLUSH_INTERVAL,
        close_deadline: float = CLOSE_DEADLINE,
        describe_outcome: Callable[[OutcomeT], object] = repr,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._name = name
        self._factory = session_factory
        self._write = write
        self._slots = slots
        self._starved_batch = max(1, slots // STARVED_BATCH_FRACTION)
        self._pacer = pacer
        self._batch_size = batch_size
        self._interval = interval
        self._close_deadline = close_deadline
        self._describe = describe_outcome
        # One lock, two wake-up lists: the writer is not woken for every slot handed back
        # and the feeder not for every outcome handed in (each needless wake-up costs GIL
        # time on the event loop's critical path).
        self._lock = threading.Lock()
        self._writer_wake = threading.Condition(self._lock)
        self._slots_back = threading.Condition(self._lock)
        self._free = slots
        self._outstanding = 0  # slots taken whose send has not answered yet
        self._awaiting_senders = False  # wait_for_senders() is waiting for _outstanding == 0
        self._buffer: list[OutcomeT] = []
        self._oldest_at = 0.0
        self._starved = False
        self._closing = False
        self._give_up_at: float | None = None
        self._last_flush_seconds = 0.0
        self._flush_seconds = 0.0
        self._committed = 0
        self._flushes = 0
        self._lost = 0
        bind = session_factory.kw.get("bind")
        # PostgreSQL only: there a checkout costs a round trip (see _write_in_one_transaction).
        postgres = isinstance(bind, Engine) and bind.dialect.name == "postgresql"
        self._engine: Engine | None = bind if postgres else None
        self._connection: Connection | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)

    # --- sender side ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def take_slot(self, stop: threading.Event) -> bool:
        """Block until fewer than `slots` sends are uncommitted; False if `stop` is set."""
        with self._lock:
            if self._free == 0:
                self._starved = True
                self._writer_wake.notify()  # it may want to flush now rather than later
                while self._free == 0:
                    if stop.is_set():
                        self._starved = False
                        return False
                    # The stop event cannot wake a Condition: poll it, only while starved.
                    self._slots_back.wait(0.1)
                self._starved = False
            if stop.is_set():
                return False
            self._free -= 1
            self._outstanding += 1
            return True

    def give_back_slot(self) -> None:
        with self._lock:
            self._free += 1
            self._outstanding -= 1
            self._slots_back.notify_all()

    def submit(self, outcome: OutcomeT) -> None:
        with self._lock:
            self._outstanding -= 1
            if not self._outstanding and self._awaiting_senders:
                self._slots_back.notify_all()
            self._buffer.append(outcome)
            size = len(self._buffer)
            if size == 1:
                self._oldest_at = time.monotonic()
            # Wake the writer only when its decision may change, not for every outcome.
            if (
                size == 1
                or size >= self._batch_size
                or (self._starved and size >= self._starved_batch)
            ):
                self._writer_wake.notify()

    # --- lifecycle -------------------------------------------------------------------------

    def wait_for_senders(self) -> None:
        """Wait until every slot taken has been answered by `submit` or `give_back_slot`."""
        with self._lock:
            self._awaiting_senders = True
            while self._outstanding:
                self._slots_back.wait(0.1)

    def close(self) -> int:
        """Flush what is left and stop the thread; returns how many outcomes were lost
        (the database stayed unreachable past the deadline; each was logged)."""
        with self._lock:
            self._closing = True
            self._give_up_at = time.monotonic() + self._close_deadline
            self._writer_wake.notify()
        if self._thread.is_alive():
            self._thread.join()
        self._drop_connection()
        if self._flushes:
            logger.debug(
                "%s: %d outcomes in %d commits, %.1f ms per commit",
                self._name,
                self._committed,
                self._flushes,
                1000 * self._flush_seconds / self._flushes,
            )
        return self._lost

    @property
    def committed(self) -> int:
        return self._committed

    @property
    def flushes(self) -> int:
        return self._flushes

    @property
    def senders_waiting(self) -> bool:
        """A sender is blocked in take_slot until outcomes are committed."""
        with self._lock:
            return self._starved

    @property
    def uncommitted(self) -> int:
        """Sends under way or awaiting commit (never more than `slots`)."""
        with self._lock:
            return self._slots - self._free

    # --- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    due, timeout = self._flush_due()
                    if due:
                        break
                    if self._closing and not self._buffer:
                        return
                    self._writer_wake.wait(timeout)
                batch, self._buffer = self._buffer, []
            committed = self._commit(batch)
            with self._lock:
                self._free += len(batch)
                if committed:
                    self._committed += len(batch)
                    self._flushes += 1
                self._slots_back.notify_all()

    def _flush_due(self) -> tuple[bool, float | None]:
        """Whether to flush now; otherwise how long to sleep before asking again."""
        if not self._buffer:
            return False, None
        if self._closing or len(self._buffer) >= self._batch_size:
            return True, None
        wait = self._oldest_at + self._interval - time.monotonic()
        if wait <= 0:
            return True, None
        if self._starved and self._free == 0:
            if len(self._buffer) >= self._starved_batch:
                return True, None
            slack = max(MIN_FLUSH_SLACK, 2 * self._last_flush_seconds)
            backlog = self._pacer.backlog() if self._pacer is not None else 0.0
            if backlog > slack:
                # The pacer, not the ledger, holds the senders back: let outcomes gather.
                return False, min(wait, backlog - slack)
            hold = self._oldest_at + STARVED_HOLD - time.monotonic()
            if hold <= 0:
                return True, None
            wait = min(wait, hold)
        return False, wait

    def _commit(self, batch: list[OutcomeT]) -> bool:
        attempt = 0
        fresh_connection_tried = False
        while True:
            started = time.monotonic()
            try:
                self._write_in_one_transaction(batch)
                break
            except Exception as exc:
                held = self._drop_connection()
                if (
                    held
                    and not fresh_connection_tried
                    and isinstance(exc, DBAPIError)
                    and exc.connection_invalidated
                ):
                    # The connection this writer held went away (a database restart):
                    # once more at once, on a fresh one, as the pool's pre-ping would.
                    logger.debug("%s: its database connection was closed; reconnecting", self._name)
                    fresh_connection_tried = True
                    continue
                failure = exc
            attempt += 1
            self._report_write_error(failure, len(batch), attempt)
            if self._must_give_up():
                self._report_lost(batch)
                return False
            self._sleep_before_retry(attempt)
        self._last_flush_seconds = time.monotonic() - started
        self._flush_seconds += self._last_flush_seconds
        if attempt:
            logger.warning(
                "%s: recorded %d outcomes after %d failed attempts",
                self._name,
                len(batch),
                attempt,
            )
        return True

    def _write_in_one_transaction(self, batch: list[OutcomeT]) -> None:
        """On PostgreSQL, on the writer's own connection, held from one commit to the next:
        a checkout from the pool costs a round trip (its pre-ping) and some Python, and a
        fast broadcast commits hundreds of times a second (measured: 13 % less time per
        commit of 22 outcomes)."""
        if self._engine is None:
            with self._factory.begin() as session:
                self._write(session, batch)
            return
        if self._connection is None:
            self._connection = self._engine.connect()
        with self._connection.begin(), self._factory(bind=self._connection) as session:
            self._write(session, batch)

    def _drop_connection(self) -> bool:
        """Give the held connection up (closed, back to the pool); whether there was one."""
        connection, self._connection = self._connection, None
        if connection is None:
            return False
        with contextlib.suppress(SQLAlchemyError):
            connection.close()
        return True

    def _report_write_error(self, exc: Exception, size: int, attempt: int) -> None:
        # Full traceback once per batch; later attempts are usually the same outage.
        logger.error(
            "%s: could not record %d outcomes (attempt %d), will retry: %s",
            self._name,
            size,
            attempt,
            exc,
            exc_info=attempt == 1,
        )

    def _must_give_up(self) -> bool:
        with self._lock:
            return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _sleep_before_retry(self, attempt: int) -> None:
        delay = RETRY_BACKOFF.delay(attempt)
        with self._lock:
            if self._give_up_at is not None:
                delay = max(0.0, min(delay, self._give_up_at - time.monotonic()))
            # close() notifies: a shutdown does not sit out a 30 s back-off.
            self._writer_wake.wait(delay)

    def _report_lost(self, batch: list[OutcomeT]) -> None:
        self._lost += len(batch)
        shown = ", ".join(str(self._describe(outcome)) for outcome in batch[:LOST_IDS_SHOWN])
        more = f" and {len(batch) - LOST_IDS_SHOWN} more" if len(batch) > LOST_IDS_SHOWN else ""
        logger.error(
            "%s: giving up on %d outcomes, the database stayed unreachable; their rows stay "
            "pending and a resume will try them again: %s%s",
            self._name,
            len(batch),
            shown,
            more,
        )
