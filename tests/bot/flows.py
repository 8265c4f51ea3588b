"""Playing the admin through /push's confirmation: its buttons, and the edits they cause."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pushbot.db import queries
from tests.fixtures.bot import ADMIN_ID, BotHarness


class Clock:
    """The time scheduled pushes are due by, moved by the test (the bot's `clock`)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def text_of(bot: BotHarness, message_id: int, chat_id: int = ADMIN_ID) -> str:
    return str((bot.tg.message(chat_id, message_id) or {}).get("text", ""))


def press(
    bot: BotHarness, message_id: int, data: str, until: Callable[[str], bool] | None = None
) -> str:
    """Press a button of the admin's message; wait until its text satisfies `until`."""
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, message_id, data)
    if until is not None:
        bot.tg.wait_for(lambda: until(text_of(bot, message_id)))
    return text_of(bot, message_id)


def buttons(bot: BotHarness, message_id: int) -> dict[str, str]:
    """label -> callback data of the message's inline keyboard as it is now."""
    message = bot.tg.message(ADMIN_ID, message_id) or {}
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row}


def open_push(bot: BotHarness, text: str) -> dict[str, Any]:
    """/push <text>; returns the confirmation under the preview."""
    mark = bot.last_message_id()
    bot.say(f"/push {text}")
    return bot.next_reply(mark, lambda m: "Send it?" in m.get("text", ""))


def choose_audience(bot: BotHarness, confirm_id: int, segment: str) -> str:
    press(bot, confirm_id, "push:audience", lambda t: "Who should receive it?" in t)
    return press(bot, confirm_id, f"push:seg:{segment}", lambda t: "Send it?" in t)


def schedule(bot: BotHarness, confirm_id: int, when: str) -> dict[str, Any]:
    """Schedule… then type `when`; returns the scheduled push's message."""
    press(bot, confirm_id, "push:schedule", lambda t: "When should it go out?" in t)
    mark = bot.last_message_id()
    bot.say(when)
    return scheduled_reply(bot, mark)


def scheduled_reply(bot: BotHarness, mark: int) -> dict[str, Any]:
    """The scheduled push's message after `mark`, once the bot has recorded it as the push's
    status message (right after Telegram returned it: a due time reached sooner than that,
    as only a test's clock can, would find no status message to reply to)."""
    scheduled = bot.next_reply(mark, lambda m: m.get("text", "").startswith("🗓 Scheduled for"))
    push_uuid = scheduled_uuid(scheduled)

    def recorded() -> bool:
        push = bot.query(lambda s: queries.get_push(s, push_uuid))
        return push is not None and bool(push.status_message_id == scheduled["message_id"])

    bot.tg.wait_for(recorded)
    return scheduled


def scheduled_uuid(message: dict[str, Any]) -> UUID:
    data = message["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    return UUID(str(data).removeprefix("sched:now:"))


def report_after(bot: BotHarness, message_id: int, timeout: float = 30.0) -> dict[str, Any]:
    report = bot.next_reply(
        message_id, lambda m: "Broadcast finished" in m.get("text", ""), timeout=timeout
    )
    # The stand-in shows the report before the bot has stored its id (as BotHarness.push
    # waits for): a test reading the push by its report must not race that write.
    bot.tg.wait_for(lambda: bot.push_of(report["message_id"]) is not None)
    return report


def copies_in(bot: BotHarness, chat_id: int) -> list[dict[str, Any]]:
    return [m for m in bot.tg.inbox(chat_id) if m.get("copied_from")]
