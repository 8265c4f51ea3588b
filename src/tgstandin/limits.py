"""Flood limits: Telegram's global, per-chat and per-group budgets as token buckets/windows.

All functions take `now` (time.monotonic()) so the caller reads the clock once per request,
and must be called with the world lock held.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    """Token bucket state; rate and burst live in `FloodLimiter` so they can change at runtime."""

    tokens: float
    stamp: float

    def refill(self, now: float, rate: float, burst: float) -> float:
        # Calls are counted when they reached "Telegram", which is not quite the order they
        # are handled in: a moment already counted past adds nothing (and takes nothing).
        if now > self.stamp:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
            self.stamp = now
        return self.tokens

    def wait_time(self, now: float, rate: float, burst: float) -> float:
        tokens = self.refill(now, rate, burst)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate


@dataclass
class LimitSettings:
    global_rate: float
    global_burst: int
    per_chat_rate: float
    per_chat_burst: int
    group_per_minute: int
    paid_rate: float
    paid_burst: int
    enabled: bool
    retry_after_penalty: int


GROUP_WINDOW = 60.0


class FloodLimiter:
    def __init__(self, settings: LimitSettings, now: float) -> None:
        self.settings = settings
        self._global = Bucket(settings.global_burst, now)
        self._paid = Bucket(settings.paid_burst, now)
        self._chats: dict[int | str, Bucket] = {}
        self._groups: dict[int | str, deque[float]] = {}

    def check(self, chat_key: int | str, is_group: bool, paid: bool, now: float) -> int | None:
        """Take one unit from every budget the call touches; on a shortfall take none and
        return the retry_after Telegram would send."""
        s = self.settings
        if not s.enabled:
            return None
        overall, rate, burst = (
            (self._paid, s.paid_rate, s.paid_burst)
            if paid
            else (self._global, s.global_rate, s.global_burst)
        )
        chat = self._chats.get(chat_key)
        if chat is None:
            chat = self._chats[chat_key] = Bucket(s.per_chat_burst, now)
        wait = max(
            overall.wait_time(now, rate, burst),
            chat.wait_time(now, s.per_chat_rate, s.per_chat_burst),
            self._group_wait(chat_key, now) if is_group else 0.0,
        )
        if wait > 0.0:
            return max(1, math.ceil(wait)) + s.retry_after_penalty
        overall.tokens -= 1.0
        chat.tokens -= 1.0
        if is_group:
            self._groups[chat_key].append(now)
        return None

    def _group_wait(self, chat_key: int | str, now: float) -> float:
        window = self._groups.get(chat_key)
        if window is None:
            window = self._groups[chat_key] = deque()
        while window and window[0] <= now - GROUP_WINDOW:
            window.popleft()
        if len(window) < self.settings.group_per_minute:
            return 0.0
        return window[0] + GROUP_WINDOW - now

    def reset(self, now: float) -> None:
        """Full buckets, as after a quiet period (used when limits are re-configured)."""
        s = self.settings
        self._global = Bucket(s.global_burst, now)
        self._paid = Bucket(s.paid_burst, now)
        self._chats.clear()
        self._groups.clear()
