"""The tasks that keep broadcasts' status messages fresh, one per job.

Ours rather than `Application.create_task`'s: ptb's `stop()` waits for every task made that
way, and a watcher lives as long as its broadcast, so a SIGTERM mid-broadcast would wait for
the whole broadcast (an hour for a large audience) instead of stopping it for the next start
to carry on. A watcher only edits a status message, so cancelling it at stop loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any
from uuid import UUID

logger = logging.getLogger(__name__)


class StatusWatchers:
    def __init__(self) -> None:
        self._tasks: dict[UUID, asyncio.Task[None]] = {}

    def start(self, push_uuid: UUID, watch: Coroutine[Any, Any, None]) -> None:
        """Run `watch` for `push_uuid` unless a watcher already keeps it fresh."""
        if push_uuid in self._tasks:
            watch.close()
            return
        task = asyncio.get_running_loop().create_task(watch, name=f"watch-{push_uuid}")
        self._tasks[push_uuid] = task
        task.add_done_callback(lambda done: self._ended(push_uuid, done))

    def _ended(self, push_uuid: UUID, task: asyncio.Task[None]) -> None:
        if self._tasks.get(push_uuid) is task:
            del self._tasks[push_uuid]
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The broadcast goes on; only its status message stops being refreshed.
            logger.warning("status watcher of %s stopped: %s", push_uuid, exc, exc_info=exc)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
