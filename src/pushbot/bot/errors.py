"""The central error handler: log everything, tell the admins about the unexpected.

Texts shown to admins pass through the same redaction as the logs, so an exception that
happens to carry a request URL can never put the token in a chat.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from telegram import Update
from telegram.error import Forbidden, NetworkError, TelegramError, TimedOut
from telegram.ext import ContextTypes

from pushbot.bot.services import services
from pushbot.logs import redact, token_secrets

logger = logging.getLogger(__name__)

# Admins hear about at most one unexpected error per this many seconds: a failure loop
# must not flood their chats (nor eat the bot's message budget).
ADMIN_ALERT_INTERVAL = 60.0
_last_alert = 0.0


def is_routine(error: BaseException) -> bool:
    """Network blips and users who blocked us happen all day: log them, bother no one."""
    return isinstance(error, (TimedOut, Forbidden)) or (
        isinstance(error, NetworkError) and type(error) is NetworkError
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    error = context.error
    if error is None:
        return
    where = _describe_update(update)
    if is_routine(error):
        logger.warning("Telegram error while handling %s: %s", where, error)
        return
    logger.error("unexpected error while handling %s", where, exc_info=error)
    await _alert_admins(context, error, where)


async def _alert_admins(
    context: ContextTypes.DEFAULT_TYPE, error: BaseException, where: str
) -> None:
    global _last_alert
    now = time.monotonic()
    if now - _last_alert < ADMIN_ALERT_INTERVAL:
        return
    _last_alert = now
    settings = services(context).settings
    text = redact(
        f"⚠️ Unexpected error while handling {where}:\n{type(error).__name__}: {error}",
        token_secrets(settings.bot_token),
    )
    for admin_id in settings.admin_ids:
        try:
            await context.bot.send_message(admin_id, text[:4000])
        except TelegramError as exc:
            logger.warning("could not alert admin %s: %s", admin_id, exc)


def _describe_update(update: object) -> str:
    if isinstance(update, Update):
        chat = update.effective_chat
        kind = next(
            (
                name
                for name in ("message", "callback_query", "my_chat_member", "edited_message")
                if getattr(update, name) is not None
            ),
            "update",
        )
        return f"{kind} #{update.update_id}" + (f" in chat {chat.id}" if chat else "")
    # ptb passes no update for errors of its polling loop and of background jobs.
    return "polling or a background job" if update is None else type(update).__name__


def install(application: Any) -> None:
    application.add_error_handler(on_error)
