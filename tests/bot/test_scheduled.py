"""Scheduled pushes end to end: Schedule… under the preview, /scheduled with Cancel and Send
now, a start on time, a start after the bot was down, a wait for another broadcast. The
scheduler's time is the test's clock: nothing sleeps until a due time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from pushbot.broadcast.schedule import describe_when
from pushbot.db import queries
from pushbot.db.models import PushStatus
from tests.bot.flows import (
    Clock,
    buttons,
    choose_audience,
    copies_in,
    open_push,
    press,
    report_after,
    schedule,
    scheduled_reply,
    scheduled_uuid,
    text_of,
)
from tests.fixtures.bot import ADMIN_ID, BotHarness
from tgstandin.server import StandIn

BERLIN = ZoneInfo("Europe/Berlin")


def _bot(
    standin: StandIn, bot_factory: Callable[..., BotHarness], clock: Clock, **overrides: object
) -> BotHarness:
    standin.set_limits(enabled=False)
    return bot_factory(
        clock=clock, default_timezone="Europe/Berlin", broadcast_rate=1000.0, **overrides
    )


def _status(bot: BotHarness, push_uuid: UUID) -> str | None:
    push = bot.query(lambda s: queries.get_push(s, push_uuid))
    return None if push is None else str(push.status)


def test_schedule_a_push_and_it_starts_once_on_time(
    standin: StandIn, bot_factory: Callable[..., BotHarness]
) -> None:
    clock = Clock()
    bot = _bot(standin, bot_factory, clock)
    users = bot.tg.add_users(4)
    bot.subscribe(users)
    confirm = open_push(bot, "See you at half past")
    choose_audience(bot, confirm["message_id"], "private")
    press(bot, confirm["message_id"], "push:silent", lambda t: "🔕 Silent" in t)
    press(bot, confirm["message_id"], "push:schedule", lambda t: "When should it go out?" in t)
    assert "(Europe/Berlin)" in text_of(bot, confirm["message_id"])

    mark = bot.last_message_id()
    bot.say("whenever")
    refused = bot.next_reply(mark)
    assert "can't read 'whenever' as a time" in refused["text"]
    mark = bot.last_message_id()
    bot.say("2020-01-01 10:00")
    assert "has passed" in bot.next_reply(mark)["text"]
    mark = bot.last_message_id()
    bot.say("in 2h")
    scheduled = scheduled_reply(bot, mark)

    due = clock.now + timedelta(hours=2)
    assert scheduled["text"].startswith(f"🗓 Scheduled for {describe_when(due, BERLIN, clock.now)}")
    assert "Audience: private chats · silent (4 chat(s) now)" in scheduled["text"]
    assert set(buttons(bot, scheduled["message_id"])) == {"✖️ Cancel", "▶️ Send now"}
    push_uuid = scheduled_uuid(scheduled)
    assert _status(bot, push_uuid) == PushStatus.SCHEDULED
    assert all(copies_in(bot, user) == [] for user in users), "nothing before its time"

    clock.advance(timedelta(hours=2))
    bot.runtime.broadcasts.wake_scheduler()
    started = bot.next_reply(scheduled["message_id"], lambda m: "starts now" in m.get("text", ""))
    report = report_after(bot, started["message_id"])

    assert "late" not in started["text"] and "private chats · silent" in started["text"]
    assert "Audience: private chats · silent" in report["text"] and "Delivered: 4" in report["text"]
    # The scheduled message was the live status; the start and the report reply to it.
    assert text_of(bot, scheduled["message_id"]) == "Broadcast done: see the report below."
    assert started["reply_to_message"]["message_id"] == scheduled["message_id"]
    assert report["reply_to_message"]["message_id"] == scheduled["message_id"]
    assert all(len(copies_in(bot, user)) == 1 for user in users)
    assert all(copies_in(bot, user)[0]["send_options"]["disable_notification"] for user in users)
    bot.runtime.broadcasts.wake_scheduler()  # looking again starts nothing more
    mark = bot.last_message_id()
    bot.say("/scheduled")
    assert "Nothing is scheduled" in bot.next_reply(mark)["text"]
    assert all(len(copies_in(bot, user)) == 1 for user in users)


def test_scheduled_lists_them_with_cancel_and_send_now(
    standin: StandIn, bot_factory: Callable[..., BotHarness]
) -> None:
    clock = Clock()
    bot = _bot(standin, bot_factory, clock)
    users = bot.tg.add_users(3)
    bot.subscribe(users)
    first = schedule(bot, open_push(bot, "First")["message_id"], "in 1h")
    second = schedule(bot, open_push(bot, "Second")["message_id"], "in 3h")

    mark = bot.last_message_id()
    bot.say("/scheduled")
    header = bot.next_reply(mark, lambda m: "scheduled broadcast(s)" in m.get("text", ""))
    assert header["text"].startswith("🗓 2 scheduled broadcast(s)")
    listed = [
        bot.next_reply(header["message_id"], lambda m: "“First”" in m.get("text", "")),
        bot.next_reply(header["message_id"], lambda m: "“Second”" in m.get("text", "")),
    ]
    assert listed[0]["message_id"] < listed[1]["message_id"], "soonest first"
    first_uuid, second_uuid = scheduled_uuid(first), scheduled_uuid(second)
    assert scheduled_uuid(listed[0]) == first_uuid

    press(bot, listed[0]["message_id"], f"sched:cancel:{first_uuid}", lambda t: "Cancelled" in t)
    assert _status(bot, first_uuid) == PushStatus.CANCELLED
    press(bot, listed[1]["message_id"], f"sched:now:{second_uuid}")
    report = report_after(bot, listed[1]["message_id"])
    assert "Delivered: 3" in report["text"]
    assert _status(bot, second_uuid) == PushStatus.DONE
    # The old buttons now do nothing: neither is scheduled any more.
    press(bot, first["message_id"], f"sched:now:{first_uuid}")
    press(bot, second["message_id"], f"sched:cancel:{second_uuid}")
    bot.tg.wait_for(
        lambda: (
            sum(
                "no longer scheduled" in str(c.params.get("text"))
                for c in bot.tg.calls("answerCallbackQuery")
            )
            == 2
        )
    )
    clock.advance(timedelta(hours=4))
    bot.runtime.broadcasts.wake_scheduler()
    mark = bot.last_message_id()
    bot.say("/scheduled")
    assert "Nothing is scheduled" in bot.next_reply(mark)["text"]
    assert [len(copies_in(bot, user)) for user in users] == [1, 1, 1]
    assert [c["text"] for c in copies_in(bot, users[0])] == ["Second"]


def test_a_push_due_while_the_bot_was_down_starts_at_the_next_start_and_says_how_late(
    standin: StandIn, bot_factory: Callable[..., BotHarness]
) -> None:
    clock = Clock()
    first_run = _bot(standin, bot_factory, clock)
    users = first_run.tg.add_users(3)
    first_run.subscribe(users)
    scheduled = schedule(
        first_run, open_push(first_run, "While you were out")["message_id"], "in 10m"
    )
    first_run.thread.stop()
    clock.advance(timedelta(hours=3, minutes=10))  # the bot was down at the due time

    second_run = bot_factory(clock=clock, default_timezone="Europe/Berlin", broadcast_rate=1000.0)
    started = second_run.next_reply(
        scheduled["message_id"], lambda m: "starts now" in m.get("text", "")
    )
    report = report_after(second_run, started["message_id"])

    assert "It is 3 h late: the bot was not running at that time." in started["text"]
    assert "Delivered: 3" in report["text"]
    assert all(len(copies_in(second_run, user)) == 1 for user in users)


def test_a_push_due_while_another_runs_waits_says_so_and_then_starts(
    bot_factory: Callable[..., BotHarness],
) -> None:
    clock = Clock()
    # Telegram's real limits: 60 recipients take about two seconds, long enough to overlap.
    bot = bot_factory(clock=clock)
    bot.seed_subscribers(60)
    scheduled = schedule(bot, open_push(bot, "Patience")["message_id"], "in 5m")
    running = bot.send_push("In the way")

    bot.tg.wait_for(lambda: bot.runtime.broadcaster.active() is not None)
    clock.advance(timedelta(minutes=5))
    bot.runtime.broadcasts.wake_scheduler()
    waits = bot.next_reply(scheduled["message_id"], lambda m: "is due, but" in m.get("text", ""))
    assert "another broadcast is running" in waits["text"]
    assert "starts as soon as that one ends" in waits["text"]

    started = bot.next_reply(
        waits["message_id"], lambda m: "starts now" in m.get("text", ""), timeout=60
    )
    # Each report replies to its own status message (in whichever order they are posted).
    reports = [_report_to(bot, running["message_id"]), _report_to(bot, scheduled["message_id"])]
    assert started["reply_to_message"]["message_id"] == scheduled["message_id"]
    assert all("Delivered: 60" in report["text"] for report in reports)
    waiting_notes = [m for m in bot.tg.inbox(ADMIN_ID) if "is due, but" in m.get("text", "")]
    assert len(waiting_notes) == 1, "told once"
    assert set(bot.copies_per_chat().values()) == {2}, "each of the two broadcasts once"


def _report_to(bot: BotHarness, status_message_id: int) -> dict[str, Any]:
    def replies_to_it(message: dict[str, Any]) -> bool:
        replied = message.get("reply_to_message", {}).get("message_id")
        return "Broadcast finished" in message.get("text", "") and replied == status_message_id

    return bot.next_reply(status_message_id, replies_to_it, timeout=60)
