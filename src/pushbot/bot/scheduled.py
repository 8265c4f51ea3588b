"""Scheduled broadcasts in the bot: /scheduled with Cancel and Send now, what the scheduler
tells the admin (a start, how late, a wait), and /history.

The scheduling itself is the broadcast service's (pushbot.broadcast.scheduler): this module
only shows it and relays the buttons.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from telegram import Message, Update
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, filters

from pushbot.bot import render
from pushbot.bot.jobs import busy_text, watch_job
from pushbot.bot.services import SERVICES_KEY, Services, services
from pushbot.broadcast.engine import BroadcastBusy, JobState
from pushbot.broadcast.scheduler import NotScheduled, ScheduledStart, ScheduledWait, ScheduleEvent

logger = logging.getLogger(__name__)

AnyApp = Application[Any, Any, Any, Any, Any, Any]
LIST_LIMIT = 10
HISTORY_LIMIT = 10


class ScheduleRelay:
    """Hands the scheduler's events (fired in its thread) to the Application's loop."""

    def __init__(self, app: AnyApp, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        self._loop = loop

    def __call__(self, event: ScheduleEvent) -> None:
        if not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(announce(self._app, event), self._loop)


async def announce(app: AnyApp, event: ScheduleEvent) -> None:
    svc: Services = app.bot_data[SERVICES_KEY]
    push = event.push
    chat_id = push.report_chat_id or push.admin_id
    zone, now = svc.settings.default_timezone, svc.broadcasts.clock()
    try:
        if isinstance(event, ScheduledWait):
            await app.bot.send_message(
                chat_id, render.render_scheduled_waits(push, event.busy, zone, now)
            )
            return
        await _show_started(app, svc, event, chat_id)
    except TelegramError as exc:
        logger.warning(
            "could not tell admin %s about scheduled push %s: %s", chat_id, push.uuid, exc
        )


async def _show_started(app: AnyApp, svc: Services, start: ScheduledStart, chat_id: int) -> None:
    """The scheduled push's own message (recorded when it was scheduled, so the report
    finds it however soon the job ends) becomes its live status; the news of the start,
    late or not, replies to it."""
    push = start.push
    zone, now = svc.settings.default_timezone, svc.broadcasts.clock()
    await app.bot.send_message(
        chat_id,
        render.render_scheduled_start(start, zone, now),
        reply_to_message_id=push.status_message_id,
    )
    if push.status_message_id is not None:
        watch_job(app, push.uuid, chat_id, push.status_message_id)
        return
    status = await app.bot.send_message(
        chat_id,
        render.render_progress(start.handle.progress()),
        reply_markup=render.job_keyboard(push.uuid, JobState.RUNNING),
    )
    await asyncio.to_thread(svc.broadcasts.move_status_to, push.uuid, chat_id, status.message_id)
    watch_job(app, push.uuid, chat_id, status.message_id)


async def list_scheduled(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    assert message is not None
    svc = services(context)
    pushes = await asyncio.to_thread(svc.broadcasts.scheduled)
    if not pushes:
        await message.reply_text("Nothing is scheduled. /push, then 🗓 Schedule…")
        return
    shown = pushes[:LIST_LIMIT]
    more = f" (the {len(shown)} soonest below)" if len(pushes) > len(shown) else ""
    await message.reply_text(f"🗓 {len(pushes)} scheduled broadcast(s){more}:")
    zone, now = svc.settings.default_timezone, svc.broadcasts.clock()
    for push in shown:
        audience = await asyncio.to_thread(svc.broadcasts.audience_size, push.segment)
        await message.reply_text(
            render.render_scheduled(push, zone, audience, now),
            reply_markup=render.scheduled_keyboard(push.uuid),
        )


async def on_scheduled_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    svc = services(context)
    if not svc.settings.is_admin(query.from_user.id) or not isinstance(query.message, Message):
        await query.answer()
        return
    _, action, raw_uuid = query.data.split(":", 2)
    push_uuid = UUID(raw_uuid)
    if action == "cancel":
        await _cancel(query.message, svc, push_uuid, query.answer)
    else:
        await _send_now(context, query.message, svc, push_uuid, query.answer)


async def _cancel(message: Message, svc: Services, push_uuid: UUID, answer: Any) -> None:
    cancelled = await asyncio.to_thread(svc.broadcasts.cancel_scheduled, push_uuid)
    push = await asyncio.to_thread(svc.broadcasts.get, push_uuid)
    if not cancelled or push is None:
        await answer(_not_scheduled_text(None if push is None else push.status))
        return
    await answer("Cancelled")
    zone, now = svc.settings.default_timezone, svc.broadcasts.clock()
    await message.edit_text(render.render_scheduled_cancelled(push, zone, now))


async def _send_now(
    context: ContextTypes.DEFAULT_TYPE,
    message: Message,
    svc: Services,
    push_uuid: UUID,
    answer: Any,
) -> None:
    # This message becomes the live status, before the job starts: the report, however soon
    # it comes, replies to it (and it stays where the push is shown if it cannot start now).
    await asyncio.to_thread(
        svc.broadcasts.show_status_in, push_uuid, message.chat.id, message.message_id
    )
    try:
        await asyncio.to_thread(svc.broadcasts.start_scheduled, push_uuid)
    except BroadcastBusy as exc:
        await answer(busy_text(push_uuid, exc.active) + " It stays scheduled.")
        return
    except NotScheduled as exc:
        await answer(_not_scheduled_text(exc.status))
        return
    await answer("Sending now")
    logger.info("scheduled broadcast %s sent now by an admin", push_uuid)
    watch_job(context.application, push_uuid, message.chat.id, message.message_id)


def _not_scheduled_text(status: str | None) -> str:
    if status is None:
        return "Nothing to do: that broadcast no longer exists."
    return f"Nothing to do: it is no longer scheduled (it is {status})."


async def history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    assert message is not None
    svc = services(context)
    rows = await asyncio.to_thread(svc.broadcasts.recent, HISTORY_LIMIT)
    zone, now = svc.settings.default_timezone, svc.broadcasts.clock()
    await message.reply_text(render.render_history(rows, zone, now))


def scheduled_handlers(admin_filter: filters.BaseFilter) -> list[Any]:
    return [
        CommandHandler("scheduled", list_scheduled, filters=admin_filter),
        CommandHandler("history", history, filters=admin_filter),
        CallbackQueryHandler(on_scheduled_button, pattern=r"^sched:(cancel|now):"),
    ]
