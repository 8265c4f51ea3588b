"""One request budget per bot token, shared by broadcast worker threads and the Application.

Telegram counts every request of a token against the same ~30 messages/s, whichever thread
or event loop sends it, and answers a flood with 429 + `retry_after`, after which *every*
request of the token is refused for that long. So there is exactly one `Pacer` per token:

* pacing is GCRA in its reservation form: each caller books the next free slot under a lock
  and sleeps outside it, so threads and coroutines interleave fairly without a timer thread;
* `block_for()` is the retry_after gate: it closes the pacer for everyone, not only for the
  caller that got the 429, and pushes every later slot behind the gate so that the callers
  resume at the normal pace instead of as a burst.

`SharedRateLimiter` plugs the same Pacer into the Application's ExtBot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

logger = logging.getLogger(__name__)

# Telegram's documented soft limits: about 1 message/s in a private chat (short bursts are
# tolerated) and 20 messages/minute in a group.
PRIVATE_CHAT_RATE = 1.0
PRIVATE_CHAT_BURST = 3
GROUP_CHAT_RATE = 20 / 60
GROUP_CHAT_BURST = 3
DEFAULT_MAX_RETRIES = 3
# Telegram's retry_after is a whole number of seconds rounded down; a little margin avoids
# a second 429 right at the edge.
RETRY_AFTER_MARGIN = 0.1

# Requests that never wait: they send nothing to a chat, and delaying them hurts (a late
# callback answer leaves a spinner on the user's button; getUpdates is the bot's heartbeat).
UNPACED_ENDPOINTS = frozenset(
    {
        "getUpdates",
        "getMe",
        "answerCallbackQuery",
        "answerInlineQuery",
        "answerPreCheckoutQuery",
        "answerShippingQuery",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "logOut",
        "close",
    }
)
# Everything that posts, changes or removes a message in a chat spends the shared budget.
PACED_PREFIXES = ("send", "copy", "forward", "edit", "delete", "stop", "pin", "unpin")
PER_CHAT_PACERS_SOFT_LIMIT = 1024


class Pacer:
    """Thread-safe GCRA pacer with a global retry_after gate.

    `rate` is requests per second; `burst` is how many may go back to back after a quiet
    period (1 = strictly evenly spaced). All methods may be called from any thread; the
    async method never blocks its event loop.
    """

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self._clock = clock
        self._lock = threading.Lock()
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._burst = burst
        self._theoretical_arrival = clock()
        self._gate_until = 0.0
        self._turnstile = threading.Lock()
        self._queued = 0  # threads inside acquire(), waiting their turn or their slot

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    @property
    def burst(self) -> int:
        return self._burst

    def reserve(self) -> float:
        """Book the next slot; return how many seconds to wait before using it (0 = now)."""
        with self._lock:
            now = self._clock()
            earliest = max(now, self._gate_until)
            allowed_at = max(earliest, self._theoretical_arrival - self._tolerance)
            self._theoretical_arrival = max(self._theoretical_arrival, allowed_at) + self._interval
            return allowed_at - now

    def block_for(self, seconds: float) -> None:
        """Close the gate for everyone for `seconds` (Telegram's retry_after), from now."""
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            if until > self._gate_until:
                self._gate_until = until
            # Slots booked before the 429 would otherwise all fire the moment the gate opens.
            self._theoretical_arrival = max(self._theoretical_arrival, self._gate_until)

    def gate_remaining(self) -> float:
        """Seconds until the retry_after gate opens (0 when open)."""
        with self._lock:
            return max(0.0, self._gate_until - self._clock())

    def backlog(self) -> float:
        """Seconds the pacer alone keeps busy the callers that already asked: slots booked
        ahead of now plus one slot per thread queued in `acquire` behind the first."""
        with self._lock:
            booked = max(0.0, self._theoretical_arrival - self._tolerance - self._clock())
            return booked + max(0, self._queued - 1) * self._interval

    def idle(self) -> bool:
        """True when every booked slot is in the past and the gate is open."""
        with self._lock:
            now = self._clock()
            return self._theoretical_arrival <= now and self._gate_until <= now

    def _gate_closed_at_slot(self) -> bool:
        with self._lock:
            return self._gate_until > self._clock()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block the calling thread until it may send. Returns False if `stop` was set first.

        Threads queue in a turnstile and take a slot only once it is due, instead of each
        booking one ahead: with 30 workers that would keep a second of slots booked, and
        every reply the bot owes a user (booked through `acquire_async`) would wait behind
        them. This way the Application's requests wait for one slot at most.
        """
        if stop is not None and stop.is_set():
            return False
        with self._lock:
            # Fast path: nobody waiting and the slot is due (always, when unpaced).
            if self._queued == 0 and self._take_if_due_locked() == 0.0:
                return True
            self._queued += 1
        try:
            return self._acquire_in_turn(stop)
        finally:
            with self._lock:
                self._queued -= 1

    def _acquire_in_turn(self, stop: threading.Event | None) -> bool:
        with self._turnstile:
            while True:
                if stop is not None and stop.is_set():
                    return False
                wait = self._take_if_due()
                if wait <= 0:
                    return True
                if stop is not None:
                    if stop.wait(wait):
                        return False
                else:
                    time.sleep(wait)

    def _take_if_due(self) -> float:
        """Take the next slot if it is due now (0.0), else say how long until it is."""
        with self._lock:
            return self._take_if_due_locked()

    def _take_if_due_locked(self) -> float:
        now = self._clock()
        allowed_at = max(now, self._gate_until, self._theoretical_arrival - self._tolerance)
        if allowed_at > now:
            return allowed_at - now
        # Waking a little late must not slow the pace down: count from the slot's
        # theoretical time, unless the pacer had really been idle for a while.
        start = max(self._theoretical_arrival, now - self._interval)
        self._theoretical_arrival = start + self._interval
        return 0.0

    async def acquire_async(self) -> None:
        """Wait without blocking the event loop until the caller may send."""
        while True:
            wait = self.reserve()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self._gate_closed_at_slot():
                return


def retry_after_seconds(exc: RetryAfter) -> float:
    """`exc.retry_after` in seconds, whichever type ptb hands out (int now, timedelta later)."""
    # Reading the attribute warns about the int→timedelta migration unless PTB_TIMEDELTA
    # is set; the private field has the value without the noise.
    value: object = getattr(exc, "_retry_after", None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    public = exc.retry_after
    return public.total_seconds() if isinstance(public, timedelta) else float(public)


class SharedRateLimiter(BaseRateLimiter[int]):
    """The Application's rate limiter, spending the same budget as the broadcaster.

    Why not ptb's `AIORateLimiter`: it has no per-chat limit for private chats (only for
    groups), makes no retries on RetryAfter by default, and its `aiolimiter` budget lives on
    the Application's event loop, so it cannot be shared with the broadcast worker threads
    that send on the same token; two separate budgets would together exceed Telegram's limit.

    Every sending/editing/deleting call waits for its chat's own pacer (≈1/s in private
    chats, 20/min in groups), then for the shared global Pacer. A RetryAfter closes the
    shared gate (pausing the broadcast too) and the request is retried up to `max_retries`
    times (`rate_limit_args` overrides it per call). getUpdates, getMe, callback answers and
    the like are never delayed.
    """

    __slots__ = (
        "_chat_pacers",
        "_chat_pacers_lock",
        "_group_burst",
        "_group_rate",
        "_max_retries",
        "_next_sweep_at",
        "_pacer",
        "_private_burst",
        "_private_rate",
    )

    def __init__(
        self,
        pacer: Pacer,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        private_chat_rate: float = PRIVATE_CHAT_RATE,
        private_chat_burst: int = PRIVATE_CHAT_BURST,
        group_chat_rate: float = GROUP_CHAT_RATE,
        group_chat_burst: int = GROUP_CHAT_BURST,
    ) -> None:
        self._pacer = pacer
        self._max_retries = max_retries
        self._private_rate = private_chat_rate
        self._private_burst = private_chat_burst
        self._group_rate = group_chat_rate
        self._group_burst = group_chat_burst
        self._chat_pacers: dict[int | str, Pacer] = {}
        self._chat_pacers_lock = threading.Lock()
        self._next_sweep_at = PER_CHAT_PACERS_SOFT_LIMIT

    @property
    def pacer(self) -> Pacer:
        return self._pacer

    async def initialize(self) -> None:
        """Nothing to set up: the Pacer needs no resources."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if not is_paced_endpoint(endpoint):
            return await callback(*args, **kwargs)
        max_retries = self._max_retries if rate_limit_args is None else rate_limit_args
        chat_pacer = self._pacer_for_chat(data.get("chat_id"))
        attempt = 0
        while True:
            if chat_pacer is not None:
                await chat_pacer.acquire_async()
            await self._pacer.acquire_async()
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                seconds = retry_after_seconds(exc) + RETRY_AFTER_MARGIN
                self._pacer.block_for(seconds)
                if attempt >= max_retries:
                    logger.warning(
                        "%s: flood control after %d retries, giving up", endpoint, max_retries
                    )
                    raise
                attempt += 1
                logger.info("%s: flood control, retrying in %.1f s", endpoint, seconds)

    def _pacer_for_chat(self, raw_chat_id: object) -> Pacer | None:
        key = chat_key(raw_chat_id)
        if key is None:
            return None
        with self._chat_pacers_lock:
            pacer = self._chat_pacers.get(key)
            if pacer is None:
                if len(self._chat_pacers) >= self._next_sweep_at:
                    self._forget_idle_chat_pacers()
                pacer = self._new_chat_pacer(key)
                self._chat_pacers[key] = pacer
            return pacer

    def _new_chat_pacer(self, key: int | str) -> Pacer:
        # Negative ids and @usernames are groups, supergroups or channels.
        if isinstance(key, str) or key < 0:
            return Pacer(self._group_rate, self._group_burst)
        return Pacer(self._private_rate, self._private_burst)

    def _forget_idle_chat_pacers(self) -> None:
        # An idle pacer has no memory worth keeping: a fresh one behaves the same.
        for key in [k for k, p in self._chat_pacers.items() if p.idle()]:
            del self._chat_pacers[key]
        # In a burst of new chats none is idle yet: sweep again only once the map doubled,
        # so the sweeps cost O(1) per request on average instead of O(chats).
        self._next_sweep_at = max(PER_CHAT_PACERS_SOFT_LIMIT, 2 * len(self._chat_pacers))


def is_paced_endpoint(endpoint: str) -> bool:
    return endpoint not in UNPACED_ENDPOINTS and endpoint.startswith(PACED_PREFIXES)


def chat_key(raw_chat_id: object) -> int | str | None:
    """Normalise a `chat_id` parameter (int, numeric string or @username) to a dict key."""
    if raw_chat_id is None or isinstance(raw_chat_id, bool):
        return None
    if isinstance(raw_chat_id, int):
        return raw_chat_id
    text = str(raw_chat_id)
    try:
        return int(text)
    except ValueError:
        return text.lower()
