"""What the ledger and the threads cost: the engine against a bare ptb send loop with the same
concurrency, both to the stand-in with limits lifted and no latency.

Loose bound here (shared CI machines are noisy); the benchmark proper is the lead's. Run with
`-s` to see the numbers.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from telegram import Bot
from telegram.request import HTTPXRequest

from pushbot.broadcast.progress import JobState
from tests.broadcast.conftest import Scene

RECIPIENTS = 1000
CONCURRENCY = 30


def bare_send_loop(scene: Scene, chat_ids: list[int]) -> float:
    """30 coroutines sharing one iterator of chat ids: copy_message and nothing else."""

    async def run() -> float:
        request = HTTPXRequest(connection_pool_size=CONCURRENCY)
        bot = Bot(scene.tg.token, base_url=scene.tg.base_url, request=request)
        await request.initialize()
        pending = iter(chat_ids)

        async def worker() -> None:
            for chat_id in pending:
                await bot.copy_message(chat_id, scene.admin, scene.source_message_id)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - started
        await request.shutdown()
        return len(chat_ids) / elapsed

    return asyncio.run(run())


@pytest.mark.slow
def test_engine_throughput_against_a_bare_send_loop(
    scene: Scene, request: pytest.FixtureRequest
) -> None:
    bare_ids = scene.tg.add_users(RECIPIENTS)  # not subscribed: only the bare loop sends to them
    scene.users(RECIPIENTS)
    broadcaster = scene.broadcaster(workers=CONCURRENCY)

    bare_rate = bare_send_loop(scene, bare_ids)
    report = broadcaster.launch_push(scene.push()).wait(timeout=120)
    assert report.state is JobState.DONE and report.sent == RECIPIENTS
    engine_rate = report.sent / report.elapsed

    backend = request.node.callspec.id
    print(
        f"\n[{backend}] {RECIPIENTS} recipients: bare ptb loop {bare_rate:.0f} msgs/s, "
        f"engine {engine_rate:.0f} msgs/s ({engine_rate / bare_rate:.0%} of bare)"
    )
    assert engine_rate >= 0.6 * bare_rate
