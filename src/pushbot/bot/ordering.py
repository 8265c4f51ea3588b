"""Concurrent update handling that keeps every chat's updates in arrival order.

Different chats are handled concurrently (bounded by `max_concurrent_updates`), but two
updates of one chat never overlap: otherwise a conversation's state or a chat's row could
be read and written by two handlers at once (write-after-read races). This is what
grammY's runner calls sequentialize; python-telegram-bot ships only unordered concurrency.

How: the first update of a chat becomes that chat's drainer and, within its single slot of
the concurrency bound, runs the chat's backlog in order. Later updates of the same chat
only append to the backlog and give their slot back at once, so one chatty user cannot
occupy the slots other chats need.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

logger = logging.getLogger(__name__)


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
    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._backlogs: dict[int, deque[Awaitable[Any]]] = {}

    @property
    def chats_in_progress(self) -> int:
        return len(self._backlogs)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = ordering_key(update)
        if key is None:
            await coroutine
            return
        backlog = self._backlogs.get(key)
        if backlog is not None:
            backlog.append(coroutine)
            return
        backlog = self._backlogs[key] = deque([coroutine])
        try:
            await self._drain(backlog)
        finally:
            del self._backlogs[key]
            _discard(backlog)

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


def _discard(backlog: deque[Awaitable[Any]]) -> None:
    """Close coroutines that never ran (shutdown cancelled the drainer) to avoid warnings."""
    for pending in backlog:
        close = getattr(pending, "close", None)
        if close is not None:
            close()
