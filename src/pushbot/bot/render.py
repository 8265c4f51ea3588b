"""Texts and keyboards the admin sees: previews, live progress, final reports and /stats.

Everything here is pure (no I/O), so it is easy to test and to keep stable: the status
message is only edited when the rendered text or keyboard actually changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from pushbot.broadcast.progress import JobKind, JobReport, JobState, Progress
from pushbot.broadcast.schedule import describe_delay, describe_when
from pushbot.broadcast.scheduler import LateReason, ScheduledStart
from pushbot.db.models import PushStatus
from pushbot.db.queries import (
    AudienceChanges,
    BroadcastStats,
    LanguageCount,
    PushCounts,
    PushHistoryRow,
    PushSummary,
)
from pushbot.db.segments import EVERYONE, Segment, SegmentKind
from pushbot.stats import StatsReport

BAR_WIDTH = 20
EXCERPT_LENGTH = 60


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "▓" * filled + "░" * (width - filled) + f" {fraction * 100:.0f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def excerpt(text: str | None, content_type: str = "text", length: int = EXCERPT_LENGTH) -> str:
    if not text:
        return f"[{content_type}]"
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def by_reason(counts: dict[str, int]) -> str:
    return ", ".join(
        f"{reason}: {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )


PROGRESS_TITLES = {
    JobKind.PUSH: "📣 Broadcasting",
    JobKind.RETRACT: "🗑 Retracting broadcast",
    JobKind.EDIT: "✏️ Editing broadcast",
}


def render_progress(progress: Progress) -> str:
    title = PROGRESS_TITLES[progress.kind]
    if progress.state is JobState.PAUSED:
        title += " — paused"
    lines = [title]
    counted = counts_known(progress)
    if counted:
        lines += [progress_bar(fraction_done(progress)), _progress_counts(progress)]
    if progress.state is JobState.PAUSED:
        # No pace while paused: the text stays the same, so the message is not edited again.
        lines.append("Press Resume to carry on.")
    elif progress.unreachable_since is not None:
        since = progress.unreachable_since.astimezone(UTC).strftime("%H:%M:%S UTC")
        lines.append(f"⚠️ Telegram unreachable since {since}: holding and retrying with back-off.")
        lines.append("Nobody is skipped; it carries on when Telegram answers.")
    elif not counted:
        # Neither a full bar nor an ETA of 0:00 before anything is known.
        lines.append("starting…")
    else:
        lines.append(f"{progress.rate:.1f} msg/s · ETA {duration(progress.eta_seconds)}")
        if progress.flood_wait > 0:
            lines.append("⏳ Telegram asked the bot to slow down for a moment.")
    return "\n".join(lines)


def _progress_counts(progress: Progress) -> str:
    if progress.kind is JobKind.EDIT:
        return (
            f"Edited {progress.sent} · Unchanged {progress.unchanged} · "
            f"Could not edit {progress.failed} · Left {progress.left}"
        )
    done_label = "Removed" if progress.kind is JobKind.RETRACT else "Delivered"
    return f"{done_label} {progress.sent} · Failed {progress.failed} · Left {progress.left}"


def fraction_done(progress: Progress) -> float:
    """Nobody to reach is all done."""
    return progress.done / progress.total if progress.total else 1.0


def counts_known(progress: Progress) -> bool:
    """Whether the job has counted its recipients (or copies) yet."""
    return progress.counted


def job_keyboard(
    push_uuid: UUID, state: JobState, kind: JobKind = JobKind.PUSH
) -> InlineKeyboardMarkup | None:
    if kind is not JobKind.PUSH:
        # A retraction or an edit runs to the end: stopping it half-way helps nobody (an
        # /undo still overtakes an edit).
        return None
    if state is JobState.RUNNING:
        toggle = InlineKeyboardButton("⏸ Pause", callback_data=f"job:pause:{push_uuid}")
    elif state is JobState.PAUSED:
        toggle = InlineKeyboardButton("▶️ Resume", callback_data=f"job:resume:{push_uuid}")
    else:
        return None
    cancel = InlineKeyboardButton("✖️ Cancel", callback_data=f"job:cancel:{push_uuid}")
    return InlineKeyboardMarkup([[toggle, cancel]])


def render_push_report(report: JobReport, push: PushSummary | None = None) -> str:
    """The report of a push job; with the push, it names who it went to and how."""
    outcome = {
        JobState.DONE: "✅ Broadcast finished",
        JobState.CANCELLED: "✖️ Broadcast cancelled",
    }.get(report.state, f"Broadcast {report.state}")
    failed = sum(report.failed_by_reason.values())
    lines = [
        outcome,
        f"Delivered: {report.sent}",
        f"Failed: {failed}" + (f" ({by_reason(report.failed_by_reason)})" if failed else ""),
        f"Purged from the audience: {report.purged}",
        f"Time: {duration(report.elapsed)} · {report.pace:.1f} msg/s",
    ]
    if push is not None:
        lines.insert(1, f"Audience: {push_labels(push)}")
    if report.sent:
        lines += ["", "Reply /undo to this message to retract it from every chat."]
    return "\n".join(lines)


def render_retract_report(report: JobReport) -> str:
    failed = sum(report.failed_by_reason.values())
    lines = [
        "🗑 Broadcast retracted"
        if report.state is JobState.RETRACTED
        else f"Retraction {report.state}",
        f"Removed: {report.sent}",
        f"Could not remove: {failed}"
        + (f" ({by_reason(report.failed_by_reason)})" if failed else ""),
        f"Time: {duration(report.elapsed)} · {report.pace:.1f} deletions/s",
    ]
    return "\n".join(lines)


def render_edit_report(report: JobReport, new_text: str | None) -> str:
    """The end of an /edit: what the copies say now, and what became of each of them."""
    outcome = "✏️ Broadcast edited" if report.state is JobState.DONE else f"Edit {report.state}"
    lines = [
        outcome,
        f"Now: “{excerpt(new_text)}”",
        " · ".join(
            [
                f"Edited {report.sent}",
                f"Unchanged {report.unchanged}" + _reasons(report.unchanged_by_reason),
                f"Could not edit {report.failed}" + _reasons(report.failed_by_reason),
            ]
        ),
        f"Time: {duration(report.elapsed)} · {report.pace:.1f} edits/s",
    ]
    if report.sent or report.unchanged:
        lines += [
            "",
            "Reply /undo to this message to retract it from every chat, "
            "or /edit to correct it again.",
        ]
    return "\n".join(lines)


def _reasons(counts: dict[str, int]) -> str:
    return f" ({by_reason(counts)})" if counts else ""


def edited_line(push: PushSummary) -> str | None:
    """Whether (and when) the copies were corrected by /edit; None if never."""
    if push.status is PushStatus.EDITING:
        return "Being edited now"
    if push.edited_at is None:
        return None
    edited = push.edited_at if push.edited_at.tzinfo else push.edited_at.replace(tzinfo=UTC)
    return f"Edited {edited:%Y-%m-%d %H:%M} UTC"


def render_push_summary(push: PushSummary, counts: PushCounts, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    created = push.created_at if push.created_at.tzinfo else push.created_at.replace(tzinfo=UTC)
    copies_out = counts.sent - counts.retracted
    age = duration((now - created).total_seconds())
    edited = edited_line(push)
    return "\n".join(
        [
            f"Broadcast of {created:%Y-%m-%d %H:%M} UTC ({age} ago)",
            f"“{excerpt(push.current_text, push.content_type)}”",
            *([edited] if edited is not None else []),
            f"Copies out: {copies_out} (status: {push.status})",
        ]
    )


def render_stats(report: StatsReport) -> str:
    """/stats and `pushbot stats`: the audience, its changes, the latest broadcasts."""
    audience = report.audience
    lines = [
        f"📊 Statistics · {report.at:%Y-%m-%d %H:%M} UTC",
        f"Subscribers now: {audience.subscribed} "
        f"(unsubscribed {audience.unsubscribed}, purged {audience.purged})",
        "",
    ]
    lines += [f"Last {w.days} days: {_changes(w.changes)}" for w in report.windows]
    lines.append("")
    if report.broadcasts:
        lines.append("Latest broadcasts:")
        lines += [_broadcast_line(broadcast) for broadcast in report.broadcasts]
    else:
        lines.append("No broadcasts yet.")
    return "\n".join(lines)


def _changes(changes: AudienceChanges) -> str:
    purged = f"purged {changes.purged}"
    if changes.purged:
        # Ties in alphabetical order: the same text whichever order the database grouped in.
        reasons = dict(sorted(changes.purged_by_reason.items()))
        purged += f" ({by_reason(reasons)})"
    return f"joined {changes.joined}, returned {changes.returned}, left {changes.left}, {purged}"


def _broadcast_line(broadcast: BroadcastStats) -> str:
    push, counts = broadcast.push, broadcast.counts
    pace = "–" if broadcast.pace is None else f"{broadcast.pace:.1f} msg/s"
    return (
        f"• {push.created_at:%m-%d %H:%M} “{excerpt(push.current_text, push.content_type, 30)}” "
        f"({push.status}): delivered {counts.sent} · failed {counts.failed} · "
        f"removed {counts.retracted} · {pace}"
    )


# --- /push: audience, options, scheduling -------------------------------------------------------

# How many of the audience's languages the audience menu offers (the most common ones).
LANGUAGE_CHOICES = 12


def options_label(disable_notification: bool, protect_content: bool) -> str:
    """`silent, protected`; empty when neither."""
    names = [
        name
        for name, chosen in (("silent", disable_notification), ("protected", protect_content))
        if chosen
    ]
    return ", ".join(names)


def push_labels(push: PushSummary) -> str:
    """Who a push went (or goes) to and how: `private chats · silent, protected`."""
    options = options_label(push.disable_notification, push.protect_content)
    return push.segment.describe() + (f" · {options}" if options else "")


def render_confirmation(
    audience: int,
    segment: Segment,
    silent: bool,
    protected: bool,
    admins_not_reached: Sequence[int] = (),
) -> str:
    """The question under the preview, for the audience and options chosen."""
    if segment == EVERYONE:
        first = f"Above is exactly what {audience} subscribed chat(s) will receive. Send it?"
    elif segment.kind is SegmentKind.ADMINS:
        first = f"Above is exactly what {audience} admin chat(s) will receive (a test). Send it?"
    else:
        first = (
            f"Above is exactly what {audience} subscribed chat(s) will receive "
            f"({segment.describe()} only). Send it?"
        )
    lines = [first]
    if segment.kind is SegmentKind.ADMINS and admins_not_reached:
        ids = ", ".join(str(admin) for admin in admins_not_reached)
        lines.append(
            f"Not reached: {ids} (not on record, or blocked the bot: Telegram lets a bot "
            "write only to users who started it; /start it once)."
        )
    if silent:
        lines.append("🔕 Silent: it arrives without a notification sound.")
    if protected:
        lines.append("🔒 Protected: it cannot be forwarded or saved.")
    return "\n".join(lines)


def confirmation_keyboard(segment: Segment, silent: bool, protected: bool) -> InlineKeyboardMarkup:
    """Send with the defaults is one tap; the rest changes who gets it and how."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Send", callback_data="push:send"),
                InlineKeyboardButton("🗓 Schedule…", callback_data="push:schedule"),
            ],
            [
                InlineKeyboardButton(
                    f"👥 Audience: {segment.describe()}", callback_data="push:audience"
                )
            ],
            [
                InlineKeyboardButton(
                    "🔕 Silent: on" if silent else "🔔 Silent: off", callback_data="push:silent"
                ),
                InlineKeyboardButton(
                    "🔒 Protected: on" if protected else "🔓 Protected: off",
                    callback_data="push:protect",
                ),
            ],
            [InlineKeyboardButton("✖️ Cancel", callback_data="push:cancel")],
        ]
    )


AUDIENCE_QUESTION = "Who should receive it? Each choice shows the chats it reaches now."


def audience_keyboard(
    sizes: Sequence[tuple[Segment, int]], languages: Sequence[LanguageCount]
) -> InlineKeyboardMarkup:
    def button(segment: Segment, chats: int) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            f"{segment.describe()} · {chats}", callback_data=f"push:seg:{segment}"
        )

    buttons = [button(segment, chats) for segment, chats in sizes]
    buttons += [
        button(Segment.of_language(language.code), language.chats)
        for language in languages[:LANGUAGE_CHOICES]
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([InlineKeyboardButton("« Back", callback_data="push:back")])
    return InlineKeyboardMarkup(rows)


def schedule_question(zone: ZoneInfo) -> str:
    return (
        "When should it go out? Send a time: “in 2h”, “in 90m”, “18:30” or "
        f"“2026-12-01 09:00” ({zone.key}). /cancel to stop."
    )


def back_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("« Back", callback_data="push:back")]])


def render_scheduled(push: PushSummary, zone: ZoneInfo, audience: int, now: datetime) -> str:
    """A scheduled push: when, to whom, what."""
    assert push.scheduled_at is not None
    return "\n".join(
        [
            f"🗓 Scheduled for {describe_when(push.scheduled_at, zone, now)}",
            f"Audience: {push_labels(push)} ({audience} chat(s) now)",
            f"“{excerpt(push.text, push.content_type)}”",
            "Its preview above is what every copy is made from: keep it.",
        ]
    )


def scheduled_keyboard(push_uuid: UUID) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✖️ Cancel", callback_data=f"sched:cancel:{push_uuid}"),
                InlineKeyboardButton("▶️ Send now", callback_data=f"sched:now:{push_uuid}"),
            ]
        ]
    )


def render_scheduled_cancelled(push: PushSummary, zone: ZoneInfo, now: datetime) -> str:
    assert push.scheduled_at is not None
    when = describe_when(push.scheduled_at, zone, now)
    return f"✖️ Cancelled: the broadcast scheduled for {when} will not be sent."


_LATE_BECAUSE = {
    LateReason.BOT_WAS_DOWN: "the bot was not running at that time",
    LateReason.WAITED: "it waited for another broadcast to end",
}


def render_scheduled_start(start: ScheduledStart, zone: ZoneInfo, now: datetime) -> str:
    """Posted when a scheduled push starts: on time, or how late and why."""
    push = start.push
    assert push.scheduled_at is not None
    when = describe_when(push.scheduled_at, zone, now)
    lines = [
        f"⏰ The broadcast scheduled for {when} starts now, to {push_labels(push)}: "
        f"“{excerpt(push.text, push.content_type)}”"
    ]
    if start.late_by is not None:
        late = f"It is {describe_delay(start.late_by)} late"
        why = None if start.reason is None else _LATE_BECAUSE[start.reason]
        lines.append(late + (f": {why}." if why else "."))
    return "\n".join(lines)


def render_scheduled_waits(push: PushSummary, busy: Progress, zone: ZoneInfo, now: datetime) -> str:
    assert push.scheduled_at is not None
    when = describe_when(push.scheduled_at, zone, now)
    done = f" ({int(100 * busy.done / busy.total)}% done)" if busy.total else ""
    other = "A retraction" if busy.kind is JobKind.RETRACT else "Another broadcast"
    return (
        f"⏳ The broadcast scheduled for {when} is due, but {other.lower()} is running{done}: "
        "it starts as soon as that one ends."
    )


def render_history(rows: Sequence[PushHistoryRow], zone: ZoneInfo, now: datetime) -> str:
    """/history: the latest broadcasts with whom they went to, how, and their counts."""
    if not rows:
        return "No broadcasts yet."
    lines = ["🗂 Latest broadcasts (newest first):"]
    for row in rows:
        push, counts = row.push, row.counts
        if push.status is PushStatus.SCHEDULED and push.scheduled_at is not None:
            when = "for " + describe_when(push.scheduled_at, zone, now)
        else:
            when = describe_when(push.created_at, zone, now)
        lines.append(
            f"• {when} · {push.status} · {push_labels(push)}\n"
            f"  “{excerpt(push.current_text, push.content_type, 40)}”: delivered {counts.sent} · "
            f"failed {counts.failed} · removed {counts.retracted}"
        )
    return "\n".join(lines)
