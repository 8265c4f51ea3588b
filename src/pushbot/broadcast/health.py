"""Is Telegram answering at all? One breaker per bot token, shared by every sender.

A 502 or a timeout says nothing about the chat it was meant for when every other request
fails the same way: that is Telegram's state (an outage, our network), not the recipient's.
So the breaker decides two things:

* **holding**: after `trip_after` transient failures in a row with no answer in between,
  Telegram is *down*: every sender waits, and one probe at a time goes out on an
  exponential back-off (1 s, 2 s, 4 s … up to `backoff_cap`). A probe is first `getMe`,
  where the caller has one (see `TelegramGateway.set_probes`): while that fails, no
  recipient's request goes out at all. Once it answers, one waiting request goes out as
  the probe; its answer (success, or one about its chat such as 403 or 429) ends the hold.
* **charging**: a transient failure counts as one of the recipient's attempts only when
  Telegram is seen answering: a chat request was answered within the last `charge_window`
  seconds, or the failure was a probe sent after `getMe` answered. So an outage of any
  length costs a recipient at most the one attempt that was in flight when it began, while
  a chat that keeps failing when Telegram is fine is failed after its attempts.

Why not tenacity or a circuit-breaker package: those retry or trip one call site; this state
must be shared by worker threads and an event loop, charge attempts by what *other* requests
saw, and admit exactly one probe across both. It is small enough to own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

TRIP_AFTER_FAILURES = 5
CHARGE_WINDOW = 10.0
PROBE_BACKOFF_BASE = 1.0
# Short enough that a broadcast carries on within seconds of Telegram's return; a getMe
# every 10 s during an hour-long outage costs nothing.
PROBE_BACKOFF_CAP = 10.0
# A probe that never reports back (its sender was cancelled) must not hold everyone forever.
PROBE_STALE_AFTER = 120.0
# Waiting threads re-check their stop event this often while Telegram is down.
WAIT_SLICE = 0.25


@dataclass(frozen=True, slots=True)
class Admission:
    """What `TelegramHealth.admit` decided: send now (maybe as the probe), or wait."""

    wait: float
    probe: bool = False


ADMITTED = Admission(0.0)


class TelegramHealth:
    """Thread-safe; the async callers poll `admit()` with short sleeps."""

    def __init__(
        self,
        *,
        trip_after: int = TRIP_AFTER_FAILURES,
        backoff_base: float = PROBE_BACKOFF_BASE,
        backoff_cap: float = PROBE_BACKOFF_CAP,
        charge_window: float = CHARGE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if trip_after < 1:
            raise ValueError("trip_after must be at least 1")
        self._trip_after = trip_after
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._charge_window = charge_window
        self._clock = clock
        self._wall_clock = wall_clock
        self._changed = threading.Condition()
        self._last_answer_at = float("-inf")
        self._failures_in_a_row = 0
        self._down_since: datetime | None = None
        self._failed_probes = 0
        self._next_probe_at = 0.0
        self._probe_out_since: float | None = None

    # --- asking -----------------------------------------------------------------------------

    def down_since(self) -> datetime | None:
        """When Telegram stopped answering (UTC), or None while it answers."""
        with self._changed:
            return self._down_since

    @property
    def up(self) -> bool:
        """Whether Telegram answers (no hold), read without the lock: every request asks. A
        request that reads a stale answer while Telegram goes down is one more failure the
        hold counts."""
        return self._down_since is None

    def admit(self) -> Admission:
        """May a request go out now? While Telegram is down, only one probe at a time."""
        if self.up:
            return ADMITTED
        with self._changed:
            if self._down_since is None:
                return ADMITTED
            now = self._clock()
            probe_out = self._probe_out_since
            if probe_out is not None and now - probe_out < PROBE_STALE_AFTER:
                return Admission(WAIT_SLICE)
            if now < self._next_probe_at:
                return Admission(min(WAIT_SLICE, self._next_probe_at - now))
            self._probe_out_since = now
            return Admission(0.0, probe=True)

    def wait_admitted(self, stop: threading.Event | None = None) -> bool | None:
        """Block until admitted: True as the probe, False as an ordinary sender, None if
        `stop` was set first."""
        while True:
            if stop is not None and stop.is_set():
                return None
            admission = self.admit()
            if admission.wait <= 0:
                return admission.probe
            with self._changed:
                # Woken early when Telegram answers again.
                self._changed.wait(admission.wait)

    # --- telling ----------------------------------------------------------------------------

    def answered(self, probe: bool) -> None:
        """Telegram answered a chat request (success, or an answer about the chat)."""
        with self._changed:
            self._last_answer_at = self._clock()
            self._failures_in_a_row = 0
            if probe:
                self._probe_out_since = None
            if self._down_since is not None:
                outage = (self._wall_clock() - self._down_since).total_seconds()
                logger.warning("Telegram answers again after %.1f s: carrying on", outage)
                self._down_since = None
                self._failed_probes = 0
                self._changed.notify_all()

    def failed(self, probe: bool, verified: bool = False) -> bool:
        """A chat request failed transiently (5xx, timeout, connection error). Returns
        whether the failure counts against its recipient: only while Telegram is seen
        answering (`verified`: this probe went out after getMe answered)."""
        with self._changed:
            now = self._clock()
            recently_answered = now - self._last_answer_at <= self._charge_window
            charged = verified if probe else recently_answered
            self._failures_in_a_row += 1
            if probe:
                self._probe_failed_locked(now)
            elif self._down_since is None and self._failures_in_a_row >= self._trip_after:
                self._down_since = self._wall_clock()
                self._next_probe_at = now + self._backoff(1)
                logger.warning(
                    "Telegram is not answering (%d failures in a row): holding every request "
                    "and probing with back-off",
                    self._failures_in_a_row,
                )
            return charged

    def probe_unanswered(self) -> None:
        """getMe, asked while Telegram is down, got no answer either."""
        with self._changed:
            self._probe_failed_locked(self._clock())

    def _probe_failed_locked(self, now: float) -> None:
        self._probe_out_since = None
        self._failed_probes += 1
        self._next_probe_at = now + self._backoff(self._failed_probes)

    def abandoned(self, probe: bool) -> None:
        """An admitted request was given up before it got an outcome (its sender stopped)."""
        if probe:
            with self._changed:
                self._probe_out_since = None

    def _backoff(self, failed_probes: int) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (failed_probes - 1))
        # Some jitter, so that two bots on one network do not probe in lockstep.
        return random.uniform(0.8 * ceiling, ceiling)
