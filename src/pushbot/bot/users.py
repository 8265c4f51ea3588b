"""What every user can do, and keeping the audience true between broadcasts."""

from __future__ import annotations

from typing import Any

from telegram import Chat, ChatMember, ChatMemberUpdated, Update, User
from telegram.ext import BaseHandler as Handler
from telegram.ext import (
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from pushbot.bot.admins import sent_by_admin
from pushbot.bot.services import Services, services
from pushbot.bot.store import Subscribe, Unsubscribe
from pushbot.db.queries import ChatInfo

USER_COMMANDS = {
    "start": "Subscribe to announcements",
    "stop": "Unsubscribe",
    "help": "What this bot does",
}
ADMIN_COMMANDS = {
    "push": "Broadcast a message: to everyone or a segment, now or scheduled",
    "scheduled": "Scheduled broadcasts, with Cancel and Send now",
    "history": "The latest broadcasts: audience, options, counts",
    "undo": "Retract a broadcast (reply to its report)",
    "edit": "Correct a broadcast's text in every chat (reply to its report)",
    "stats": "Audience and broadcast numbers, with a 90-day chart",
    "cancel": "Leave the current /push, /undo or /edit",
}
# Leaving these statuses takes a chat out of the audience; returning puts it back.
GONE_STATUSES = frozenset({ChatMember.BANNED, ChatMember.LEFT})


def chat_info(chat: Chat, user: User | None = None) -> ChatInfo:
    return ChatInfo(
        id=chat.id,
        type=chat.type,
        title=chat.title,
        username=chat.username,
        first_name=chat.first_name,
        language_code=user.language_code
        if user is not None and chat.type == Chat.PRIVATE
        else None,
    )


WELCOME = (
    "👋 Welcome! You are subscribed to announcements. Send /stop to unsubscribe, /help for more."
)
ALREADY_SUBSCRIBED = "You are already subscribed. /stop to unsubscribe."
UNSUBSCRIBED = "You will get no more announcements. /start to subscribe again."
NOT_SUBSCRIBED = "You were not subscribed. /start to subscribe."
UNKNOWN_COMMAND = "Sorry, I don't know that command. /help"


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None and message is not None
    svc = services(context)
    await svc.outbox.answer(
        message,
        Subscribe(chat_info(chat, update.effective_user)),
        lambda newly: WELCOME if newly else ALREADY_SUBSCRIBED,
        urgent=from_admin(update, svc),
    )


async def stop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat, message = update.effective_chat, update.effective_message
    assert chat is not None and message is not None
    svc = services(context)
    await svc.outbox.answer(
        message,
        Unsubscribe(chat.id),
        lambda was: UNSUBSCRIBED if was else NOT_SUBSCRIBED,
        urgent=from_admin(update, svc),
    )


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    assert message is not None
    svc = services(context)
    lines = ["I send announcements to everyone subscribed.", ""]
    lines += [f"/{name} — {what}" for name, what in USER_COMMANDS.items()]
    admin = from_admin(update, svc)
    if admin:
        lines += ["", "Admin:"] + [f"/{name} — {what}" for name, what in ADMIN_COMMANDS.items()]
    text = "\n".join(lines)
    await svc.outbox.answer(message, None, lambda _: text, urgent=admin)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    # Also what a non-admin gets for /push, /edit, /undo and the other admin commands: they
    # learn nothing of the admin flow.
    message = update.effective_message
    if message is not None:
        svc = services(context)
        await svc.outbox.answer(
            message, None, lambda _: UNKNOWN_COMMAND, urgent=from_admin(update, svc)
        )


def from_admin(update: Update, svc: Services) -> bool:
    """An admin's update: answered at once, ahead of the users' queue (pushbot.bot.outbox)."""
    return sent_by_admin(update, svc.settings.admin_ids)


async def note_seen(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat = update.effective_chat
    if chat is not None:
        await services(context).store.note_seen(chat_info(chat, update.effective_user))


async def membership_changed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    change = update.my_chat_member
    assert change is not None
    store = services(context).store
    if _left(change):
        reason = "blocked" if change.chat.type == Chat.PRIVATE else "kicked"
        await store.purge(change.chat.id, reason)
    elif _joined(change):
        await store.restore(chat_info(change.chat, change.from_user))


async def chat_migrated(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A group upgraded to a supergroup gets a new id; Telegram says so in both chats (the
    old one: migrate_to_chat_id; the new one: migrate_from_chat_id), in either order as far
    as we can tell, so each one moves the chat and the second finds it moved."""
    message = update.effective_message
    assert message is not None
    chat = message.chat
    if message.migrate_to_chat_id is not None:
        old_id = chat.id
        new_chat = ChatInfo(id=message.migrate_to_chat_id, type=Chat.SUPERGROUP, title=chat.title)
    elif message.migrate_from_chat_id is not None:
        old_id, new_chat = message.migrate_from_chat_id, chat_info(chat)
    else:
        return
    await services(context).store.move(old_id, new_chat)


def _left(change: ChatMemberUpdated) -> bool:
    return change.new_chat_member.status in GONE_STATUSES


def _joined(change: ChatMemberUpdated) -> bool:
    return (
        change.new_chat_member.status not in GONE_STATUSES
        and change.old_chat_member.status in GONE_STATUSES
    )


async def refresh_language(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every private message carries its user's Telegram language: a change (after /start)
    moves the user to that language's segment."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None or chat.type != Chat.PRIVATE or user.language_code is None:
        return
    await services(context).store.refresh_language(chat.id, user.language_code)


def language_handlers() -> list[Handler[Any, Any, Any]]:
    """In a handler group of their own, after the others: they see every private message,
    whichever handler answered it."""
    return [MessageHandler(filters.ChatType.PRIVATE, refresh_language)]


def user_handlers() -> list[Handler[Any, Any, Any]]:
    return [
        CommandHandler("start", start),
        CommandHandler("stop", stop),
        CommandHandler("help", help_command),
        ChatMemberHandler(membership_changed, ChatMemberHandler.MY_CHAT_MEMBER),
        MessageHandler(filters.StatusUpdate.MIGRATE, chat_migrated),
    ]


def fallback_handlers() -> list[Handler[Any, Any, Any]]:
    """Run last: unknown commands get an answer; any other message just marks the chat seen."""
    return [
        MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, unknown_command),
        MessageHandler(filters.ALL, note_seen),
    ]
