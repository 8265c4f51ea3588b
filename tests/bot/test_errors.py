"""The central error handler: unexpected errors reach the admins, the token never does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telegram import Update
from telegram.ext import CommandHandler, ContextTypes

from pushbot.bot import errors
from tests.fixtures.bot import ADMIN_ID, BotHarness


def test_unexpected_errors_are_reported_to_admins_without_the_token(
    bot_factory: Callable[..., BotHarness],
) -> None:
    errors._last_alert = 0.0  # another test may have alerted within the last minute

    def install_failing_command(app: Any) -> None:
        token = app.bot.token

        async def explode(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            raise RuntimeError(f"upstream said no to https://api.telegram.org/bot{token}/x")

        app.add_handler(CommandHandler("explode", explode), group=-1)

    bot = bot_factory(setup=install_failing_command)
    user = bot.tg.add_user()
    bot.say("/explode", user)
    alert = bot.tg.wait_for_message(ADMIN_ID, lambda m: "Unexpected error" in m.get("text", ""))
    assert "RuntimeError" in alert["text"] and "<redacted>" in alert["text"]
    assert bot.tg.token.split(":")[1] not in alert["text"]
