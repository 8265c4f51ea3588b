"""/edit: correct a broadcast's text (or caption) in every chat it reached.

The admin replies /edit to the broadcast's report (or its status or preview message), names
it by uuid, or picks it from a list; then sends the corrected text. The bot shows it as the
recipients will see it, with Apply / Cancel. Apply edits every delivered copy through the
engine, with the same live status as /push, and posts a report. Telegram lets bots edit
their own messages at any age (only business messages have a 48-hour window), so there is
no time limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.error import BadRequest
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
from pushbot.bot.services import Services, services
from pushbot.broadcast.engine import BroadcastBusy
from pushbot.broadcast.service import (
    CannotEdit,
    EditCheck,
    EditVerdict,
    InvalidEditText,
    UnknownBroadcast,
    edit_text_problem,
)

logger = logging.getLogger(__name__)

CHOOSE, AWAIT_TEXT, CONFIRM = range(3)
CONVERSATION_TIMEOUT_SECONDS = 600
RECENT_LIMIT = 8
PUSH_KEY = "edit_push"  # the broadcast being corrected
DRAFT_KEY = "edit_draft"  # its corrected text, waiting for Apply
NOTHING_CHANGED = "nothing was changed"

# Why a push cannot be edited, below its summary.
REFUSALS = {
    EditVerdict.ALREADY_RETRACTED: "It is retracted: there is nothing left to edit.",
    EditVerdict.NOT_DONE: "It is not finished yet: edit it once it is done.",
    EditVerdict.CANCELLED: "It was cancelled part-way: retract it with /undo and send the "
    "corrected message with /push.",
    EditVerdict.NO_TEXT: "It has no text or caption to correct.",
    EditVerdict.NOTHING_DELIVERED: "No copy was delivered: nothing to edit.",
}


@dataclass(frozen=True)
class EditDraft:
    """The corrected text waiting for Apply, and the message that asks for it."""

    push_uuid: UUID
    text: str
    entities: tuple[MessageEntity, ...]
    confirm_message_id: int


async def start_edit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None
    _forget(context)
    svc = services(context)
    replied = message.reply_to_message
    if replied is not None:
        push = await asyncio.to_thread(
            svc.broadcasts.find_by_message, message.chat_id, replied.message_id
        )
        if push is None:
            await message.reply_text(
                "That message is not a broadcast: nothing to edit. "
                "Reply /edit to a broadcast's report."
            )
            return ConversationHandler.END
        check = await _check(svc, push.uuid)
        if check is None:
            return await _say(message, "That broadcast no longer exists.", edit=False)
        return await _ask_for_text(message, context, check)
    if context.args:
        check = await _check_by_uuid_text(svc, context.args[0])
        if check is None:
            await message.reply_text(f"No broadcast with id {context.args[0]!r}: nothing to edit.")
            return ConversationHandler.END
        return await _ask_for_text(message, context, check)
    return await _offer_recent(message, svc)


async def _check(svc: Services, push_uuid: UUID) -> EditCheck | None:
    try:
        return await asyncio.to_thread(svc.broadcasts.check_edit, push_uuid)
    except UnknownBroadcast:
        return None


async def _check_by_uuid_text(svc: Services, raw: str) -> EditCheck | None:
    try:
        push_uuid = UUID(raw)
    except ValueError:
        return None
    return await _check(svc, push_uuid)


async def _offer_recent(message: Message, svc: Services) -> int:
    rows = await asyncio.to_thread(svc.broadcasts.editable, RECENT_LIMIT)
    if not rows:
        await message.reply_text("There is no broadcast to edit.")
        return ConversationHandler.END
    buttons = [
        [
            InlineKeyboardButton(
                f"{row.push.created_at:%d %b %H:%M} · {row.counts.sent} · "
                f"{render.excerpt(row.push.current_text, row.push.content_type, 30)}",
                callback_data=f"edit:pick:{row.push.uuid}",
            )
        ]
        for row in rows
    ]
    buttons.append([InlineKeyboardButton("✖️ Never mind", callback_data="edit:keep")])
    await message.reply_text(
        "Which broadcast should I edit?", reply_markup=InlineKeyboardMarkup(buttons)
    )
    return CHOOSE


async def pick(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and query.data is not None and isinstance(query.message, Message)
    await query.answer()
    check = await _check_by_uuid_text(services(context), query.data.removeprefix("edit:pick:"))
    if check is None:
        await query.edit_message_text("That broadcast no longer exists.")
        return ConversationHandler.END
    return await _ask_for_text(query.message, context, check, edit=True)


async def _ask_for_text(
    message: Message, context: ContextTypes.DEFAULT_TYPE, check: EditCheck, edit: bool = False
) -> int:
    summary = render.render_push_summary(check.push, check.counts)
    refusal = REFUSALS.get(check.verdict)
    if refusal is not None:
        return await _say(message, f"{summary}\n\n{refusal}", edit)
    what = "caption" if check.corrects_caption else "text"
    text = (
        f"{summary}\n\nSend me the corrected {what}: formatting is kept, and every one of the "
        f"{check.copies} copies out will read it. /cancel to stop."
    )
    _user_data(context)[PUSH_KEY] = check.push.uuid
    if edit:
        await message.edit_text(text)
    else:
        await message.reply_text(text)
    return AWAIT_TEXT


async def receive_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None
    _user_data(context).pop(DRAFT_KEY, None)  # a new correction replaces the previous one
    push_uuid = _user_data(context).get(PUSH_KEY)
    if not isinstance(push_uuid, UUID):
        await message.reply_text("This /edit has expired: /edit again.")
        return ConversationHandler.END
    svc = services(context)
    check = await _check(svc, push_uuid)
    if check is None:
        return await _say(message, "That broadcast no longer exists.", edit=False)
    if check.verdict is not EditVerdict.EDIT:
        return await _say(message, REFUSALS[check.verdict], edit=False)
    # The corrected message's text, or its caption if the admin sent media with one.
    text = message.text if message.text is not None else message.caption
    entities = message.entities if message.text is not None else message.caption_entities
    what = "caption" if check.corrects_caption else "text"
    problem = (
        f"it has no {what}" if text is None else edit_text_problem(check.push.content_type, text)
    )
    if text is None or problem is not None:
        await message.reply_text(
            f"I cannot use that: {problem}. Send the corrected {what}, or /cancel."
        )
        return AWAIT_TEXT
    preview, exact = await _preview(message, check, text, entities)
    shown = (
        "Above is exactly what"
        if exact
        else "Above is the corrected caption (the media itself could not be shown again) that"
    )
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Apply", callback_data="edit:apply"),
                InlineKeyboardButton("✖️ Cancel", callback_data="edit:cancel"),
            ]
        ]
    )
    confirm = await message.get_bot().send_message(
        message.chat_id,
        f"{shown} the {check.copies} copies out will read. Apply the correction?",
        reply_to_message_id=preview.message_id,
        reply_markup=keyboard,
    )
    _user_data(context)[DRAFT_KEY] = EditDraft(push_uuid, text, tuple(entities), confirm.message_id)
    return CONFIRM


async def _preview(
    message: Message, check: EditCheck, text: str, entities: Sequence[MessageEntity]
) -> tuple[Message, bool]:
    """The corrected broadcast as recipients will see it: the new text, or the broadcast's
    media under the new caption (copied from the source every copy was made from). False
    when only the caption could be shown."""
    bot = message.get_bot()
    if check.corrects_caption:
        push = check.push
        try:
            copied = await bot.copy_message(
                message.chat_id,
                from_chat_id=push.source_chat_id,
                message_id=push.source_message_id,
                caption=text,
                caption_entities=entities,
            )
        except BadRequest as exc:
            # The source was deleted since: the copies still have their media.
            logger.warning("cannot show the media of broadcast %s again: %s", push.uuid, exc)
        else:
            copy = Message(message_id=copied.message_id, date=message.date, chat=message.chat)
            return copy, True
    return await bot.send_message(message.chat_id, text, entities=entities), not (
        check.corrects_caption
    )


async def apply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and isinstance(query.message, Message)
    draft = _user_data(context).get(DRAFT_KEY)
    if isinstance(draft, EditDraft) and draft.confirm_message_id != query.message.message_id:
        await query.answer("A newer correction replaced this one: use its Apply.")
        return CONFIRM
    _forget(context)
    if not isinstance(draft, EditDraft):
        await query.answer("This preview has expired: /edit again.")
        return ConversationHandler.END
    await query.answer()
    chat_id = query.message.chat.id
    # This message becomes the edit's live status; the report goes to the report chat.
    status_message = (chat_id, draft.confirm_message_id)
    svc = services(context)
    try:
        await asyncio.to_thread(
            svc.broadcasts.edit, draft.push_uuid, draft.text, draft.entities, status_message
        )
    except CannotEdit as refused:
        # Pressed twice, or the push changed since the preview (another admin's /undo).
        await query.edit_message_text(REFUSALS[refused.check.verdict])
        return ConversationHandler.END
    except InvalidEditText as invalid:
        await query.edit_message_text(f"I cannot use that: {invalid}; {NOTHING_CHANGED}.")
        return ConversationHandler.END
    except UnknownBroadcast:
        await query.edit_message_text("That broadcast no longer exists.")
        return ConversationHandler.END
    except BroadcastBusy:
        await query.edit_message_text(
            f"Another job is running; {NOTHING_CHANGED}. /edit again when it ends."
        )
        return ConversationHandler.END
    logger.info("edit of %s launched by admin %s", draft.push_uuid, query.from_user.id)
    # The watcher's first edit turns this message into the live status at once.
    watch_job(context.application, draft.push_uuid, chat_id, draft.confirm_message_id)
    return ConversationHandler.END


async def keep(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None
    _forget(context)
    await query.answer()
    await query.edit_message_text(f"Cancelled: {NOTHING_CHANGED}.")
    return ConversationHandler.END


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    _forget(context)
    if update.effective_message is not None:
        await update.effective_message.reply_text(f"Cancelled: {NOTHING_CHANGED}.")
    return ConversationHandler.END


async def timed_out(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    _forget(context)
    if update.effective_chat is not None:
        await context.bot.send_message(
            update.effective_chat.id, f"/edit timed out: {NOTHING_CHANGED}."
        )


async def _say(message: Message, text: str, edit: bool) -> int:
    if edit:
        await message.edit_text(text)
    else:
        await message.reply_text(text)
    return ConversationHandler.END


def _user_data(context: ContextTypes.DEFAULT_TYPE) -> dict[Any, Any]:
    assert context.user_data is not None
    return context.user_data


def _forget(context: ContextTypes.DEFAULT_TYPE) -> None:
    _user_data(context).pop(PUSH_KEY, None)
    _user_data(context).pop(DRAFT_KEY, None)


def edit_conversation(admin_filter: filters.BaseFilter) -> ConversationHandler[Any]:
    corrected_text: MessageHandler[Any, object] = MessageHandler(
        admin_filter & ~filters.COMMAND & ~filters.StatusUpdate.ALL, receive_text
    )
    return ConversationHandler(
        entry_points=[CommandHandler("edit", start_edit, filters=admin_filter)],
        states={
            CHOOSE: [
                CallbackQueryHandler(pick, pattern=r"^edit:pick:"),
                CallbackQueryHandler(keep, pattern=r"^edit:keep$"),
            ],
            AWAIT_TEXT: [corrected_text],
            CONFIRM: [
                CallbackQueryHandler(apply, pattern=r"^edit:apply$"),
                CallbackQueryHandler(keep, pattern=r"^edit:cancel$"),
                # Another correction instead of Apply: a new preview.
                corrected_text,
            ],
            ConversationHandler.TIMEOUT: [TypeHandler(Update, timed_out)],
        },
        fallbacks=[CommandHandler("cancel", cancel, filters=admin_filter)],
        conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        # /edit again starts over (with another broadcast, say).
        allow_reentry=True,
        name="edit",
    )
