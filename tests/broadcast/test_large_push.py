"""A push at full width: 1,000 recipients through 30 workers, the stand-in's limits lifted.

What the engine costs against a bare ptb send loop is a benchmark, not a test:
`bench/engine_overhead.py` (`--database sqlite` for the SQLite half) prints the figures.
"""

from __future__ import annotations

import pytest

from pushbot.broadcast.progress import JobState
from tests.broadcast.conftest import Scene

RECIPIENTS = 1000
WORKERS = 30


@pytest.mark.slow
def test_a_thousand_recipients_through_thirty_workers_get_one_copy_each(scene: Scene) -> None:
    users = scene.users(RECIPIENTS)
    broadcaster = scene.broadcaster(workers=WORKERS)

    report = broadcaster.launch_push(scene.push()).wait(timeout=120)

    assert report.state is JobState.DONE and report.sent == RECIPIENTS
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
