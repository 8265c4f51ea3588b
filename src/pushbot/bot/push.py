"""/push: an admin's message, previewed exactly as users will get it, then broadcast.

The preview is a copy of the admin's message in the admin's own chat, and it is also the
source every recipient's copy is made from (copyMessage keeps media, formatting and
entities; no parse_mode pitfalls).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from pushbot.bot import render
from pushbot.bot.jobs import watch_job
from pushbot.bot.services import services
from pushbot.broadcast.engine import BroadcastBusy
from pushbot.db.queries import PushDraft

logger = logging.getLogger(__name__)

AWAIT_CONTENT, CONFIRM = range(2)
CONVERSATION_TIMEOUT_SECONDS = 600
DRAFT_KEY = "push_draft"


@dataclass(frozen=True)
class Draft:
    preview_message_id: int
    confirm_message_id: int
    text: str | None
    content_type: str


def content_type_of(message: Message) -> str:
    attachment = message.effective_attachment
    if attachment is None:
        return "text"
    if isinstance(attachment, tuple):  # photos come as a tuple of sizes
        return "photo"
    return type(attachment).__name__.lower()


async def start_push(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None
    svc = services(context)
    # busy() also sees a broadcast another process of the bot is sending (the lease).
    active = await asyncio.to_thread(svc.broadcasts.busy)
    if active is not None:
        await message.reply_text(
            "A broadcast is already running; one at a time.\n\n" + render.render_progress(active)
        )
        return ConversationHandler.END
    inline_text = _text_after_command(message)
    if inline_text is None:
        await message.reply_text(
            "Send me the message to broadcast: text, photo, video, document… "
            "formatting is kept. /cancel to stop."
        )
        return AWAIT_CONTENT
    text, entities = inline_text
    preview = await message.get_bot().send_message(message.chat_id, text, entities=entities)
    return await _ask_confirmation(message, context, preview, text, "text")


async def receive_content(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None
    preview_id = await message.copy(message.chat_id)
    text = message.text or message.caption
    # A copy made by the bot looks exactly like what recipients get: it is the preview.
    preview = Message(message_id=preview_id.message_id, date=message.date, chat=message.chat)
    return await _ask_confirmation(message, context, preview, text, content_type_of(message))


async def _ask_confirmation(
    message: Message,
    context: ContextTypes.DEFAULT_TYPE,
    preview: Message,
    text: str | None,
    content_type: str,
) -> int:
    audience = await asyncio.to_thread(services(context).broadcasts.audience_size)
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Send", callback_data="push:send"),
                InlineKeyboardButton("✖️ Cancel", callback_data="push:cancel"),
            ]
        ]
    )
    confirm = await message.get_bot().send_message(
        message.chat_id,
        f"Above is exactly what {audience} subscribed chat(s) will receive. Send it?",
        reply_to_message_id=preview.message_id,
        reply_markup=keyboard,
    )
    _user_data(context)[DRAFT_KEY] = Draft(
        preview.message_id, confirm.message_id, text, content_type
    )
    return CONFIRM


async def confirm_send(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and query.message is not None and query.from_user is not None
    draft = _user_data(context).pop(DRAFT_KEY, None)
    if not isinstance(draft, Draft):
        await query.answer("This preview has expired: /push again.")
        return ConversationHandler.END
    await query.answer()
    chat_id = query.message.chat.id
    push_draft = PushDraft(
        text=draft.text,
        content_type=draft.content_type,
        source_chat_id=chat_id,
        source_message_id=draft.preview_message_id,
        admin_id=query.from_user.id,
        preview_message_id=draft.preview_message_id,
        status_message_id=draft.confirm_message_id,
    )
    try:
        job = await asyncio.to_thread(services(context).broadcasts.push, push_draft)
    except BroadcastBusy:
        await query.edit_message_text("Another broadcast started meanwhile; one at a time.")
        return ConversationHandler.END
    logger.info("broadcast %s launched by admin %s", job.uuid, query.from_user.id)
    # The watcher's first edit turns this message into the live status at once.
    watch_job(context.application, job.uuid, chat_id, draft.confirm_message_id)
    return ConversationHandler.END


async def confirm_cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None
    _user_data(context).pop(DRAFT_KEY, None)
    await query.answer()
    await query.edit_message_text("Cancelled: nothing was sent.")
    return ConversationHandler.END


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    _user_data(context).pop(DRAFT_KEY, None)
    if update.effective_message is not None:
        await update.effective_message.reply_text("Cancelled: nothing was sent.")
    return ConversationHandler.END


async def timed_out(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    _user_data(context).pop(DRAFT_KEY, None)
    chat = update.effective_chat
    if chat is not None:
        await context.bot.send_message(chat.id, "/push timed out: nothing was sent.")


def _user_data(context: ContextTypes.DEFAULT_TYPE) -> dict[Any, Any]:
    assert context.user_data is not None
    return context.user_data


def _text_after_command(message: Message) -> tuple[str, list[MessageEntity]] | None:
    """`/push <text>`: the text with its formatting, shifted to start at offset 0."""
    text = message.text or ""
    command = next(
        (e for e in message.entities if e.type == MessageEntity.BOT_COMMAND and e.offset == 0), None
    )
    if command is None:
        return None
    # The command (ASCII) and the blanks after it: Python and UTF-16 offsets agree here.
    body = text[command.length :].lstrip()
    if not body.strip():
        return None
    shift = len(text) - len(body)
    kept = [e for e in message.entities if e is not command and e.offset >= shift]
    return body, list(MessageEntity.shift_entities(-shift, kept))


def push_conversation(admin_filter: filters.BaseFilter) -> ConversationHandler[Any]:
    return ConversationHandler(
        entry_points=[CommandHandler("push", start_push, filters=admin_filter)],
        states={
            AWAIT_CONTENT: [
                MessageHandler(
                    admin_filter & ~filters.COMMAND & ~filters.StatusUpdate.ALL, receive_content
                )
            ],
            CONFIRM: [
                CallbackQueryHandler(confirm_send, pattern=r"^push:send$"),
                CallbackQueryHandler(confirm_cancel, pattern=r"^push:cancel$"),
            ],
            ConversationHandler.TIMEOUT: [TypeHandler(Update, timed_out)],
        },
        fallbacks=[CommandHandler("cancel", cancel, filters=admin_filter)],
        conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        name="push",
    )
