"""/push: an admin's message, previewed exactly as users will get it, then broadcast.

The preview is a copy of the admin's message in the admin's own chat, and it is also the
source every recipient's copy is made from (copyMessage keeps media, formatting and
entities; no parse_mode pitfalls).

Under the preview, the confirmation: Send (one tap with the defaults: everyone, with sound,
forwarding allowed), or first choose the audience (a segment, pushbot.db.segments, with the
chats each reaches now), silent and protected, or Schedule… and type a time
(pushbot.broadcast.schedule, read in DEFAULT_TIMEZONE).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from telegram import CallbackQuery, Message, MessageEntity, Update
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
from pushbot.broadcast.schedule import InvalidTime, describe_when, parse_when
from pushbot.db.queries import PushDraft
from pushbot.db.segments import EVERYONE, InvalidSegment, Segment, SegmentKind

logger = logging.getLogger(__name__)

AWAIT_CONTENT, CONFIRM, AWAIT_TIME = range(3)
CONVERSATION_TIMEOUT_SECONDS = 600
DRAFT_KEY = "push_draft"
# The segments the audience menu always offers, before the audience's languages.
FIXED_SEGMENTS = (
    EVERYONE,
    Segment(SegmentKind.PRIVATE),
    Segment(SegmentKind.GROUPS),
    Segment(SegmentKind.ADMINS),
)


@dataclass(frozen=True)
class Draft:
    preview_message_id: int
    confirm_message_id: int
    text: str | None
    content_type: str
    audience: int  # chats the segment reaches, as last counted
    segment: Segment = EVERYONE
    silent: bool = False
    protected: bool = False
    admins_not_reached: tuple[int, ...] = ()

    def push_draft(self, chat_id: int, admin_id: int) -> PushDraft:
        return PushDraft(
            text=self.text,
            content_type=self.content_type,
            source_chat_id=chat_id,
            source_message_id=self.preview_message_id,
            admin_id=admin_id,
            preview_message_id=self.preview_message_id,
            status_message_id=self.confirm_message_id,
            segment=self.segment,
            disable_notification=self.silent,
            protect_content=self.protected,
        )


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
    confirm = await message.get_bot().send_message(
        message.chat_id,
        render.render_confirmation(audience, EVERYONE, silent=False, protected=False),
        reply_to_message_id=preview.message_id,
        reply_markup=render.confirmation_keyboard(EVERYONE, silent=False, protected=False),
    )
    _user_data(context)[DRAFT_KEY] = Draft(
        preview.message_id, confirm.message_id, text, content_type, audience
    )
    return CONFIRM


async def _show_confirmation(query: CallbackQuery, draft: Draft) -> int:
    await query.edit_message_text(
        render.render_confirmation(
            draft.audience, draft.segment, draft.silent, draft.protected, draft.admins_not_reached
        ),
        reply_markup=render.confirmation_keyboard(draft.segment, draft.silent, draft.protected),
    )
    return CONFIRM


async def show_audiences(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query, draft = await _query_and_draft(update, context)
    if draft is None:
        return ConversationHandler.END
    broadcasts = services(context).broadcasts

    def count() -> tuple[list[tuple[Segment, int]], list[Any]]:
        sizes = [(segment, broadcasts.audience_size(segment)) for segment in FIXED_SEGMENTS]
        return sizes, broadcasts.languages()

    sizes, languages = await asyncio.to_thread(count)
    await query.edit_message_text(
        render.AUDIENCE_QUESTION, reply_markup=render.audience_keyboard(sizes, languages)
    )
    return CONFIRM


async def choose_audience(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query, draft = await _query_and_draft(update, context)
    if draft is None:
        return ConversationHandler.END
    assert query.data is not None
    try:
        segment = Segment.parse(query.data.removeprefix("push:seg:"))
    except InvalidSegment:
        return await _show_confirmation(query, draft)
    broadcasts = services(context).broadcasts
    audience = await asyncio.to_thread(broadcasts.audience_size, segment)
    missing: tuple[int, ...] = ()
    if segment.kind is SegmentKind.ADMINS:
        missing = tuple(await asyncio.to_thread(broadcasts.admins_not_on_record))
    draft = replace(draft, segment=segment, audience=audience, admins_not_reached=missing)
    _user_data(context)[DRAFT_KEY] = draft
    return await _show_confirmation(query, draft)


async def toggle_option(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query, draft = await _query_and_draft(update, context)
    if draft is None:
        return ConversationHandler.END
    if query.data == "push:silent":
        draft = replace(draft, silent=not draft.silent)
    else:
        draft = replace(draft, protected=not draft.protected)
    _user_data(context)[DRAFT_KEY] = draft
    return await _show_confirmation(query, draft)


async def back_to_confirmation(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query, draft = await _query_and_draft(update, context)
    if draft is None:
        return ConversationHandler.END
    return await _show_confirmation(query, draft)


async def ask_time(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query, draft = await _query_and_draft(update, context)
    if draft is None:
        return ConversationHandler.END
    zone = services(context).settings.default_timezone
    await query.edit_message_text(
        render.schedule_question(zone), reply_markup=render.back_keyboard()
    )
    return AWAIT_TIME


async def receive_time(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.effective_message
    assert message is not None and message.text is not None and message.from_user is not None
    draft = _user_data(context).get(DRAFT_KEY)
    if not isinstance(draft, Draft):
        await message.reply_text("This preview has expired: /push again.")
        return ConversationHandler.END
    svc = services(context)
    zone = svc.settings.default_timezone
    now = svc.broadcasts.clock()
    try:
        moment = parse_when(message.text, now, zone)
    except InvalidTime as exc:
        await message.reply_text(str(exc))
        return AWAIT_TIME
    _user_data(context).pop(DRAFT_KEY, None)
    push_draft = replace(
        draft.push_draft(message.chat_id, message.from_user.id),
        scheduled_at=moment,
        status_message_id=None,
    )
    push = await asyncio.to_thread(svc.broadcasts.schedule, push_draft)
    logger.info("broadcast %s scheduled for %s by admin %s", push.uuid, moment, push.admin_id)
    await _post_scheduled(message, svc, push.uuid, draft)
    return ConversationHandler.END


async def _post_scheduled(message: Message, svc: Services, push_uuid: Any, draft: Draft) -> None:
    """The scheduled push's own message (with Cancel and Send now) becomes its status
    message; the question above it is settled."""
    push = await asyncio.to_thread(svc.broadcasts.get, push_uuid)
    assert push is not None and push.scheduled_at is not None
    zone, now = svc.settings.default_timezone, svc.broadcasts.clock()
    bot = message.get_bot()
    await bot.edit_message_text(
        f"🗓 Scheduled for {describe_when(push.scheduled_at, zone, now)}: see below.",
        chat_id=message.chat_id,
        message_id=draft.confirm_message_id,
    )
    posted = await bot.send_message(
        message.chat_id,
        render.render_scheduled(push, zone, draft.audience, now),
        reply_to_message_id=draft.preview_message_id,
        reply_markup=render.scheduled_keyboard(push.uuid),
    )
    await asyncio.to_thread(
        svc.broadcasts.show_status_in, push.uuid, message.chat_id, posted.message_id
    )


async def _query_and_draft(
    update: Update, context: ContextTypes.DEFAULT_TYPE
) -> tuple[CallbackQuery, Draft | None]:
    """The button pressed (answered) and the conversation's draft (None: it expired)."""
    query = update.callback_query
    assert query is not None
    draft = _user_data(context).get(DRAFT_KEY)
    if not isinstance(draft, Draft):
        await query.answer("This preview has expired: /push again.")
        return query, None
    await query.answer()
    return query, draft


async def confirm_send(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and query.message is not None and query.from_user is not None
    draft = _user_data(context).pop(DRAFT_KEY, None)
    if not isinstance(draft, Draft):
        await query.answer("This preview has expired: /push again.")
        return ConversationHandler.END
    await query.answer()
    chat_id = query.message.chat.id
    push_draft = draft.push_draft(chat_id, query.from_user.id)
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
                CallbackQueryHandler(show_audiences, pattern=r"^push:audience$"),
                CallbackQueryHandler(choose_audience, pattern=r"^push:seg:"),
                CallbackQueryHandler(toggle_option, pattern=r"^push:(silent|protect)$"),
                CallbackQueryHandler(back_to_confirmation, pattern=r"^push:back$"),
                CallbackQueryHandler(ask_time, pattern=r"^push:schedule$"),
            ],
            AWAIT_TIME: [
                MessageHandler(admin_filter & filters.TEXT & ~filters.COMMAND, receive_time),
                CallbackQueryHandler(back_to_confirmation, pattern=r"^push:back$"),
            ],
            ConversationHandler.TIMEOUT: [TypeHandler(Update, timed_out)],
        },
        fallbacks=[CommandHandler("cancel", cancel, filters=admin_filter)],
        conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        name="push",
    )
