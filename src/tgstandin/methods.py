"""The Bot API methods the bot uses, applied to the world with Telegram's checks and texts.

`BotApi.execute` is the only entry point: it takes already-validated parameters (see
`spec.Spec.parse_params`), runs the handler under the world lock, records the call and
returns the HTTP status and JSON body. getUpdates is served by the HTTP side (it waits).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tgstandin.errors import (
    CHAT_NOT_FOUND,
    ApiError,
    bad_request,
    forbidden,
    upgraded_to_supergroup,
)
from tgstandin.errors import too_many_requests as flood_error
from tgstandin.spec import Upload
from tgstandin.updates import QueuedUpdate
from tgstandin.world import (
    BLOCKED,
    DEACTIVATED,
    DELETE_WINDOW_SECONDS,
    KICKED,
    LEFT,
    SEND_OPTIONS,
    SENDING_METHODS,
    Chat,
    JsonDict,
    StoredMessage,
    World,
    unix_now,
    utf16_len,
)

log = logging.getLogger(__name__)

Params = dict[str, Any]
Handler = Callable[[Params, float], Any]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
# Every call that puts, changes or removes a message counts against the flood limits.
LIMITED_METHODS = SENDING_METHODS | {"editMessageText", "editMessageCaption", "deleteMessage"}
# Methods after which the HTTP side must look at the update queue again.
UPDATE_ROUTING_METHODS = frozenset({"setWebhook", "deleteWebhook", "getUpdates"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Message fields that are content (copied by copyMessage) rather than envelope: those of
# the messages the stand-in's people and the bot can send.
CONTENT_FIELDS = (
    "text",
    "entities",
    "link_preview_options",
    "photo",
    "caption",
    "caption_entities",
)
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
# The bot sends entities, never markup (see pushbot.bot.push); parsing HTML or Markdown the
# way Telegram does would be a large parser nothing exercises, so the stand-in refuses it.
PARSE_MODE_UNSUPPORTED = "parse_mode is not supported by the stand-in: send entities"


@dataclass(frozen=True, slots=True)
class Described:
    """A result Telegram sends with a human-readable description (setWebhook & co.)."""

    result: Any
    description: str


class BotApi:
    def __init__(self, world: World) -> None:
        self.world = world
        self.handlers: dict[str, Handler] = {
            "getMe": self.get_me,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "setMyCommands": self.set_my_commands,
            "sendMessage": self.send_message,
            "sendPhoto": self.send_photo,
            "copyMessage": self.copy_message,
            "editMessageText": self.edit_message_text,
            "editMessageCaption": self.edit_message_caption,
            "deleteMessage": self.delete_message,
            "answerCallbackQuery": self.answer_callback_query,
        }

    # -- entry points -----------------------------------------------------------------------

    def execute(
        self, method: str, params: Params, reached_at: float | None = None
    ) -> tuple[int, bytes]:
        """Carry the call out as of `reached_at` (time.monotonic(): when the request reached
        "Telegram", after the simulated latency; now when not given)."""
        world = self.world
        with world.lock:
            now = time.monotonic() if reached_at is None else reached_at
            try:
                body = _success_body(self.handlers[method](params, now))
                status, description = 200, None
            except ApiError as err:
                status, description, body = err.code, err.description, err.body()
            except Exception as err:  # a stand-in bug: answer and log instead of hanging up
                log.exception("stand-in failed on %s %s", method, params)
                failure = ApiError(500, f"Internal Server Error: stand-in bug: {err!r}")
                status, description, body = failure.code, failure.description, failure.body()
            world.record(method, params, status, description, now)
        if method in UPDATE_ROUTING_METHODS:
            world.notify()
        return status, body

    def take_updates(self, params: Params) -> list[QueuedUpdate]:
        """getUpdates without the waiting (the server does the long-poll wait)."""
        queue = self.world.updates
        if queue.webhook is None:
            queue.set_allowed(params.get("allowed_updates"))
        limit = min(max(params.get("limit", 100), 1), 100)
        return queue.take(params.get("offset"), limit)

    # -- chats, limits, reachability ----------------------------------------------------------

    def resolve_chat(self, chat_id: int | str) -> Chat:
        chat = self.world.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise bad_request(CHAT_NOT_FOUND)
        if chat.migrated_to is not None:
            raise upgraded_to_supergroup(chat.migrated_to)
        return chat

    def target(self, method: str, params: Params, now: float) -> Chat:
        """The destination chat after the flood limits and Telegram's 403 checks."""
        if "chat_id" not in params:
            raise bad_request("chat_id is empty")
        chat = self.resolve_chat(params["chat_id"])
        if method in LIMITED_METHODS:
            paid = params.get("allow_paid_broadcast") is True
            retry_after = self.world.limiter.check(chat.id, chat.is_group, paid, now)
            if retry_after is not None:
                raise flood_error(retry_after)
        _ensure_reachable(chat)
        return chat

    # -- service methods --------------------------------------------------------------------

    def get_me(self, params: Params, now: float) -> JsonDict:
        return {
            **self.world.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.world.config.privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def set_webhook(self, params: Params, now: float) -> Described:
        url: str = params["url"]
        queue = self.world.updates
        drop = params.get("drop_pending_updates") is True
        if url == "":
            return self.delete_webhook(params, now)
        _check_webhook_url(url)
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        max_connections = min(max(params.get("max_connections", 40), 1), 100)
        queue.set_allowed(params.get("allowed_updates"))
        current = queue.webhook
        if (
            current is not None
            and (current.url, current.secret_token, current.max_connections)
            == (url, secret, max_connections)
            and not drop
        ):
            return Described(True, "Webhook is already set")
        queue.set_webhook(url, secret, max_connections, drop)
        return Described(True, "Webhook was set")

    def delete_webhook(self, params: Params, now: float) -> Described:
        was_set = self.world.updates.delete_webhook(params.get("drop_pending_updates") is True)
        return Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    def set_my_commands(self, params: Params, now: float) -> bool:
        """Checked like Telegram does; nothing reads them back (the bot never asks)."""
        commands: list[JsonDict] = params["commands"]
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        for command in commands:
            if not _COMMAND_NAME.fullmatch(command["command"].lstrip("/")):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"]) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        scope: JsonDict = params.get("scope") or {}
        if "chat_id" in scope:
            self.resolve_chat(scope["chat_id"])  # Telegram knows only chats it has seen
        return True

    def answer_callback_query(self, params: Params, now: float) -> bool:
        answered = self.world.callback_queries.get(params["callback_query_id"])
        if answered is None or answered:
            raise bad_request(QUERY_TOO_OLD)
        if len(params.get("text", "")) > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        self.world.callback_queries[params["callback_query_id"]] = True
        return True

    # -- sending ----------------------------------------------------------------------------

    def send_message(self, params: Params, now: float) -> JsonDict:
        chat = self.target("sendMessage", params, now)
        text, entities = formatted(params, "text", "entities", MAX_TEXT_LENGTH)
        if not text.strip():
            raise bad_request("message text is empty")
        content: JsonDict = {"text": text}
        if entities:
            content["entities"] = entities
        if "link_preview_options" in params:
            content["link_preview_options"] = params["link_preview_options"]
        return self._store_bot_message(chat, content, params).data

    def send_photo(self, params: Params, now: float) -> JsonDict:
        chat = self.target("sendPhoto", params, now)
        content: JsonDict = {"photo": self._photo(params["photo"])}
        self._apply_caption(content, params)
        return self._store_bot_message(chat, content, params).data

    def _photo(self, photo: str | Upload) -> list[JsonDict]:
        if isinstance(photo, Upload):
            if photo.size == 0:
                raise bad_request("file must be non-empty")
            return self.world.new_photo()
        if not photo.strip():
            raise bad_request("wrong file identifier/HTTP URL specified")
        if photo.startswith(("http://", "https://")):
            return self.world.new_photo()  # never fetched: the stand-in stays off the network
        return self.world.new_photo(photo)

    def copy_message(self, params: Params, now: float) -> JsonDict:
        source_chat = self.resolve_chat(params["from_chat_id"])
        chat = self.target("copyMessage", params, now)
        source = source_chat.messages.get(params["message_id"])
        if source is None:
            raise bad_request("message to copy not found")
        if source.data.get("has_protected_content"):
            raise bad_request("message has protected content and can't be forwarded")
        content = {k: source.data[k] for k in CONTENT_FIELDS if k in source.data}
        if not content:
            raise bad_request("message can't be copied")
        if "caption" in params and "photo" in content:
            content.pop("caption", None)
            content.pop("caption_entities", None)
            self._apply_caption(content, params)
        copied_from = (source_chat.id, source.data["message_id"])
        stored = self._store_bot_message(chat, content, params, copied_from)
        return {"message_id": stored.data["message_id"]}

    def _apply_caption(self, content: JsonDict, params: Params) -> None:
        caption, entities = formatted(params, "caption", "caption_entities", MAX_CAPTION_LENGTH)
        if caption:
            content["caption"] = caption
        if entities:
            content["caption_entities"] = entities

    def _store_bot_message(
        self,
        chat: Chat,
        content: JsonDict,
        params: Params,
        copied_from: tuple[int, int] | None = None,
    ) -> StoredMessage:
        markup = inline_markup(params.get("reply_markup"))
        if markup is not None:
            content["reply_markup"] = markup
        if params.get("protect_content") is True:
            content["has_protected_content"] = True
        reply_to = self._reply_target(chat, params.get("reply_parameters"))
        options = {name: params.get(name) is True for name in SEND_OPTIONS}
        world = self.world
        return world.store_message(
            chat,
            world.bot_user,
            content,
            by_bot=True,
            reply_to=reply_to,
            copied_from=copied_from,
            send_options=options,
        )

    def _reply_target(self, chat: Chat, reply: JsonDict | None) -> StoredMessage | None:
        if reply is None:
            return None
        where = self.resolve_chat(reply["chat_id"]) if "chat_id" in reply else chat
        target = where.messages.get(reply["message_id"])
        if target is None and not reply.get("allow_sending_without_reply"):
            raise bad_request("message to be replied not found")
        return target

    # -- editing and deleting ---------------------------------------------------------------

    def _editable(self, method: str, params: Params, now: float) -> StoredMessage:
        if "message_id" not in params:
            raise bad_request("message identifier is not specified")
        chat = self.target(method, params, now)
        stored = chat.messages.get(params["message_id"])
        if stored is None:
            raise bad_request("message to edit not found")
        if not stored.by_bot:
            raise bad_request("message can't be edited")
        return stored

    def edit_message_text(self, params: Params, now: float) -> JsonDict:
        stored = self._editable("editMessageText", params, now)
        if "text" not in stored.data:
            raise bad_request("there is no text in the message to edit")
        text, entities = formatted(params, "text", "entities", MAX_TEXT_LENGTH)
        if not text.strip():
            raise bad_request("message text is empty")
        return _edit(stored, "text", text, "entities", entities, params)

    def edit_message_caption(self, params: Params, now: float) -> JsonDict:
        stored = self._editable("editMessageCaption", params, now)
        if "photo" not in stored.data:
            raise bad_request("there is no caption in the message to edit")
        caption, entities = formatted(params, "caption", "caption_entities", MAX_CAPTION_LENGTH)
        return _edit(stored, "caption", caption or None, "caption_entities", entities, params)

    def delete_message(self, params: Params, now: float) -> bool:
        chat = self.target("deleteMessage", params, now)
        problem = _deletion_problem(chat, chat.messages.get(params["message_id"]))
        if problem is not None:
            raise bad_request(problem)
        del chat.messages[params["message_id"]]
        return True


# ---------------------------------------------------------------------------------------------
# helpers


def _success_body(result: Any) -> bytes:
    if isinstance(result, Described):
        payload = {"ok": True, "result": result.result, "description": result.description}
    else:
        payload = {"ok": True, "result": result}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _ensure_reachable(chat: Chat) -> None:
    person = chat.person
    if person is not None:
        if person.state == BLOCKED:
            raise forbidden("bot was blocked by the user")
        if person.state == DEACTIVATED:
            raise forbidden("user is deactivated")
        return
    kind = "supergroup chat" if chat.type == "supergroup" else "group chat"
    if chat.bot_status == KICKED:
        raise forbidden(f"bot was kicked from the {kind}")
    if chat.bot_status == LEFT:
        raise forbidden(f"bot is not a member of the {kind}")


def _edit(
    stored: StoredMessage,
    body_key: str,
    body: str | None,
    entities_key: str,
    entities: list[JsonDict],
    params: Params,
) -> JsonDict:
    """Replace the text (or caption), its entities and the keyboard; Telegram refuses an
    edit that changes none of them. Without reply_markup the keyboard goes."""
    data = stored.data
    markup = inline_markup(params.get("reply_markup"))
    current = (data.get(body_key), data.get(entities_key, []), data.get("reply_markup"))
    if current == (body, entities, markup):
        raise bad_request(NOT_MODIFIED)
    _set_or_drop(data, body_key, body)
    _set_or_drop(data, entities_key, entities or None)
    _set_or_drop(data, "reply_markup", markup)
    data["edit_date"] = unix_now()
    return data


def _deletion_problem(chat: Chat, stored: StoredMessage | None) -> str | None:
    if stored is None:
        return "message to delete not found"
    if chat.is_group and not stored.by_bot:
        return "message can't be deleted"
    if stored.data["date"] < unix_now() - DELETE_WINDOW_SECONDS:
        return "message can't be deleted for everyone"
    return None


def _check_webhook_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    if parts.hostname not in LOOPBACK_HOSTS:
        raise bad_request("bad webhook: the stand-in only delivers to loopback addresses")


def _set_or_drop(data: JsonDict, key: str, value: Any) -> None:
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value


def formatted(
    params: Params, text_key: str, entities_key: str, max_length: int
) -> tuple[str, list[JsonDict]]:
    """The text (or caption) and its entities, as sent."""
    if params.get("parse_mode"):
        raise bad_request(PARSE_MODE_UNSUPPORTED)
    text: str = params.get(text_key, "")
    if utf16_len(text) > max_length:
        problem = "message caption is too long" if text_key == "caption" else "message is too long"
        raise bad_request(problem)
    return text, list(params.get(entities_key, []))


def inline_markup(markup: JsonDict | None) -> JsonDict | None:
    """The inline keyboard as it will show in the Message (reply keyboards do not)."""
    if not markup or "inline_keyboard" not in markup:
        return None
    for button in _buttons(markup):
        actions = button.keys() - {"text", "icon_custom_emoji_id", "style"}
        if not actions:
            raise bad_request(
                "can't parse inline keyboard button: Text buttons are unallowed in the "
                "inline keyboard"
            )
        data = button.get("callback_data")
        if data is not None and not 1 <= len(data.encode()) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    return markup


def _buttons(markup: JsonDict) -> Iterator[JsonDict]:
    for row in markup.get("inline_keyboard", []):
        yield from row


def callback_datas(markup: JsonDict | None) -> list[str]:
    if not markup:
        return []
    return [b["callback_data"] for b in _buttons(markup) if "callback_data" in b]
