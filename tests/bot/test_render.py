"""What the admin reads — the live status and /stats: pure rendering, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from pushbot.bot import render
from pushbot.broadcast.progress import Baseline, JobKind, JobState, JobTally, Progress
from pushbot.db.models import PushStatus
from pushbot.db.queries import (
    AudienceChanges,
    AudienceCounts,
    AudiencePoint,
    BroadcastStats,
    PushCounts,
    PushSummary,
)
from pushbot.stats import StatsReport, Window

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


# --- before the job has counted its recipients (issue 11, item 7) -----------------------------

NOT_COUNTED = replace(
    RUNNING, total=0, done=0, sent=0, left=0, rate=0.0, eta_seconds=0.0, elapsed=0.0, counted=False
)


def test_the_first_frame_says_starting_instead_of_a_full_bar() -> None:
    text = render.render_progress(NOT_COUNTED)

    assert text == "📣 Broadcasting\nstarting…"
    assert "100%" not in text and "ETA" not in text and "Delivered" not in text


def test_a_retraction_starting_says_so_too() -> None:
    text = render.render_progress(replace(NOT_COUNTED, kind=JobKind.RETRACT))

    assert text == "🗑 Retracting broadcast\nstarting…"


def test_once_counted_the_bar_counts_and_pace_replace_starting() -> None:
    counted = replace(NOT_COUNTED, counted=True, total=500, left=500, eta_seconds=None)

    text = render.render_progress(counted)

    assert "starting" not in text
    assert "░" * render.BAR_WIDTH + " 0%" in text
    assert "Delivered 0 · Failed 0 · Left 500" in text
    assert "ETA –" in text


def test_a_counted_job_with_nobody_to_reach_shows_its_zeros() -> None:
    text = render.render_progress(replace(NOT_COUNTED, counted=True))

    assert "starting" not in text and "Delivered 0 · Failed 0 · Left 0" in text


def test_the_tally_is_uncounted_until_its_baseline_is_read() -> None:
    tally = JobTally(RUNNING.uuid, JobKind.PUSH)
    assert not tally.progress().counted

    tally.set_baseline(Baseline(total=0))

    assert tally.progress().counted


def test_a_job_paused_before_it_counted_shows_no_invented_counts() -> None:
    text = render.render_progress(replace(NOT_COUNTED, state=JobState.PAUSED))

    assert text == "📣 Broadcasting — paused\nPress Resume to carry on."


def test_an_outage_before_the_count_is_still_shown() -> None:
    since = datetime(2026, 11, 23, 12, 3, 5, tzinfo=UTC)
    text = render.render_progress(replace(NOT_COUNTED, unreachable_since=since))

    assert "Telegram unreachable since 12:03:05 UTC" in text and "100%" not in text


# --- /stats ------------------------------------------------------------------------------------

STATS_AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def broadcast(
    text: str | None, sent: int, failed: int, removed: int, seconds: float | None
) -> BroadcastStats:
    created = STATS_AT - timedelta(days=1)
    push = PushSummary(
        uuid=uuid4(),
        text=text,
        content_type="text" if text else "photo",
        source_chat_id=1,
        source_message_id=1,
        admin_id=1,
        status=PushStatus.DONE,
        audience_size=sent + failed,
        created_at=created,
        finished_at=None,
        deleted=False,
        deleted_at=None,
        report_chat_id=1,
        report_message_id=None,
        status_message_id=None,
        preview_message_id=None,
    )
    counts = PushCounts(total=sent + failed, sent=sent, failed=failed, retracted=removed)
    last = None if seconds is None else created + timedelta(seconds=seconds)
    return BroadcastStats(push, counts, last)


def stats_report(broadcasts: list[BroadcastStats]) -> StatsReport:
    return StatsReport(
        at=STATS_AT,
        audience=AudienceCounts(subscribed=1234, unsubscribed=56, purged=78),
        windows=(
            Window(7, AudienceChanges(joined=12, returned=3, left=4)),
            Window(
                30,
                AudienceChanges(
                    joined=40,
                    returned=5,
                    left=10,
                    purged_by_reason={"blocked": 6, "deactivated": 2},
                ),
            ),
        ),
        broadcasts=broadcasts,
        history=[AudiencePoint(STATS_AT.date(), 1234)],
        broadcast_times=[],
    )


def test_stats_name_every_number() -> None:
    text = render.render_stats(
        stats_report(
            [broadcast("Big news today", 1200, 3, 0, 40.0), broadcast(None, 5, 0, 5, None)]
        )
    )

    assert text.splitlines() == [
        "📊 Statistics · 2026-11-30 12:00 UTC",
        "Subscribers now: 1234 (unsubscribed 56, purged 78)",
        "",
        "Last 7 days: joined 12, returned 3, left 4, purged 0",
        "Last 30 days: joined 40, returned 5, left 10, purged 8 (blocked: 6, deactivated: 2)",
        "",
        "Latest broadcasts:",
        "• 11-29 12:00 “Big news today” (done): delivered 1200 · failed 3 · removed 0 · 30.0 msg/s",
        "• 11-29 12:00 “[photo]” (done): delivered 5 · failed 0 · removed 5 · –",
    ]


def test_stats_of_a_bot_that_never_broadcast() -> None:
    assert render.render_stats(stats_report([])).endswith("\nNo broadcasts yet.")
