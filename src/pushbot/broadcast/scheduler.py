"""The scheduler: starts every `scheduled` push once it is due, exactly once, in one thread.

It belongs to the broadcast service (`BroadcastService.start_scheduler`), which `pushbot run`
starts after resuming interrupted jobs; the bot only hears of what happened (`ScheduleEvent`,
handed to a listener in the scheduler's thread) and tells the admin.

* Due pushes start oldest first, through the service's `start_scheduled`: a compare-and-set
  of `scheduled` → `running` (pushbot.db.queries.change_push_status), so of two processes
  that see the same push due, one starts it and the other finds it started.
* While another broadcast runs, here or in another process (the broadcast lease), a due push
  waits: the listener hears so once per push, and the scheduler looks again every
  `busy_poll` seconds.
* A push found overdue by the first look after start-up was due while the bot was down (or
  could not reach its database); one that starts more than `late_after` after its time is
  reported late, with the reason.

It sleeps until the next push is due, at most `poll_interval` seconds (pushes scheduled by
another process, `pushbot push --at`, are seen within that), and is woken by `wake()` when a
push is scheduled here. Time is the injected `clock` (aware datetimes), so tests move it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from sqlalchemy.exc import SQLAlchemyError

from pushbot.broadcast.control import BroadcastBusy, BroadcastError
from pushbot.broadcast.jobs import JobHandle
from pushbot.broadcast.progress import Progress
from pushbot.db.queries import PushSummary

logger = logging.getLogger(__name__)

POLL_INTERVAL = 5.0
BUSY_POLL_INTERVAL = 2.0
# Later than this after its time, a start is reported as late (polling alone stays far below).
LATE_AFTER = timedelta(seconds=60)


class NotScheduled(BroadcastError):
    """The push is no longer `scheduled`: started (here or elsewhere), or cancelled."""

    def __init__(self, push_uuid: UUID, status: str | None) -> None:
        super().__init__(f"push {push_uuid} is not scheduled (status: {status})")
        self.uuid = push_uuid
        self.status = status


class LateReason(StrEnum):
    BOT_WAS_DOWN = "bot_was_down"  # overdue when the bot started
    WAITED = "waited"  # another broadcast ran at its time


@dataclass(frozen=True)
class ScheduledStart:
    """A scheduled push started; `push` is as it was scheduled (its status message there)."""

    push: PushSummary
    handle: JobHandle
    late_by: timedelta | None = None  # None: on time
    reason: LateReason | None = None


@dataclass(frozen=True)
class ScheduledWait:
    """A due push waits for another broadcast (`busy`) to end. Heard once per push."""

    push: PushSummary
    busy: Progress


ScheduleEvent = ScheduledStart | ScheduledWait
ScheduleListener = Callable[[ScheduleEvent], None]


class ScheduledPushes(Protocol):
    """What the scheduler needs of the broadcast service."""

    def due_scheduled(self, now: datetime) -> list[PushSummary]: ...

    def next_scheduled_at(self) -> datetime | None: ...

    def start_scheduled(self, push_uuid: UUID) -> JobHandle: ...


class Scheduler:
    def __init__(
        self,
        pushes: ScheduledPushes,
        clock: Callable[[], datetime],
        listener: ScheduleListener,
        *,
        poll_interval: float = POLL_INTERVAL,
        busy_poll: float = BUSY_POLL_INTERVAL,
        late_after: timedelta = LATE_AFTER,
    ) -> None:
        self._pushes = pushes
        self._clock = clock
        self._listener = listener
        self._poll_interval = poll_interval
        self._busy_poll = busy_poll
        self._late_after = late_after
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._told_waiting: set[UUID] = set()
        self._overdue_at_start: set[UUID] = set()
        self._looked_once = False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pushbot-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def wake(self) -> None:
        """Look again now (a push was scheduled, or the clock moved)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            timeout = self._poll_interval
            try:
                next_due, waiting = self.look()
            except SQLAlchemyError as exc:
                logger.warning("the scheduler cannot read the database: %s", exc)
            except Exception:
                # A bug must not end the thread: every later push would silently stay put.
                logger.exception("the scheduler's look failed; it looks again shortly")
            else:
                if waiting:
                    timeout = self._busy_poll
                elif next_due is not None:
                    until = (next_due - self._clock()).total_seconds()
                    timeout = min(self._poll_interval, max(until, 0.0))
            self._wake.wait(timeout)
            self._wake.clear()

    def look(self) -> tuple[datetime | None, bool]:
        """One look: start what is due; returns when the next push is due and whether a due
        one waits. The thread's loop; tests call it directly, on a clock of their own."""
        now = self._clock()
        due = self._pushes.due_scheduled(now)
        if not self._looked_once:
            self._overdue_at_start = {p.uuid for p in due if now - _due(p) > self._late_after}
            self._looked_once = True
        for push in due:
            if self._stopping.is_set():
                return None, False
            if not self._start(push):
                return None, True
        return self._pushes.next_scheduled_at(), False

    def _start(self, push: PushSummary) -> bool:
        """Start one due push; False when it has to wait for another broadcast."""
        try:
            handle = self._pushes.start_scheduled(push.uuid)
        except BroadcastBusy as busy:
            if push.uuid not in self._told_waiting:
                self._told_waiting.add(push.uuid)
                logger.info("scheduled push %s is due and waits for %s", push.uuid, busy.active)
                self._tell(ScheduledWait(push, busy.active))
            return False
        except NotScheduled:
            return True  # cancelled, or started by another process meanwhile
        except (BroadcastError, SQLAlchemyError):
            logger.exception("could not start scheduled push %s", push.uuid)
            return True
        late_by = self._clock() - _due(push)
        late = late_by > self._late_after
        reason: LateReason | None = None
        if late and push.uuid in self._overdue_at_start:
            reason = LateReason.BOT_WAS_DOWN
        elif late and push.uuid in self._told_waiting:
            reason = LateReason.WAITED
        logger.info("scheduled push %s started (%s late)", push.uuid, late_by)
        self._told_waiting.discard(push.uuid)
        self._overdue_at_start.discard(push.uuid)
        self._tell(ScheduledStart(push, handle, late_by if late else None, reason))
        return True

    def _tell(self, event: ScheduleEvent) -> None:
        try:
            self._listener(event)
        except Exception:
            logger.exception("the schedule listener failed on %s", type(event).__name__)


def _due(push: PushSummary) -> datetime:
    assert push.scheduled_at is not None, "a scheduled push has its time"
    return push.scheduled_at
