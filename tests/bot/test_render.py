"""What the admin reads — the live status and /stats: pure rendering, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from pushbot.bot import render
from pushbot.broadcast.progress import (
    Baseline,
    JobKind,
    JobReport,
    JobState,
    JobTally,
    Progress,
)
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


# --- /edit -------------------------------------------------------------------------------------

EDITING = replace(
    RUNNING,
    kind=JobKind.EDIT,
    total=300,
    done=130,
    sent=120,
    failed=2,
    left=170,
    unchanged_by_reason={"deleted by the user": 8},
)


def test_an_edit_shows_edited_unchanged_and_could_not_edit() -> None:
    text = render.render_progress(EDITING)

    assert text.splitlines()[0] == "✏️ Editing broadcast"
    assert "Edited 120 · Unchanged 8 · Could not edit 2 · Left 170" in text
    assert "29.5 msg/s · ETA 0:20" in text
    assert render.job_keyboard(EDITING.uuid, JobState.RUNNING, JobKind.EDIT) is None


def test_an_edit_starting_says_so() -> None:
    assert render.render_progress(replace(NOT_COUNTED, kind=JobKind.EDIT)) == (
        "✏️ Editing broadcast\nstarting…"
    )


def test_the_tally_counts_unchanged_copies_as_done() -> None:
    tally = JobTally(RUNNING.uuid, JobKind.EDIT)
    tally.set_baseline(Baseline(total=4, sent=1, unchanged_by_reason={"already had this text": 1}))
    tally.unchanged("deleted by the user")

    progress = tally.progress()
    report = tally.report(JobState.DONE)

    assert (progress.done, progress.left, progress.unchanged) == (3, 1, 2)
    assert report.unchanged_by_reason == {"already had this text": 1, "deleted by the user": 1}
    assert report.left == 1


def edit_report(**changes: Any) -> JobReport:
    base = JobReport(
        uuid=uuid4(),
        kind=JobKind.EDIT,
        state=JobState.DONE,
        total=40,
        sent=36,
        failed=1,
        failed_by_reason={"blocked": 1},
        purged=0,
        elapsed=2.0,
        pace=20.0,
        started_at=STATS_AT,
        finished_at=STATS_AT,
        unchanged_by_reason={"deleted by the user": 2, "already had this text": 1},
    )
    return replace(base, **changes)


def test_the_edit_report_shows_the_new_text_and_every_copy() -> None:
    text = render.render_edit_report(edit_report(), "Fixed: the event is on Friday")

    assert text.splitlines() == [
        "✏️ Broadcast edited",
        "Now: “Fixed: the event is on Friday”",
        "Edited 36 · Unchanged 3 (deleted by the user: 2, already had this text: 1) · "
        "Could not edit 1 (blocked: 1)",
        "Time: 0:02 · 20.0 edits/s",
        "",
        "Reply /undo to this message to retract it from every chat, or /edit to correct it again.",
    ]


def test_an_edit_that_reached_nobody_offers_nothing_more() -> None:
    text = render.render_edit_report(
        edit_report(sent=0, failed=3, unchanged_by_reason={}, failed_by_reason={"blocked": 3}),
        "Fix",
    )

    assert "Edited 0 · Unchanged 0 · Could not edit 3 (blocked: 3)" in text
    assert "Reply /undo" not in text


def test_the_summary_shows_the_corrected_text_and_when() -> None:
    (stats,) = [broadcast("Tpyo", 10, 0, 0, None)]
    edited = replace(
        stats.push,
        edited_text="Typo fixed",
        edited_at=datetime(2026, 11, 29, 13, 5, tzinfo=UTC),
    )
    counts = PushCounts(sent=10)

    summary = render.render_push_summary(edited, counts, now=STATS_AT)
    while_editing = render.render_push_summary(
        replace(edited, status=PushStatus.EDITING), counts, now=STATS_AT
    )

    assert summary.splitlines()[1:] == [
        "“Typo fixed”",
        "Edited 2026-11-29 13:05 UTC",
        "Copies out: 10 (status: done)",
    ]
    assert "Being edited now" in while_editing
    assert "Edited" not in render.render_push_summary(stats.push, counts, now=STATS_AT)
