"""What the engine tells the outside world about a job: live `Progress` and the final `JobReport`.

Counts are cumulative over the push's whole life (a resumed job starts from what the ledger
already holds); `elapsed` and the rates are those of the current run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from pushbot.broadcast.errors import PURGE_REASONS

if TYPE_CHECKING:
    from pushbot.db.queries import PushCounts

RATE_WINDOW_SECONDS = 10


class JobKind(StrEnum):
    PUSH = "push"
    RETRACT = "retract"
    EDIT = "edit"  # /edit: correct the text (or caption) of every delivered copy


class JobState(StrEnum):
    """Values shared with `PushStatus` mean the same thing (the bot layer compares them)."""

    RUNNING = "running"
    PAUSED = "paused"  # by an admin, or stopped by a fatal error (see `error`)
    CANCELLED = "cancelled"
    DONE = "done"
    RETRACTED = "retracted"
    # The engine shut down mid-job: the push stays running/retracting in the ledger and the
    # next start resumes it.
    INTERRUPTED = "interrupted"
    # A push stopped because /undo asked to retract it; a retract job follows at once.
    SUPERSEDED = "superseded"
    # The job itself broke (e.g. the database was unreachable at its start); the ledger
    # still says running, so the next start retries it.
    FAILED = "failed"
    # Another process of the bot ran this job, or changed its push, meanwhile (see
    # pushbot.broadcast.lease): this run sent nothing more and has nothing to report.
    HANDLED_ELSEWHERE = "handled_elsewhere"


@dataclass(frozen=True)
class Progress:
    uuid: UUID
    kind: JobKind
    state: JobState
    total: int  # recipients (push), copies to delete (retract) or to correct (edit)
    done: int  # sent + failed + unchanged
    sent: int  # delivered (push), removed, including already gone (retract), edited (edit)
    failed: int
    left: int
    failed_by_reason: dict[str, int]
    purged: int
    elapsed: float  # seconds since this run started
    rate: float  # outcomes per second over the last few seconds
    eta_seconds: float | None  # None when unknown (nothing done yet, or paused)
    started_at: datetime
    flood_wait: float = 0.0  # seconds left on Telegram's retry_after, 0 when not throttled
    error: str | None = None  # why a job stopped by itself (e.g. "invalid token")
    # Since when Telegram has not answered (UTC): the job holds, nobody is charged for it.
    unreachable_since: datetime | None = None
    # False until the job has read its counts from the ledger: until then the zeros above
    # mean "not known yet", not "nobody to send to".
    counted: bool = True
    # Edit jobs: copies left as they were (deleted by the user, or already showing the
    # text), by why.
    unchanged_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def unchanged(self) -> int:
        return sum(self.unchanged_by_reason.values())

    @property
    def removed(self) -> int:
        """Retract jobs: copies deleted or already gone (same number as `sent`)."""
        return self.sent

    @property
    def is_active(self) -> bool:
        return self.state is JobState.RUNNING


@dataclass(frozen=True)
class JobReport:
    uuid: UUID
    kind: JobKind
    state: JobState
    total: int
    sent: int  # delivered (push) or removed (retract), cumulative
    failed: int
    failed_by_reason: dict[str, int]
    purged: int
    elapsed: float  # seconds this run took
    pace: float  # outcomes per second in this run
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    unchanged_by_reason: dict[str, int] = field(default_factory=dict)  # edit jobs

    @property
    def removed(self) -> int:
        return self.sent

    @property
    def unchanged(self) -> int:
        return sum(self.unchanged_by_reason.values())

    @property
    def left(self) -> int:
        return max(0, self.total - self.sent - self.failed - self.unchanged)


@dataclass(frozen=True)
class Baseline:
    """What the ledger already held when the run started."""

    total: int = 0
    sent: int = 0
    failed_by_reason: Mapping[str, int] = field(default_factory=dict)
    purged: int = 0
    unchanged_by_reason: Mapping[str, int] = field(default_factory=dict)

    @staticmethod
    def purged_among(failed_by_reason: Mapping[str, int]) -> int:
        """How many of these failures took the chat out of the audience."""
        return sum(n for reason, n in failed_by_reason.items() if reason in PURGE_REASONS)

    @classmethod
    def of(cls, kind: JobKind, counts: PushCounts) -> Baseline:
        """A push job counts recipients; a retraction counts the copies that were sent; an
        edit the copies of its round (delivered, not retracted)."""
        if kind is JobKind.EDIT:
            return cls(
                total=counts.retract_pending,  # every copy not retracted (see edit_pending)
                sent=counts.edited,
                failed_by_reason=counts.edit_failed_by_reason,
                unchanged_by_reason=counts.edit_unchanged_by_reason,
            )
        if kind is JobKind.RETRACT:
            return cls(
                total=counts.sent,
                sent=counts.retracted,
                failed_by_reason=counts.retract_failed_by_reason,
            )
        return cls(
            total=counts.total,
            sent=counts.sent,
            failed_by_reason=counts.failed_by_reason,
            purged=cls.purged_among(counts.failed_by_reason),
        )


class RateMeter:
    """Events per second over a sliding window of whole-second buckets: O(1) per event and
    no allocation, unlike a deque of timestamps."""

    def __init__(
        self, window: int = RATE_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self._window = window
        self._clock = clock
        self._counts = [0] * (window + 1)
        self._seconds = [-1] * (window + 1)
        self._started = clock()

    def add(self, n: int = 1) -> None:
        second = int(self._clock())
        slot = second % len(self._counts)
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += n

    def rate(self) -> float:
        now = self._clock()
        current = int(now)
        oldest = current - self._window
        total = sum(
            count
            for count, second in zip(self._counts, self._seconds, strict=True)
            if oldest < second <= current
        )
        # The current second is partial; a young run has not filled the window yet.
        span = min(now - self._started, self._window - 1 + (now - current))
        return total / span if span > 0.05 else 0.0


class JobTally:
    """Thread-safe counters of one run, updated by the workers as outcomes come in, and the
    run's clock. How the job stands (its `JobState`) is the job's (pushbot.broadcast.jobs);
    it is passed in when a `Progress` or the `JobReport` is made."""

    def __init__(
        self,
        uuid: UUID,
        kind: JobKind,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uuid = uuid
        self.kind = kind
        self._clock = clock
        self._lock = threading.Lock()
        self._total = 0
        self._sent = 0
        self._failed_by_reason: dict[str, int] = {}
        self._failed = 0
        self._purged = 0
        self._unchanged_by_reason: dict[str, int] = {}
        self._unchanged = 0
        self._counted = False
        self._done_this_run = 0
        self._started = clock()
        self._ended: float | None = None
        self.started_at = datetime.now(UTC)
        self._meter = RateMeter(clock=clock)

    def set_baseline(self, baseline: Baseline) -> None:
        with self._lock:
            self._total = baseline.total
            self._sent = baseline.sent
            self._failed_by_reason = dict(baseline.failed_by_reason)
            self._failed = sum(baseline.failed_by_reason.values())
            self._purged = baseline.purged
            self._unchanged_by_reason = dict(baseline.unchanged_by_reason)
            self._unchanged = sum(baseline.unchanged_by_reason.values())
            self._counted = True

    def succeeded(self) -> None:
        with self._lock:
            self._sent += 1
            self._done_this_run += 1
            self._meter.add()

    def failed(self, reason: str, purged: bool) -> None:
        with self._lock:
            self._failed += 1
            self._failed_by_reason[reason] = self._failed_by_reason.get(reason, 0) + 1
            if purged:
                self._purged += 1
            self._done_this_run += 1
            self._meter.add()

    def unchanged(self, reason: str) -> None:
        """Edit jobs: the copy needed no correction (deleted by the user, or it already
        showed the text)."""
        with self._lock:
            self._unchanged += 1
            self._unchanged_by_reason[reason] = self._unchanged_by_reason.get(reason, 0) + 1
            self._done_this_run += 1
            self._meter.add()

    def stop_clock(self) -> None:
        """The run is over as far as its time goes (it was asked to stop, or it ended):
        `elapsed` stays what it is now. Later calls change nothing."""
        with self._lock:
            if self._ended is None:
                self._ended = self._clock()

    def progress(
        self,
        state: JobState = JobState.RUNNING,
        error: str | None = None,
        flood_wait: float = 0.0,
        unreachable_since: datetime | None = None,
    ) -> Progress:
        running = state is JobState.RUNNING
        with self._lock:
            elapsed = self._elapsed()
            done = self._sent + self._failed + self._unchanged
            left = max(0, self._total - done)
            rate = self._meter.rate() if running else 0.0
            return Progress(
                uuid=self.uuid,
                kind=self.kind,
                state=state,
                total=self._total,
                done=done,
                sent=self._sent,
                failed=self._failed,
                left=left,
                failed_by_reason=dict(self._failed_by_reason),
                purged=self._purged,
                elapsed=elapsed,
                rate=rate,
                eta_seconds=left / rate if rate > 0 else (0.0 if left == 0 else None),
                started_at=self.started_at,
                flood_wait=flood_wait if running else 0.0,
                error=error,
                unreachable_since=unreachable_since if running else None,
                counted=self._counted,
                unchanged_by_reason=dict(self._unchanged_by_reason),
            )

    def report(self, state: JobState, error: str | None = None) -> JobReport:
        with self._lock:
            elapsed = self._elapsed()
            return JobReport(
                uuid=self.uuid,
                kind=self.kind,
                state=state,
                total=self._total,
                sent=self._sent,
                failed=self._failed,
                failed_by_reason=dict(self._failed_by_reason),
                purged=self._purged,
                elapsed=elapsed,
                pace=self._done_this_run / elapsed if elapsed > 0 else 0.0,
                started_at=self.started_at,
                finished_at=datetime.now(UTC),
                error=error,
                unchanged_by_reason=dict(self._unchanged_by_reason),
            )

    def _elapsed(self) -> float:
        end = self._ended if self._ended is not None else self._clock()
        return end - self._started
