"""Concurrent update handling that keeps every chat's updates in arrival order.

Different chats are handled concurrently (bounded by `max_concurrent_updates`), but two
updates of one chat never overlap: otherwise a conversation's state or a chat's row could
be read and written by two handlers at once (write-after-read races). This is what
grammY's runner calls sequentialize; python-telegram-bot ships only unordered concurrency.

How: the first update of a chat becomes that chat's drainer and, within its single slot of
the concurrency bound, runs the chat's backlog in order. Later updates of the same chat
only append to the backlog and return at once, so one chatty user cannot occupy the slots
other chats need.

Two lanes (both optional):
- `is_urgent(update)`: such updates (the admins') take no slot and never wait for
  admission, so a rush of users' updates cannot delay them; their chat's order still holds,
  through the same backlogs;
- `admission()`: awaited by every other chat's drainer once it has its slot (the outbox's
  "room for one more reply"); while it waits, the chat's updates are not handled.

The bound is ours, not ptb's: BaseUpdateProcessor.process_update (final) holds ptb's
semaphore around `do_process_update`, which would make urgent updates queue for a slot
behind the very updates they must overtake; so ptb's bound is set out of reach
(`PTB_BOUND`) and the slots are taken here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

logger = logging.getLogger(__name__)

# What ptb's own semaphore is given (see the module docstring); a counter, it costs nothing.
PTB_BOUND = 2**31 - 1


def ordering_key(update: object) -> int | None:
    """The chat whose updates must stay in order (the user's, for chat-less updates)."""
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    if update.effective_user is not None:
        return update.effective_user.id
    return None


class PerChatOrderedProcessor(BaseUpdateProcessor):
    def __init__(
        self,
        max_concurrent_updates: int,
        *,
        is_urgent: Callable[[object], bool] | None = None,
        admission: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if max_concurrent_updates < 1:
            raise ValueError("max_concurrent_updates must be a positive integer")
        super().__init__(PTB_BOUND)
        self._slots = Slots(max_concurrent_updates)
        self._backlogs: dict[int, deque[Awaitable[Any]]] = {}
        self._is_urgent = is_urgent
        self._admission = admission

    @property
    def chats_in_progress(self) -> int:
        return len(self._backlogs)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        urgent = self._is_urgent is not None and self._is_urgent(update)
        key = ordering_key(update)
        if key is None:
            async with self._slot(urgent):
                await coroutine
            return
        backlog = self._backlogs.get(key)
        if backlog is not None:
            backlog.append(coroutine)
            return
        backlog = self._backlogs[key] = deque([coroutine])
        try:
            async with self._slot(urgent):
                await self._drain(backlog)
        finally:
            del self._backlogs[key]
            _discard(backlog)

    @contextlib.asynccontextmanager
    async def _slot(self, urgent: bool) -> AsyncIterator[None]:
        if urgent:
            yield
            return
        await self._slots.acquire()
        try:
            # Within the slot: at most `bound` drainers are past it at any time, so the
            # outbox overshoots its limit by at most that many replies.
            if self._admission is not None:
                await self._admission()
            yield
        finally:
            self._slots.release()

    @staticmethod
    async def _drain(backlog: deque[Awaitable[Any]]) -> None:
        while backlog:
            try:
                await backlog[0]
            except Exception:
                # Application.process_update already routes handler errors to the error
                # handler; anything reaching here must not stall the chat's later updates.
                logger.exception("update processing failed")
            backlog.popleft()

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class Slots:
    """A FIFO counting semaphore. Not asyncio.Semaphore: on Python 3.11 its acquire() asks
    locked(), which walks every waiter, so with dozens of updates waiting for a slot each
    acquire costs O(waiters) (3.5 % of the bot's CPU in a /start burst, py-spy)."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self._free += 1


def _discard(backlog: deque[Awaitable[Any]]) -> None:
    """Close coroutines that never ran (shutdown cancelled the drainer) to avoid warnings."""
    for pending in backlog:
        close = getattr(pending, "close", None)
        if close is not None:
            close()
