"""What the admin reads about audiences, options and scheduled pushes (pure rendering)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

from pushbot.bot import render
from pushbot.broadcast.jobs import Job, JobHandle
from pushbot.broadcast.progress import JobKind
from pushbot.broadcast.scheduler import LateReason, ScheduledStart
from pushbot.db.models import PushStatus
from pushbot.db.queries import PushCounts, PushHistoryRow, PushSummary
from pushbot.db.segments import EVERYONE, Segment

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
DUE = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)  # 18:30 in Berlin
PUSH = PushSummary(
    uuid=uuid4(),
    text="Half past six",
    content_type="text",
    source_chat_id=1,
    source_message_id=1,
    admin_id=1,
    status=PushStatus.SCHEDULED,
    audience_size=0,
    created_at=NOW,
    finished_at=None,
    deleted=False,
    deleted_at=None,
    report_chat_id=1,
    report_message_id=None,
    status_message_id=None,
    preview_message_id=None,
    segment=Segment.parse("language:de"),
    disable_notification=True,
    scheduled_at=DUE,
)


def test_the_confirmation_follows_the_choice() -> None:
    assert render.render_confirmation(5, EVERYONE, False, False) == (
        "Above is exactly what 5 subscribed chat(s) will receive. Send it?"
    )
    text = render.render_confirmation(2, Segment.parse("groups"), True, True)
    assert text.splitlines() == [
        "Above is exactly what 2 subscribed chat(s) will receive (groups only). Send it?",
        "🔕 Silent: it arrives without a notification sound.",
        "🔒 Protected: it cannot be forwarded or saved.",
    ]
    admins = render.render_confirmation(1, Segment.parse("admins"), False, False, [1001, 1002])
    assert "1 admin chat(s) will receive (a test)" in admins
    assert "Not reached: 1001, 1002" in admins


def test_the_keyboard_keeps_send_first_and_shows_the_choices() -> None:
    keyboard = render.confirmation_keyboard(Segment.parse("private"), True, False)
    rows = [[(b.text, b.callback_data) for b in row] for row in keyboard.inline_keyboard]
    assert rows[0] == [("✅ Send", "push:send"), ("🗓 Schedule…", "push:schedule")]
    assert rows[1] == [("👥 Audience: private chats", "push:audience")]
    assert rows[2] == [("🔕 Silent: on", "push:silent"), ("🔓 Protected: off", "push:protect")]


def test_a_scheduled_push_in_the_admins_time_zone() -> None:
    text = render.render_scheduled(PUSH, BERLIN, 3, NOW)
    assert text.splitlines()[:3] == [
        "🗓 Scheduled for Tue 1 Dec 18:30 (Europe/Berlin)",
        "Audience: language de · silent (3 chat(s) now)",
        "“Half past six”",
    ]


def _start(late_by: timedelta | None, reason: LateReason | None) -> ScheduledStart:
    handle = JobHandle(Job(PUSH.uuid, JobKind.PUSH, expects=PushStatus.RUNNING), None)  # type: ignore[arg-type]
    return ScheduledStart(PUSH, handle, late_by, reason)


def test_a_start_says_whether_and_why_it_is_late() -> None:
    on_time = render.render_scheduled_start(_start(None, None), BERLIN, NOW)
    assert on_time == (
        "⏰ The broadcast scheduled for Tue 1 Dec 18:30 (Europe/Berlin) starts now, "
        "to language de · silent: “Half past six”"
    )
    late = render.render_scheduled_start(
        _start(timedelta(hours=2, minutes=5), LateReason.BOT_WAS_DOWN), BERLIN, NOW
    )
    assert late.endswith("It is 2 h 5 min late: the bot was not running at that time.")
    waited = render.render_scheduled_start(
        _start(timedelta(minutes=4), LateReason.WAITED), BERLIN, NOW
    )
    assert waited.endswith("It is 4 min late: it waited for another broadcast to end.")


def test_history_names_the_audience_and_options() -> None:
    sent = replace(PUSH, status=PushStatus.DONE, segment=EVERYONE, protect_content=True)
    rows = [
        PushHistoryRow(PUSH, PushCounts()),
        PushHistoryRow(sent, PushCounts(total=3, sent=2, failed=1)),
    ]
    lines = render.render_history(rows, BERLIN, NOW).splitlines()
    assert lines[1] == "• for Tue 1 Dec 18:30 (Europe/Berlin) · scheduled · language de · silent"
    assert lines[3] == "• Tue 1 Dec 17:00 (Europe/Berlin) · done · everyone · silent, protected"
    assert "delivered 2 · failed 1 · removed 0" in lines[4]
    assert render.render_history([], BERLIN, NOW) == "No broadcasts yet."
