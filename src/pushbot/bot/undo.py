"""/undo: retract a broadcast from every chat it reached.

The admin replies /undo to the broadcast's report (or its status or preview message),
names it by uuid, or picks it from a list; then confirms. Telegram lets bots delete their
messages only within 48 hours, so older broadcasts are refused up front.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    TypeHandler,
    filters,
)

from pushbot.bot import render
from pushbot.bot.jobs import watch_job
from pushbot.bot.services import Services, services
from pushbot.broadcast.engine import BroadcastBusy
from pushbot.db.queries import PushSummary

logger = logging.getLogger(__name__)

CHOOSE, CONFIRM = range(2)
CONVERSATION_TIMEOUT_SECONDS = 600
DELETE_WINDOW = timedelta(hours=48)
RECENT_LIMIT = 8


def is_too_old(push: PushSummary, now: datetime | None = None) -> bool:
    created = push.created_at if push.created_at.tzinfo else push.created_at.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) - created > DELETE_WINDOW


async def start_undo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None
    svc = services(context)
    replied = message.reply_to_message
    if replied is not None:
        push = await svc.store.find_push_by_message(message.chat_id, replied.message_id)
        if push is None:
            await message.reply_text(
                "That message is not a broadcast: nothing to undo. "
                "Reply /undo to a broadcast's report."
            )
            return ConversationHandler.END
        return await _describe(message, svc, push)
    if context.args:
        push = await _push_by_uuid_text(svc, context.args[0])
        if push is None:
            await message.reply_text(f"No broadcast with id {context.args[0]!r}: nothing to undo.")
            return ConversationHandler.END
        return await _describe(message, svc, push)
    return await _offer_recent(message, svc)


async def _push_by_uuid_text(svc: Services, raw: str) -> PushSummary | None:
    try:
        push_uuid = UUID(raw)
    except ValueError:
        return None
    return await svc.store.get_push(push_uuid)


async def _offer_recent(message: Message, svc: Services) -> int:
    rows = [
        row
        for row in await svc.store.recent_pushes(RECENT_LIMIT)
        if not row.push.deleted and row.counts.sent > 0
    ]
    if not rows:
        await message.reply_text("There is no broadcast to undo.")
        return ConversationHandler.END
    buttons = [
        [
            InlineKeyboardButton(
                f"{row.push.created_at:%d %b %H:%M} · {row.counts.sent} · "
                f"{render.excerpt(row.push.text, row.push.content_type, 30)}",
                callback_data=f"undo:pick:{row.push.uuid}",
            )
        ]
        for row in rows
    ]
    buttons.append([InlineKeyboardButton("✖️ Keep everything", callback_data="undo:keep")])
    await message.reply_text(
        "Which broadcast should I retract?", reply_markup=InlineKeyboardMarkup(buttons)
    )
    return CHOOSE


async def pick(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and query.data is not None and isinstance(query.message, Message)
    await query.answer()
    push = await _push_by_uuid_text(services(context), query.data.removeprefix("undo:pick:"))
    if push is None:
        await query.edit_message_text("That broadcast no longer exists.")
        return ConversationHandler.END
    return await _describe(query.message, services(context), push, edit=True)


async def _describe(message: Message, svc: Services, push: PushSummary, edit: bool = False) -> int:
    counts = await svc.store.push_counts(push.uuid)
    summary = render.render_push_summary(push, counts)
    if push.deleted or push.status in ("retracting", "retracted"):
        return await _say(message, summary + "\n\nIt is already retracted.", edit)
    if is_too_old(push):
        return await _say(
            message,
            summary + "\n\nIt is older than 48 hours: Telegram no longer "
            "lets bots delete it, so it cannot be retracted.",
            edit,
        )
    if counts.sent - counts.retracted == 0 and push.status not in ("running", "paused"):
        return await _say(message, summary + "\n\nNo copy was delivered: nothing to retract.", edit)
    running = (
        " It is still running: I will stop it first."
        if push.status in ("running", "paused")
        else ""
    )
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("🗑 Retract", callback_data=f"undo:retract:{push.uuid}"),
                InlineKeyboardButton("✖️ Keep", callback_data="undo:keep"),
            ]
        ]
    )
    text = f"{summary}\n\nDelete it from every chat?{running}"
    if edit:
        await message.edit_text(text, reply_markup=keyboard)
    else:
        await message.reply_text(text, reply_markup=keyboard)
    return CONFIRM


async def _say(message: Message, text: str, edit: bool) -> int:
    if edit:
        await message.edit_text(text)
    else:
        await message.reply_text(text)
    return ConversationHandler.END


async def retract(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and query.data is not None and isinstance(query.message, Message)
    svc = services(context)
    push_uuid = UUID(query.data.removeprefix("undo:retract:"))
    await query.answer()
    push = await svc.store.get_push(push_uuid)
    if push is None or push.deleted or push.status in ("retracting", "retracted"):
        await query.edit_message_text("It is already retracted.")
        return ConversationHandler.END
    try:
        await asyncio.to_thread(svc.broadcaster.launch_retract, push_uuid)
    except BroadcastBusy:
        await query.edit_message_text("Another job is running; try again when it ends.")
        return ConversationHandler.END
    logger.info("retraction of %s launched by admin %s", push_uuid, query.from_user.id)
    chat_id = query.message.chat.id
    # The report chat's status message becomes the retraction's live status.
    await svc.store.set_push_message_ids(
        push_uuid,
        report_chat_id=push.report_chat_id or chat_id,
        status_message_id=query.message.message_id,
    )
    # The watcher's first edit turns this message into the live status at once.
    watch_job(context.application, push_uuid, chat_id, query.message.message_id)
    return ConversationHandler.END


async def keep(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None
    await query.answer()
    await query.edit_message_text("Kept: nothing was deleted.")
    return ConversationHandler.END


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    if update.effective_message is not None:
        await update.effective_message.reply_text("Cancelled: nothing was deleted.")
    return ConversationHandler.END


async def timed_out(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.effective_chat is not None:
        await context.bot.send_message(
            update.effective_chat.id, "/undo timed out: nothing was deleted."
        )


def undo_conversation(admin_filter: filters.BaseFilter) -> ConversationHandler[Any]:
    return ConversationHandler(
        entry_points=[CommandHandler("undo", start_undo, filters=admin_filter)],
        states={
            CHOOSE: [
                CallbackQueryHandler(pick, pattern=r"^undo:pick:"),
                CallbackQueryHandler(keep, pattern=r"^undo:keep$"),
            ],
            CONFIRM: [
                CallbackQueryHandler(retract, pattern=r"^undo:retract:"),
                CallbackQueryHandler(keep, pattern=r"^undo:keep$"),
            ],
            ConversationHandler.TIMEOUT: [TypeHandler(Update, timed_out)],
        },
        fallbacks=[CommandHandler("cancel", cancel, filters=admin_filter)],
        conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        name="undo",
    )
