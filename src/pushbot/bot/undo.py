"""/undo: retract a broadcast from every chat it reached.

The admin replies /undo to the broadcast's report (or its status or preview message),
names it by uuid, or picks it from a list; then confirms. Telegram lets bots delete their
messages only within 48 hours, so older broadcasts are refused up front.
"""

from __future__ import annotations

import asyncio
import logging
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
from pushbot.broadcast.service import CannotRetract, UndoCheck, UndoVerdict, UnknownBroadcast

logger = logging.getLogger(__name__)

CHOOSE, CONFIRM = range(2)
CONVERSATION_TIMEOUT_SECONDS = 600
RECENT_LIMIT = 8

# Why a push cannot be retracted, below its summary.
REFUSALS = {
    UndoVerdict.ALREADY_RETRACTED: "It is already retracted.",
    UndoVerdict.TOO_OLD: "It is older than 48 hours: Telegram no longer "
    "lets bots delete it, so it cannot be retracted.",
    UndoVerdict.NOTHING_DELIVERED: "No copy was delivered: nothing to retract.",
}


async def start_undo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None
    svc = services(context)
    replied = message.reply_to_message
    if replied is not None:
        push = await asyncio.to_thread(
            svc.broadcasts.find_by_message, message.chat_id, replied.message_id
        )
        if push is None:
            await message.reply_text(
                "That message is not a broadcast: nothing to undo. "
                "Reply /undo to a broadcast's report."
            )
            return ConversationHandler.END
        return await _describe(message, svc, push.uuid)
    if context.args:
        check = await _check_by_uuid_text(svc, context.args[0])
        if check is None:
            await message.reply_text(f"No broadcast with id {context.args[0]!r}: nothing to undo.")
            return ConversationHandler.END
        return await _show(message, check)
    return await _offer_recent(message, svc)


async def _check_by_uuid_text(svc: Services, raw: str) -> UndoCheck | None:
    try:
        push_uuid = UUID(raw)
    except ValueError:
        return None
    try:
        return await asyncio.to_thread(svc.broadcasts.check_undo, push_uuid)
    except UnknownBroadcast:
        return None


async def _offer_recent(message: Message, svc: Services) -> int:
    rows = await asyncio.to_thread(svc.broadcasts.retractable, RECENT_LIMIT)
    if not rows:
        await message.reply_text("There is no broadcast to undo.")
        return ConversationHandler.END
    buttons = [
        [
            InlineKeyboardButton(
                f"{row.push.created_at:%d %b %H:%M} · {row.counts.sent} · "
                f"{render.excerpt(row.push.current_text, row.push.content_type, 30)}",
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
    check = await _check_by_uuid_text(services(context), query.data.removeprefix("undo:pick:"))
    if check is None:
        await query.edit_message_text("That broadcast no longer exists.")
        return ConversationHandler.END
    return await _show(query.message, check, edit=True)


async def _describe(message: Message, svc: Services, push_uuid: UUID) -> int:
    try:
        check = await asyncio.to_thread(svc.broadcasts.check_undo, push_uuid)
    except UnknownBroadcast:
        return await _say(message, "That broadcast no longer exists.", edit=False)
    return await _show(message, check)


async def _show(message: Message, check: UndoCheck, edit: bool = False) -> int:
    summary = render.render_push_summary(check.push, check.counts)
    refusal = REFUSALS.get(check.verdict)
    if refusal is not None:
        return await _say(message, f"{summary}\n\n{refusal}", edit)
    running = " It is still running: I will stop it first." if check.stops_sending_first else ""
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("🗑 Retract", callback_data=f"undo:retract:{check.push.uuid}"),
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
    chat_id = query.message.chat.id
    # This message becomes the retraction's live status; the report goes to the report chat.
    status_message = (chat_id, query.message.message_id)
    try:
        await asyncio.to_thread(svc.broadcasts.undo, push_uuid, status_message)
    except CannotRetract as refused:
        # Pressed twice, or the push changed since the question (another admin's /undo).
        await query.edit_message_text(REFUSALS[refused.check.verdict])
        return ConversationHandler.END
    except UnknownBroadcast:
        await query.edit_message_text("That broadcast no longer exists.")
        return ConversationHandler.END
    except BroadcastBusy:
        await query.edit_message_text("Another job is running; try again when it ends.")
        return ConversationHandler.END
    logger.info("retraction of %s launched by admin %s", push_uuid, query.from_user.id)
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
