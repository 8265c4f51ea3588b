"""Request budgets of one bot token: the global `Pacer` and Telegram's per-chat limits.

Telegram counts every request of a token against the same ~30 messages/s, whichever thread
or event loop sends it, and each chat against its own ~1 message/s (20/minute in groups).
So there is exactly one `Pacer` per budget and one `ChatBudgets` per token, shared by the
broadcast worker threads and the Application (see `pushbot.broadcast.gateway`):

* pacing is GCRA in its reservation form: each caller books the next free slot under a lock
  and sleeps outside it, so threads and coroutines interleave fairly without a timer thread;
* `Pacer.block_for()` is the retry_after gate of a whole budget: it closes the pacer for
  everyone and pushes every later slot behind the gate so that the callers resume at the
  normal pace instead of as a burst. `ChatBudgets.block()` is the same for one chat.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from telegram.error import RetryAfter

# Telegram's documented soft limits: about 1 message/s in a private chat (short bursts are
# tolerated) and 20 messages/minute in a group. Private chats get 5 % of headroom: requests
# booked exactly 1 s apart can reach Telegram closer together when their latencies differ.
PRIVATE_CHAT_RATE = 1 / 1.05
PRIVATE_CHAT_BURST = 3
GROUP_CHAT_RATE = 20 / 60
GROUP_CHAT_BURST = 3
# Telegram's retry_after is a whole number of seconds rounded down; a little margin avoids
# a second 429 right at the edge.
RETRY_AFTER_MARGIN = 0.1
# An async caller this late for its slot books a new one (see Pacer.acquire_async), so that
# what falls due together after a stall stays within Telegram's burst of about 10: at most
# LATE_WAKE_BURST slots late, and never more than LATE_WAKE_REBOOK (0.25 s is 7 slots of the
# free budget; at 1,000/s it is 10 ms). Threads (`Pacer.acquire`, the engine's workers) take
# a slot only once it is due, so a late one never finds a backlog of slots to catch up.
LATE_WAKE_REBOOK = 0.25
LATE_WAKE_BURST = 10
# A thread that wakes late for its slot (GIL contention among 150 paid workers: measured,
# paid broadcasts ran at 94 % of 1,000/s) may take the slots it missed, up to this much
# time of them and at most LATE_WAKE_BURST: 10 slots at 1,000/s; at the free ~30/s, one.
THREAD_CATCH_UP = 0.01

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
CHAT_BUDGETS_SOFT_LIMIT = 1024


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
        self._late_rebook = min(LATE_WAKE_REBOOK, LATE_WAKE_BURST * self._interval)
        self._catch_up = max(self._interval, min(THREAD_CATCH_UP, LATE_WAKE_BURST * self._interval))
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

    def booked_ahead(self) -> float:
        """Seconds of slots booked ahead of now by `reserve` (the event loop's callers), not
        counting threads waiting in `acquire`, which take a slot only once it is due."""
        with self._lock:
            return max(0.0, self._theoretical_arrival - self._tolerance - self._clock())

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
        # theoretical time, unless the pacer had really been idle for a while (then at most
        # the slots of `_catch_up` seconds are made up, within Telegram's burst).
        start = max(self._theoretical_arrival, now - self._catch_up)
        self._theoretical_arrival = start + self._interval
        return 0.0

    async def acquire_async(self) -> None:
        """Wait without blocking the event loop until the caller may send.

        The slot is booked ahead, so the Application's requests queue in order. A caller
        that wakes up well after its slot (the event loop was busy) books a new one at the
        back of the queue, once: after a stall every slot booked meanwhile falls due at once,
        and sent together they would go out as a burst Telegram answers with 429."""
        rebooked = False
        while True:
            wait = self.reserve()
            late = 0.0
            if wait > 0:
                due_at = self._clock() + wait
                await asyncio.sleep(wait)
                late = self._clock() - due_at
            if self._gate_closed_at_slot():
                continue  # a 429 closed the gate after the slot was booked: queue behind it
            if late > self._late_rebook and not rebooked:
                rebooked = True
                continue
            return


def retry_after_seconds(exc: RetryAfter) -> float:
    """`exc.retry_after` in seconds, whichever type ptb hands out (int, or timedelta with
    PTB_TIMEDELTA, which pushbot sets at import)."""
    value: object = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)  # type: ignore[arg-type]


class ChatBudgets:
    """Telegram's per-chat limits for every chat of a token: one GCRA slot time per chat.

    A plain dict of floats under one lock rather than a `Pacer` per chat: a broadcast
    touches every chat once, and tens of thousands of two-lock objects would cost memory
    and time for nothing. `reserve()` books the chat's next slot and says how long to wait
    for it; `block()` is a 429 about that one chat.
    """

    def __init__(
        self,
        private_rate: float = PRIVATE_CHAT_RATE,
        private_burst: int = PRIVATE_CHAT_BURST,
        group_rate: float = GROUP_CHAT_RATE,
        group_burst: int = GROUP_CHAT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(private_rate, group_rate) <= 0 or min(private_burst, group_burst) < 1:
            raise ValueError("chat rates must be positive and bursts at least 1")
        self._private = (1.0 / private_rate, (private_burst - 1) / private_rate)
        self._group = (1.0 / group_rate, (group_burst - 1) / group_rate)
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[int | str, float] = {}  # theoretical arrival time per chat
        self._next_sweep_at = CHAT_BUDGETS_SOFT_LIMIT

    def __len__(self) -> int:
        return len(self._next)

    def reserve(self, key: int | str | None) -> float:
        """Book the chat's next slot; seconds to wait before using it (0 = now)."""
        if key is None:
            return 0.0
        interval, tolerance = self._shape(key)
        with self._lock:
            now = self._clock()
            arrival = self._next.get(key, now)
            allowed_at = max(now, arrival - tolerance)
            self._next[key] = max(arrival, allowed_at) + interval
            if len(self._next) > self._next_sweep_at:
                self._forget_idle_locked(now)
            return allowed_at - now

    def block(self, key: int | str | None, seconds: float) -> None:
        """Telegram said this chat must wait `seconds`: no slot of it before then."""
        if key is None:
            return
        _, tolerance = self._shape(key)
        with self._lock:
            until = self._clock() + max(0.0, seconds) + tolerance
            self._next[key] = max(self._next.get(key, until), until)

    def wait_time(self, key: int | str | None) -> float:
        """Seconds until the chat's next slot, without booking it."""
        if key is None:
            return 0.0
        _, tolerance = self._shape(key)
        with self._lock:
            now = self._clock()
            return max(0.0, self._next.get(key, now) - tolerance - now)

    def _shape(self, key: int | str) -> tuple[float, float]:
        # Negative ids and @usernames are groups, supergroups or channels.
        return self._group if isinstance(key, str) or key < 0 else self._private

    def _forget_idle_locked(self, now: float) -> None:
        # A chat whose slot time is in the past has no memory worth keeping.
        for key in [k for k, arrival in self._next.items() if arrival <= now]:
            del self._next[key]
        # In a burst of new chats none is idle yet: sweep again only once the map doubled,
        # so the sweeps cost O(1) per request on average instead of O(chats).
        self._next_sweep_at = max(CHAT_BUDGETS_SOFT_LIMIT, 2 * len(self._next))


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
