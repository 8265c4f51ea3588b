"""The live status as the admin reads it: pure rendering, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

from pushbot.bot import render
from pushbot.broadcast.progress import JobKind, JobState, Progress

RUNNING = Progress(
    uuid=uuid4(),
    kind=JobKind.PUSH,
    state=JobState.RUNNING,
    total=800,
    done=200,
    sent=200,
    failed=0,
    left=600,
    failed_by_reason={},
    purged=0,
    elapsed=7.0,
    rate=29.5,
    eta_seconds=20.3,
    started_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
)


def test_a_healthy_run_shows_pace_and_eta() -> None:
    text = render.render_progress(RUNNING)
    assert "29.5 msg/s · ETA 0:20" in text
    assert "unreachable" not in text and "slow down" not in text


def test_an_outage_is_shown_with_its_start_instead_of_a_pace() -> None:
    held = replace(
        RUNNING,
        rate=0.0,
        eta_seconds=None,
        unreachable_since=datetime(2026, 11, 23, 12, 3, 5, tzinfo=UTC),
    )
    text = render.render_progress(held)
    assert "Telegram unreachable since 12:03:05 UTC" in text
    assert "Nobody is skipped" in text
    assert "msg/s" not in text


def test_a_flood_wait_is_shown_without_a_changing_number() -> None:
    """The status is edited only when its text changes: no countdown to re-send."""
    first = render.render_progress(replace(RUNNING, flood_wait=4.2))
    later = render.render_progress(replace(RUNNING, flood_wait=1.1))
    assert "slow down" in first and first == later
