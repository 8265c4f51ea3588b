"""Everything pushbot knows about Telegram for one bot token, shared by every sender.

The broadcaster's worker threads and the Application's event loop send on the same token,
so they share one `TelegramGateway`:

* two request budgets: the free one (~30/s: replies, edits, deletes, free broadcasts) and,
  with PAID_BROADCAST, the paid one (up to 1000/s, only copies sent with
  `allow_paid_broadcast`). Neither can starve or flood the other;
* Telegram's per-chat limits (`ChatBudgets`), so the admin's own chat, which gets the
  status message, its own copy and progress edits within a second, never draws a 429;
* flood attribution: a 429 about one chat while other chats go through delays that chat;
  429s about several chats within `FLOOD_WINDOW` close the whole budget's gate;
* Telegram's health (`TelegramHealth`): outages hold every sender instead of failing the
  recipients; while they last, `getMe` probes ask whether Telegram is back.

Every request takes a `Ticket` with `acquire` (threads) or `acquire_async` (the event loop)
and reports exactly one outcome on it: `answered` (a success or an error about the chat),
`flooded`, `failed` (transient) or `abandoned`.

`SharedRateLimiter` plugs the gateway into the Application's ExtBot and retries the
Application's own sends (replies, status edits, reports) through it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import BaseRateLimiter

from pushbot.broadcast.health import TelegramHealth
from pushbot.broadcast.pacing import (
    RETRY_AFTER_MARGIN,
    ChatBudgets,
    Pacer,
    chat_key,
    is_paced_endpoint,
    retry_after_seconds,
)
from pushbot.config import DEFAULT_BROADCAST_RATE, Settings

logger = logging.getLogger(__name__)

# 429s about two different chats of one budget within this many seconds are the budget's
# flood, not the chats'.
FLOOD_WINDOW = 1.0
# What the free budget runs at when broadcasts use the paid one.
FREE_TIER_RATE = DEFAULT_BROADCAST_RATE


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted request: which chat and budget it spends; whether it is the outage
    probe, and whether getMe answered just before it (see TelegramHealth)."""

    chat: int | str | None
    paid: bool
    probe: bool = False
    verified: bool = False


SyncProbe = Callable[[], bool]
AsyncProbe = Callable[[], Awaitable[bool]]


class TelegramGateway:
    def __init__(
        self,
        free: Pacer,
        paid: Pacer | None = None,
        chats: ChatBudgets | None = None,
        health: TelegramHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free
        self._paid = paid
        self._chats = chats if chats is not None else ChatBudgets()
        self._health = health if health is not None else TelegramHealth()
        self._clock = clock
        self._sync_probe: SyncProbe | None = None
        self._async_probe: AsyncProbe | None = None
        self._floods_lock = threading.Lock()
        self._recent_floods: deque[tuple[float, int | str | None, bool]] = deque()

    @classmethod
    def for_settings(cls, settings: Settings) -> TelegramGateway:
        """Free broadcasts share the free budget at BROADCAST_RATE with everything else;
        paid ones get their own budget at BROADCAST_RATE, the rest stays at ~30/s."""
        if settings.paid_broadcast:
            return cls(
                Pacer(min(FREE_TIER_RATE, settings.broadcast_rate)), Pacer(settings.broadcast_rate)
            )
        return cls(Pacer(settings.broadcast_rate))

    @property
    def free(self) -> Pacer:
        return self._free

    @property
    def chats(self) -> ChatBudgets:
        return self._chats

    def set_probes(
        self, sync_probe: SyncProbe | None = None, async_probe: AsyncProbe | None = None
    ) -> None:
        """How to ask Telegram whether it is up (`getMe`; True when it answered), from a
        thread and from the Application's loop. Without one, a waiting request is sent as
        the probe instead."""
        if sync_probe is not None:
            self._sync_probe = sync_probe
        if async_probe is not None:
            self._async_probe = async_probe

    def pacer_for(self, paid: bool) -> Pacer:
        return self._paid if paid and self._paid is not None else self._free

    def down_since(self) -> datetime | None:
        return self._health.down_since()

    def flood_wait(self, paid: bool = False) -> float:
        """Seconds left on the budget's retry_after gate (0 when open)."""
        return self.pacer_for(paid).gate_remaining()

    # --- admission --------------------------------------------------------------------------

    def acquire(
        self,
        chat_id: object,
        *,
        paid: bool = False,
        stop: threading.Event | None = None,
    ) -> Ticket | None:
        """Block the calling thread until the request may go: Telegram answering, the chat's
        slot due, the budget's slot due. None if `stop` was set first.

        While Telegram answers (nearly always), the health check is one read without a lock:
        every copy of a broadcast passes here."""
        probe = verified = False
        while not (self._health.up or probe):
            admitted = self._health.wait_admitted(stop)
            if admitted is None:
                return None
            probe = admitted
            sync_probe = self._sync_probe if probe else None
            verified = sync_probe is not None
            if sync_probe is None or _run_sync_probe(sync_probe):
                break
            self._health.probe_unanswered()
            probe = verified = False
        key = chat_key(chat_id)
        wait = self._chats.reserve(key)
        if wait > 0:
            if stop is None:
                time.sleep(wait)
            elif stop.wait(wait):
                self._health.abandoned(probe)
                return None
        if not self.pacer_for(paid).acquire(stop):
            self._health.abandoned(probe)
            return None
        return Ticket(key, paid and self._paid is not None, probe, verified)

    async def acquire_async(
        self, chat_id: object, *, paced: bool = True, give_up_at: float | None = None
    ) -> Ticket:
        """The same for the event loop (free budget only), without blocking the loop.
        TimedOut if Telegram is still down at `give_up_at` (time.monotonic()); waiting for
        the budgets is never cut short: that is the queue, not a failure."""
        while True:
            admission = self._health.admit()
            if admission.wait > 0:
                if give_up_at is not None and time.monotonic() + admission.wait > give_up_at:
                    raise TimedOut("Telegram is not answering")
                await asyncio.sleep(admission.wait)
                continue
            async_probe = self._async_probe if admission.probe else None
            verified = async_probe is not None
            if async_probe is None or await _run_async_probe(async_probe):
                break
            self._health.probe_unanswered()
        key = chat_key(chat_id) if paced else None
        try:
            if paced:
                wait = self._chats.reserve(key)
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._free.acquire_async()
        except BaseException:
            self._health.abandoned(admission.probe)
            raise
        return Ticket(key, False, admission.probe, verified)

    # --- outcomes ---------------------------------------------------------------------------

    def answered(self, ticket: Ticket) -> None:
        """Telegram answered: the request succeeded, or was refused for a reason about its
        chat (403, 400…). Either way Telegram is up."""
        self._health.answered(ticket.probe)

    def failed(self, ticket: Ticket) -> bool:
        """A transient failure (5xx, timeout, connection error). True when it counts as an
        attempt against the recipient (Telegram was seen answering meanwhile)."""
        return self._health.failed(ticket.probe, ticket.verified)

    def abandoned(self, ticket: Ticket) -> None:
        self._health.abandoned(ticket.probe)

    def flooded(self, ticket: Ticket, retry_after: float) -> bool:
        """A 429. The chat always waits `retry_after`; the whole budget only when another
        chat of it was refused within FLOOD_WINDOW (or the request had no chat). Returns
        True when the whole budget waits."""
        self._health.answered(ticket.probe)
        seconds = retry_after + RETRY_AFTER_MARGIN
        self._chats.block(ticket.chat, seconds)
        now = self._clock()
        with self._floods_lock:
            recent = self._recent_floods
            while recent and now - recent[0][0] > FLOOD_WINDOW:
                recent.popleft()
            whole_budget = ticket.chat is None or any(
                chat != ticket.chat and paid == ticket.paid for _, chat, paid in recent
            )
            recent.append((now, ticket.chat, ticket.paid))
        if not whole_budget:
            logger.info("flood control in chat %s: that chat waits %.1f s", ticket.chat, seconds)
            return False
        pacer = self.pacer_for(ticket.paid)
        already_closed = pacer.gate_remaining() > 0
        pacer.block_for(seconds)
        if not already_closed:
            # Once per flood, not once per sender that ran into it.
            logger.warning(
                "flood control for the %s budget: every request waits %.1f s",
                "paid" if ticket.paid else "free",
                seconds,
            )
        return True


def _run_sync_probe(probe: SyncProbe) -> bool:
    try:
        return probe()
    except Exception:
        logger.debug("Telegram probe failed", exc_info=True)
        return False


async def _run_async_probe(probe: AsyncProbe) -> bool:
    try:
        return await probe()
    except Exception:
        logger.debug("Telegram probe failed", exc_info=True)
        return False


def answered_at_all(exc: BaseException) -> bool:
    """Whether an exception from a request still means Telegram answered it."""
    return isinstance(exc, TelegramError) and (
        isinstance(exc, BadRequest) or not isinstance(exc, NetworkError)
    )


# The Application's own sends give up after this long without an answer from Telegram.
APP_RETRY_BUDGET = 60.0
APP_BACKOFF_BASE = 0.5
APP_BACKOFF_CAP = 8.0
# Left to ptb's own loops (polling and webhook set-up retry by themselves) or to the
# start-up check, which must see a rejected token at once.
UNRETRIED_ENDPOINTS = frozenset(
    {"getUpdates", "getMe", "setWebhook", "deleteWebhook", "getWebhookInfo", "logOut", "close"}
)


class SharedRateLimiter(BaseRateLimiter[float]):
    """The Application's rate limiter: the broadcaster's gateway, plus retries.

    Why not ptb's `AIORateLimiter`: it has no per-chat limit for private chats, retries
    nothing but 429s, and its budget lives on the Application's event loop, so it cannot be
    shared with the broadcast worker threads that send on the same token.

    Every sending/editing/deleting call waits for its chat's slot and the free budget's.
    A 429 is retried after its retry_after (see `TelegramGateway.flooded`); a transient
    failure (5xx, connection error, timeout) is retried with back-off; both within
    `retry_budget` seconds in all (`rate_limit_args` overrides it per call), after which
    the error reaches the caller. A retry after a timeout may repeat a request Telegram
    had in fact carried out: a reply can then arrive twice (an edit or a delete cannot: a
    repeated one answers "not modified" / "not found", which is taken as done).
    """

    __slots__ = ("_backoff_base", "_backoff_cap", "_gateway", "_retry_budget")

    def __init__(
        self,
        gateway: TelegramGateway,
        *,
        retry_budget: float = APP_RETRY_BUDGET,
        backoff_base: float = APP_BACKOFF_BASE,
        backoff_cap: float = APP_BACKOFF_CAP,
    ) -> None:
        self._gateway = gateway
        self._retry_budget = retry_budget
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap

    @property
    def gateway(self) -> TelegramGateway:
        return self._gateway

    async def initialize(self) -> None:
        """Nothing to set up: the gateway needs no resources."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: float | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if endpoint in UNRETRIED_ENDPOINTS:
            return await callback(*args, **kwargs)
        paced = is_paced_endpoint(endpoint)
        budget = self._retry_budget if rate_limit_args is None else float(rate_limit_args)
        deadline = time.monotonic() + budget
        failures = 0
        may_have_been_done = False
        while True:
            try:
                ticket = await self._gateway.acquire_async(
                    data.get("chat_id"), paced=paced, give_up_at=deadline
                )
            except TimedOut:
                logger.warning(
                    "%s: Telegram did not answer for %.0f s, giving up", endpoint, budget
                )
                raise
            try:
                result = await callback(*args, **kwargs)
            except RetryAfter as exc:
                seconds = retry_after_seconds(exc)
                self._gateway.flooded(ticket, seconds)
                if time.monotonic() + seconds > deadline:
                    logger.warning("%s: flood control beyond %.0f s, giving up", endpoint, budget)
                    raise
                continue  # the next acquire waits the chat's (or the budget's) gate out
            except BadRequest as exc:
                # (Before NetworkError: ptb's BadRequest is a subclass of it.)
                self._gateway.answered(ticket)
                if may_have_been_done and _already_done(endpoint, exc):
                    return True
                raise
            except NetworkError as exc:
                self._gateway.failed(ticket)
                failures += 1
                may_have_been_done = may_have_been_done or isinstance(exc, TimedOut)
                pause = random.uniform(0.5, 1.0) * min(
                    self._backoff_cap, self._backoff_base * 2 ** (failures - 1)
                )
                if time.monotonic() + pause > deadline:
                    logger.warning(
                        "%s: still failing after %.0f s, giving up: %s", endpoint, budget, exc
                    )
                    raise
                logger.info("%s: %s; retrying in %.1f s", endpoint, exc, pause)
                await asyncio.sleep(pause)
                continue
            except TelegramError:
                self._gateway.answered(ticket)
                raise
            except BaseException:
                self._gateway.abandoned(ticket)
                raise
            self._gateway.answered(ticket)
            return result


_DONE_ALREADY = {
    "edit": "message is not modified",
    "deleteMessage": "message to delete not found",
}


def _already_done(endpoint: str, exc: BadRequest) -> bool:
    """A repeated edit or delete whose first try (which timed out) had in fact worked."""
    text = str(exc).lower()
    return any(
        endpoint.startswith(prefix) and needle in text for prefix, needle in _DONE_ALREADY.items()
    )
