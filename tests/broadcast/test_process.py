"""The engine as a real OS process: SIGKILL mid-broadcast, and memory for 100,000 recipients."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from pushbot.broadcast.progress import JobState
from pushbot.db.models import PushStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene

REPO_ROOT = Path(__file__).resolve().parents[2]


def start_engine_process(
    scene: Scene, db_url: str, push_uuid: UUID, workers: int, rate: float, *extra: str
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "tests.broadcast.engine_process",
        db_url,
        scene.tg.base_url,
        scene.tg.token,
        str(workers),
        str(rate),
        str(push_uuid),
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def result_of(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    output, _ = process.communicate(timeout=timeout)
    for line in output.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return result
    raise AssertionError(f"the engine process printed no result:\n{output}")


def test_sigkill_mid_broadcast_loses_nobody_and_duplicates_at_most_one_per_worker(
    scene: Scene, db_url: str
) -> None:
    workers = 6
    users = scene.users(400)
    push_uuid = scene.push()
    process = start_engine_process(scene, db_url, push_uuid, workers, 300.0)
    try:
        scene.wait_until_sent(120, timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)  # no shutdown code runs: a power cut
        process.communicate(timeout=10)

    sent_before_kill = scene.sent_so_far()
    assert sent_before_kill < 400
    assert helpers.status(scene.factory, push_uuid) == PushStatus.RUNNING
    committed = helpers.counts(scene.factory, push_uuid).sent
    assert 0 <= sent_before_kill - committed <= workers  # the uncommitted bound

    restarted = scene.broadcaster(workers=workers)
    assert restarted.resume_unfinished() == [push_uuid]
    report = restarted.wait(push_uuid, timeout=60)
    assert report.state is JobState.DONE and report.sent == 400

    deliveries = scene.deliveries(users)
    assert min(deliveries.values()) == 1  # nobody lost
    assert sum(n - 1 for n in deliveries.values()) <= workers


@pytest.mark.slow
def test_memory_stays_flat_for_100000_recipients(scene: Scene, db_url: str) -> None:
    """The ledger feeds keyset pages: the engine never holds the recipient list."""
    # Chats Telegram does not know: each is answered (400, purged) as fast as a delivery.
    helpers.subscribe(scene.factory, range(1, 100_001))
    push_uuid = scene.push()
    process = start_engine_process(scene, db_url, push_uuid, 30, 100_000.0, "--pause-after", "6")
    result = result_of(process, timeout=180)
    assert result["state"] == JobState.PAUSED
    assert result["total"] == 100_000
    assert result["sent"] + result["failed"] > 1000  # it really was broadcasting
    assert result["peak_rss_mb"] < 150, result
