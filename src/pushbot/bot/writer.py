"""Group commits for the bot's handlers: one writer thread, one transaction for whatever queued.

Every handler that writes (a /start's subscription, a /stop, a chat seen, a membership
change, the reply it owes) hands its write to `GroupCommitWriter.submit` and awaits the
future it gets back. The writer thread takes everything queued, applies it in one
transaction (`apply`, one statement per kind of write rather than one per write) and
commits; then every future of the batch learns its own result. A batch is whatever queued
while the previous one was being committed (at most `max_batch`), so an idle bot commits
each write at once and a busy one commits hundreds at a time: a transaction per update cost
~1.5 ms of CPU on PostgreSQL, most of it SQLAlchemy's and psycopg2's per-statement work.

Order: writes are applied in the order they were submitted, a later batch after an earlier
one; `apply` may reorder only writes about different chats.

Failures:
- the database unreachable, a lock timeout or deadlock, a serialisation failure (PEP 249's
  OperationalError / InterfaceError): the whole batch is rolled back and tried again after a
  back-off, for as long as it takes; callers just wait (nothing is lost, nothing is applied
  twice, since a rolled-back batch left nothing behind). If the database loses the
  connection in the very moment of the commit, the commit may have happened without the
  writer hearing of it; the retry then applies the batch again to rows already changed
  (the audience's writes are idempotent; their results, such as "new subscriber", then
  describe the second try);
- anything else (a bug, a value the database refuses): each write of the batch is tried
  alone, so only the faulty one fails (its caller gets the exception) and the others commit.

Why not a library: SQLAlchemy has no group commit, and asyncio-side batchers (aiostream,
asyncio-batcher and the like) stop at collecting items; the per-write futures, the
transaction, the retry of a whole batch and the isolation of a bad write are the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pushbot.broadcast.backoff import Backoff

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

MAX_BATCH = 1000
# A failed batch is tried again after 0.05 s, 0.1 s … at most 1 s: a database back from an
# outage is used again within a second.
RETRY_BACKOFF = Backoff(0.05, 1.0)
CLOSE_DEADLINE = 30.0


# A future and what it is to be set to (an exception is raised in its caller).
_Outcome = tuple["asyncio.Future[Any]", object]


class WriterClosed(RuntimeError):
    """The writer is shut down (or gave up at shutdown): the write was not applied."""


@dataclass(slots=True)
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]
    loop: asyncio.AbstractEventLoop


class GroupCommitWriter(Generic[ItemT, ResultT]):
    """`apply(session, items)` returns one result per item, in order, inside the writer's
    transaction; `submit(item)` (on any event loop) returns the future of the item's result,
    set once the transaction holding it committed."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        apply: Callable[[Session, Sequence[ItemT]], list[ResultT]],
        *,
        name: str = "pushbot-writer",
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._factory = factory
        self._apply = apply
        self._name = name
        self._max_batch = max_batch
        self._queue: deque[_Pending[ItemT, ResultT]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        # Whether the thread waits for work: only then does a submit notify (Condition.notify
        # is Python code; under load the thread finds the queue full on its own).
        self._idle = False
        self._closing = False
        self._give_up_at: float | None = None
        self._commits = 0
        self._written = 0

    @property
    def commits(self) -> int:
        """Transactions committed so far (for tests and benchmarks: writes per commit)."""
        return self._commits

    @property
    def written(self) -> int:
        return self._written

    def submit(self, item: ItemT) -> asyncio.Future[ResultT]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        with self._lock:
            if self._closing:
                raise WriterClosed(f"{self._name} is shut down")
            self._queue.append(_Pending(item, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._idle:
                self._idle = False  # one wake-up is enough until it waits again
                self._wake.notify()
        return future

    def close(self, deadline: float = CLOSE_DEADLINE) -> None:
        """Apply what is queued (trying for `deadline` seconds at most if the database is
        down; what is left then fails with WriterClosed) and stop the thread."""
        with self._lock:
            self._closing = True
            self._give_up_at = time.monotonic() + deadline
            thread = self._thread
            self._wake.notify_all()
        if thread is not None:
            thread.join(deadline + 5.0)

    # --- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                if not self._queue:
                    return
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            self._settle(batch, self._commit(batch))

    def _commit(self, batch: list[_Pending[ItemT, ResultT]]) -> list[ResultT | BaseException]:
        items = [pending.item for pending in batch]
        attempt = 0
        while True:
            try:
                with self._factory.begin() as session:
                    results: list[ResultT | BaseException] = list(self._apply(session, items))
            except Exception as exc:
                if not _is_transient(exc):
                    return self._commit_one_by_one(batch, exc)
                attempt += 1
                if not self._wait_before_retry(exc, len(items), attempt):
                    return [WriterClosed(f"{self._name}: gave up at shutdown: {exc}")] * len(items)
                continue
            if attempt:
                logger.warning(
                    "%s: committed %d writes after %d failed attempts",
                    self._name,
                    len(items),
                    attempt,
                )
            self._commits += 1
            self._written += len(items)
            return results

    def _commit_one_by_one(
        self, batch: list[_Pending[ItemT, ResultT]], cause: Exception
    ) -> list[ResultT | BaseException]:
        if len(batch) == 1:
            return [cause]
        logger.warning(
            "%s: a batch of %d writes failed (%s); committing them one by one",
            self._name,
            len(batch),
            cause,
        )
        outcomes: list[ResultT | BaseException] = []
        for pending in batch:
            outcomes += self._commit([pending])
        return outcomes

    def _wait_before_retry(self, exc: Exception, size: int, attempt: int) -> bool:
        """Sleep the back-off; False when shutting down and the deadline has passed."""
        # A traceback once per outage; later attempts are usually the same outage.
        logger.error(
            "%s: could not commit %d writes (attempt %d), will retry: %s",
            self._name,
            size,
            attempt,
            exc,
            exc_info=attempt == 1,
        )
        delay = RETRY_BACKOFF.delay(attempt)
        with self._lock:
            if self._give_up_at is not None:
                remaining = self._give_up_at - time.monotonic()
                if remaining <= 0:
                    return False
                delay = min(delay, remaining)
            self._wake.wait(delay)
        return True

    @staticmethod
    def _settle(
        batch: list[_Pending[ItemT, ResultT]], outcomes: list[ResultT | BaseException]
    ) -> None:
        """Hand the outcomes to their loops: one wake-up per loop and batch, not per write."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, settled in by_loop.items():
            # RuntimeError: that loop is closed, nobody waits for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_outcomes, settled)


def _set_outcomes(settled: list[_Outcome]) -> None:
    for future, outcome in settled:
        if future.done():
            continue  # the caller was cancelled (shutdown); the write stands regardless
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying the whole batch: the database could not be reached or used, or the
    transaction lost a lock conflict (deadlock, serialisation), not a bad write."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
