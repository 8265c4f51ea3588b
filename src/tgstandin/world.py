"""The simulated Telegram world: people, chats, messages, pending updates and the call log.

Everything here is synchronous and guarded by `World.lock`, which is held only for the few
microseconds a request or a test action needs. The HTTP side (`httpd.py`) and the control
operations (`control.py`) run on different threads and both go through this lock.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tgstandin.config import StandInConfig
from tgstandin.limits import FloodLimiter, LimitSettings
from tgstandin.updates import QueuedUpdate, UpdateQueue

JsonDict = dict[str, Any]

ACTIVE = "active"
BLOCKED = "blocked"
DEACTIVATED = "deactivated"
USER_STATES = frozenset({ACTIVE, BLOCKED, DEACTIVATED})

MEMBER = "member"
KICKED = "kicked"
LEFT = "left"

FIRST_USER_ID = 10_000_001
FIRST_GROUP_ID = -100_001
FIRST_SUPERGROUP_ID = -1_001_000_000_001
DELETE_WINDOW_SECONDS = 48 * 3600
# Calls that put something in a chat; `deliveries()` counts their successes.
SENDING_METHODS = frozenset({"sendMessage", "sendPhoto", "copyMessage"})
FAULT_KINDS = frozenset({"500", "502", "timeout", "lost_response"})
# Flags of a send that leave no trace in Telegram's Message object; the stand-in records
# them per message (`send_options` in `inbox()`), so tests can assert how a copy was sent.
SEND_OPTIONS = ("disable_notification", "protect_content", "allow_paid_broadcast")
# Who service messages of anonymous group admins come from, as Telegram sends them.
GROUP_ANONYMOUS_BOT: JsonDict = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


def utf16_len(text: str) -> int:
    """Telegram measures text and entity offsets in UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def command_entities(text: str) -> list[JsonDict]:
    """Telegram marks a leading /command (optionally /command@bot) as a bot_command."""
    match = _COMMAND.match(text)
    if match is None:
        return []
    end = match.end()
    if end < len(text) and not text[end].isspace():
        return []
    return [{"offset": 0, "length": utf16_len(match.group()), "type": "bot_command"}]


def unix_now() -> int:
    return int(time.time())


@dataclass(frozen=True, slots=True)
class Call:
    """One Bot API request as the stand-in saw it. status 0 means no response was sent
    (an injected timeout)."""

    method: str
    params: dict[str, Any]
    status: int
    description: str | None
    chat_id: int | str | None
    at: float


@dataclass(slots=True)
class Person:
    id: int
    state: str
    user: JsonDict  # the Telegram User object, built once and shared by every message


@dataclass(slots=True)
class StoredMessage:
    data: JsonDict  # the Telegram Message object as the bot would receive it
    by_bot: bool
    copied_from: tuple[int, int] | None = None
    send_options: JsonDict | None = None  # the SEND_OPTIONS of a message the bot sent


@dataclass(slots=True)
class Chat:
    id: int
    type: str  # "private" | "group" | "supergroup"
    chat: JsonDict  # the Telegram Chat object
    bot_status: str
    chat_instance: str
    person: Person | None = None
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    # Set once the group was upgraded: the old id then only answers Telegram's 400.
    migrated_to: int | None = None

    @property
    def is_group(self) -> bool:
        return self.type != "private"


@dataclass
class FaultPlan:
    kind: str
    rate: float
    remaining: int
    methods: frozenset[str] | None
    hold: float | None
    chats: frozenset[int] | None = None  # None: every chat (and calls without one)


class World:
    def __init__(self, config: StandInConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.rng = random.Random(config.seed)
        self.notify: Callable[[], None] = lambda: None
        bot_id = config.resolved_bot_id()
        self.bot_user: JsonDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": config.bot_first_name,
            "username": config.bot_username,
        }
        self.people: dict[int, Person] = {}
        self.chats: dict[int, Chat] = {}
        self.updates = UpdateQueue(config.first_update_id)
        self.limiter = FloodLimiter(
            LimitSettings(
                global_rate=config.global_rate,
                global_burst=config.global_burst,
                per_chat_rate=config.per_chat_rate,
                per_chat_burst=config.per_chat_burst,
                group_per_minute=config.group_per_minute,
                paid_rate=config.paid_rate,
                paid_burst=config.paid_burst,
                enabled=config.limits_enabled,
                retry_after_penalty=config.retry_after_penalty,
            ),
            time.monotonic(),
        )
        self.latency: tuple[float, float] = config.latency
        self.fault: FaultPlan | None = None
        # An outage: every call (getUpdates included unless `methods` says otherwise) fails
        # until `outage_until` (time.monotonic()).
        self.outage: FaultPlan | None = None
        self.outage_until = 0.0
        self.log: list[Call] = []
        self.status_counts: Counter[tuple[str, int]] = Counter()
        self.delivery_counts: Counter[int | str] = Counter()
        self.callback_queries: dict[str, bool] = {}  # id -> answered
        self.photos: dict[str, list[JsonDict]] = {}  # file_id -> PhotoSize list
        self._user_ids = itertools.count(FIRST_USER_ID)
        self._group_ids = itertools.count(FIRST_GROUP_ID, -1)
        self._supergroup_ids = itertools.count(FIRST_SUPERGROUP_ID, -1)
        self._query_ids = itertools.count(4_000_000_000_000_000_001)
        self._file_ids = itertools.count(1)

    # -- recording --------------------------------------------------------------------------

    def record(
        self,
        method: str,
        params: dict[str, Any],
        status: int,
        description: str | None,
        at: float,
    ) -> None:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int | str):
            chat_id = None
        self.log.append(Call(method, params, status, description, chat_id, at))
        self.status_counts[method, status] += 1
        if status == 200 and method in SENDING_METHODS and chat_id is not None:
            self.delivery_counts[chat_id] += 1

    def reset_calls(self) -> None:
        self.log = []
        self.status_counts.clear()
        self.delivery_counts.clear()

    # -- faults -----------------------------------------------------------------------------

    def draw_fault(self, method: str, chat_id: object = None) -> FaultPlan | None:
        outage = self.outage
        if outage is not None:
            if time.monotonic() >= self.outage_until:
                self.outage = None
            elif outage.methods is None or method in outage.methods:
                return outage
        plan = self.fault
        if plan is None:
            return None
        if plan.methods is None:
            # Long polling is left alone by default so a polling bot does not swallow faults
            # meant for its sending calls; name getUpdates explicitly to fault it.
            if method == "getUpdates":
                return None
        elif method not in plan.methods:
            return None
        if plan.chats is not None and chat_id not in plan.chats:
            return None
        if plan.remaining > 0:
            plan.remaining -= 1
            if plan.remaining == 0 and plan.rate <= 0.0:
                self.fault = None
            return plan
        if plan.rate > 0.0 and self.rng.random() < plan.rate:
            return plan
        return None

    def draw_latency(self) -> float:
        low, high = self.latency
        if high <= 0.0:
            return 0.0
        return self.rng.uniform(low, high)

    # -- people and chats -------------------------------------------------------------------

    def add_user(
        self,
        user_id: int | None,
        first_name: str | None,
        username: str | None,
        language_code: str | None,
        state: str,
    ) -> int:
        _check_state(state)
        uid = self._fresh_user_id() if user_id is None else user_id
        if uid <= 0:
            raise ValueError(f"user ids are positive, got {uid}")
        if uid in self.chats:
            raise ValueError(f"chat {uid} already exists")
        name = first_name or f"User{uid}"
        user: JsonDict = {"id": uid, "is_bot": False, "first_name": name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        person = Person(uid, state, user)
        chat: JsonDict = {"id": uid, "first_name": name, "type": "private"}
        if username:
            chat["username"] = username
        self.people[uid] = person
        self.chats[uid] = Chat(uid, "private", chat, MEMBER, self._chat_instance(uid), person)
        return uid

    def _fresh_user_id(self) -> int:
        uid = next(self._user_ids)
        while uid in self.chats:
            uid = next(self._user_ids)
        return uid

    def add_group(self, title: str, group_id: int | None, supergroup: bool, bot_status: str) -> int:
        if bot_status not in (MEMBER, KICKED, LEFT):
            raise ValueError(f"bot_status must be member, kicked or left, got {bot_status!r}")
        ids = self._supergroup_ids if supergroup else self._group_ids
        gid = next(ids) if group_id is None else group_id
        while group_id is None and gid in self.chats:
            gid = next(ids)
        if gid >= 0:
            raise ValueError(f"group ids are negative, got {gid}")
        if gid in self.chats:
            raise ValueError(f"chat {gid} already exists")
        kind = "supergroup" if supergroup else "group"
        chat: JsonDict = {"id": gid, "title": title, "type": kind}
        self.chats[gid] = Chat(gid, kind, chat, bot_status, self._chat_instance(gid))
        return gid

    def migrate_to_supergroup(self, group: Chat, actor: Person | None) -> Chat:
        """Telegram's upgrade of a group: a new supergroup with a new id takes over (the bot's
        membership included), the old id only answers "group chat was upgraded", and the bot
        gets a service message in each chat: migrate_to_chat_id in the old group (from the
        member who upgraded it, or from an anonymous admin), then migrate_from_chat_id in the
        supergroup (always sent on behalf of the supergroup itself)."""
        if group.type != "group":
            raise ValueError(f"chat {group.id} is a {group.type}, only groups are upgraded")
        if group.migrated_to is not None:
            raise ValueError(f"group {group.id} was already upgraded to {group.migrated_to}")
        new_id = next(self._supergroup_ids)
        while new_id in self.chats:
            new_id = next(self._supergroup_ids)
        chat: JsonDict = {"id": new_id, "title": group.chat["title"], "type": "supergroup"}
        supergroup = Chat(new_id, "supergroup", chat, group.bot_status, self._chat_instance(new_id))
        self.chats[new_id] = supergroup
        group.migrated_to = new_id
        if actor is None:
            anonymous = {"sender_chat": group.chat, "migrate_to_chat_id": new_id}
            self._service_message(group, GROUP_ANONYMOUS_BOT, anonymous)
        else:
            self._service_message(group, actor.user, {"migrate_to_chat_id": new_id})
        content = {"sender_chat": supergroup.chat, "migrate_from_chat_id": group.id}
        self._service_message(supergroup, GROUP_ANONYMOUS_BOT, content)
        return supergroup

    def _service_message(self, chat: Chat, sender: JsonDict, content: JsonDict) -> None:
        """Service messages reach the bot whenever it is in the chat, privacy mode or not."""
        stored = self.store_message(chat, sender, content, by_bot=False)
        self.emit("message", chat.id, stored.data, visible=self.bot_present(chat))

    def _chat_instance(self, chat_id: int) -> str:
        return str(abs(hash((self.bot_user["id"], chat_id))) % 10**19)

    def person(self, user_id: int) -> Person:
        person = self.people.get(user_id)
        if person is None:
            raise ValueError(f"no user {user_id} in the stand-in world")
        return person

    def chat(self, chat_id: int) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ValueError(f"no chat {chat_id} in the stand-in world")
        return chat

    # -- messages ---------------------------------------------------------------------------

    def store_message(
        self,
        chat: Chat,
        sender: JsonDict,
        content: JsonDict,
        *,
        by_bot: bool,
        reply_to: StoredMessage | None = None,
        copied_from: tuple[int, int] | None = None,
        send_options: JsonDict | None = None,
    ) -> StoredMessage:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        data: JsonDict = {"message_id": message_id, "from": sender, "chat": chat.chat}
        data["date"] = unix_now()
        if reply_to is not None:
            data["reply_to_message"] = snapshot(reply_to.data)
        data.update(content)
        stored = StoredMessage(data, by_bot, copied_from, send_options)
        chat.messages[message_id] = stored
        return stored

    def new_photo(self, file_id: str | None = None) -> list[JsonDict]:
        """PhotoSize list (smallest first, as Telegram sends it) for a new or known file."""
        if file_id is not None and file_id in self.photos:
            return self.photos[file_id]
        serial = next(self._file_ids)
        big_id = file_id or f"AgACAgIAAxkBAAI{serial:08d}PHOTO"
        sizes = [
            _photo_size(f"{big_id}-s", f"AQAD{serial:08d}s", 90, 51, 1_200),
            _photo_size(big_id, f"AQAD{serial:08d}x", 1280, 720, 98_000),
        ]
        self.photos[big_id] = sizes
        return sizes

    def age_messages(self, hours: float) -> None:
        shift = round(hours * 3600)
        for chat in self.chats.values():
            for stored in chat.messages.values():
                stored.data["date"] -= shift
                if "edit_date" in stored.data:
                    stored.data["edit_date"] -= shift

    # -- updates ----------------------------------------------------------------------------

    def emit(
        self, kind: str, chat_key: int, payload: JsonDict, *, visible: bool = True
    ) -> JsonDict:
        """Create an Update. It is queued unless the bot cannot see it (privacy mode, not in
        the group) or allowed_updates excludes its kind; update_ids stay increasing either way."""
        update: JsonDict = {"update_id": self.updates.allocate_id(), kind: payload}
        body = json.dumps(update, ensure_ascii=False, separators=(",", ":"))
        if visible and self.updates.is_allowed(kind):
            self.updates.push(QueuedUpdate(update["update_id"], chat_key, body))
        copy: JsonDict = json.loads(body)
        return copy

    def my_chat_member(
        self, chat: Chat, actor: JsonDict, old_status: str, new_status: str
    ) -> JsonDict:
        payload = {
            "chat": chat.chat,
            "from": actor,
            "date": unix_now(),
            "old_chat_member": self.member_of_bot(old_status),
            "new_chat_member": self.member_of_bot(new_status),
        }
        return self.emit("my_chat_member", chat.id, payload)

    def member_of_bot(self, status: str) -> JsonDict:
        member: JsonDict = {"status": status, "user": self.bot_user}
        if status == KICKED:
            member["until_date"] = 0
        return member

    def set_user_state(self, person: Person, state: str, notify: bool) -> JsonDict | None:
        _check_state(state)
        old = person.state
        person.state = state
        if not notify or {old, state} != {ACTIVE, BLOCKED}:
            return None
        chat = self.chats[person.id]
        old_status, new_status = (KICKED, MEMBER) if state == ACTIVE else (MEMBER, KICKED)
        return self.my_chat_member(chat, person.user, old_status, new_status)

    def bot_present(self, chat: Chat) -> bool:
        return not chat.is_group or chat.bot_status == MEMBER

    def bot_sees(self, chat: Chat, text: str | None, reply_to: StoredMessage | None) -> bool:
        """Privacy mode: in groups only commands and replies to the bot reach it."""
        if not chat.is_group:
            return True
        if chat.bot_status != MEMBER:
            return False
        if not self.config.privacy_mode:
            return True
        return (text or "").startswith("/") or (reply_to is not None and reply_to.by_bot)

    def user_message(
        self,
        person: Person,
        chat: Chat,
        content: JsonDict,
        reply_to: StoredMessage | None,
        visible_text: str | None,
    ) -> JsonDict:
        stored = self.store_message(chat, person.user, content, by_bot=False, reply_to=reply_to)
        visible = self.bot_sees(chat, visible_text, reply_to)
        return self.emit("message", chat.id, stored.data, visible=visible)

    def text_content(self, text: str, entities: list[JsonDict] | None) -> JsonDict:
        content: JsonDict = {"text": text}
        found = command_entities(text) if entities is None else entities
        if found:
            content["entities"] = found
        return content

    def sending_chat(self, person: Person, chat_id: int | None) -> Chat:
        """The chat a person writes in; writing to a bot you blocked restarts it, as the
        Telegram apps do (my_chat_member kicked -> member first)."""
        if person.state == DEACTIVATED:
            raise ValueError(f"user {person.id} is deactivated and cannot act")
        chat = self.chat(person.id if chat_id is None else chat_id)
        if chat.migrated_to is not None:
            raise ValueError(f"group {chat.id} was upgraded; people write in {chat.migrated_to}")
        if not chat.is_group and chat.id != person.id:
            raise ValueError(f"user {person.id} cannot write in the private chat {chat.id}")
        if not chat.is_group and person.state == BLOCKED:
            self.set_user_state(person, ACTIVE, notify=True)
        return chat

    def replied_message(self, chat: Chat, message_id: int | None) -> StoredMessage | None:
        if message_id is None:
            return None
        stored = chat.messages.get(message_id)
        if stored is None:
            raise ValueError(f"no message {message_id} in chat {chat.id} to reply to")
        return stored

    def new_callback_query_id(self) -> str:
        query_id = str(next(self._query_ids))
        self.callback_queries[query_id] = False
        return query_id

    # -- exporting --------------------------------------------------------------------------

    def export(self, stored: StoredMessage) -> JsonDict:
        """An independent copy for callers on other threads, with what the stand-in knows
        beyond Telegram's Message: `copied_from` [chat_id, message_id] of a copy, and the
        `send_options` a bot's message was sent with."""
        copy: JsonDict = json.loads(json.dumps(stored.data))
        if stored.copied_from is not None:
            copy["copied_from"] = list(stored.copied_from)
        if stored.send_options is not None:
            copy["send_options"] = dict(stored.send_options)
        return copy

    def bot_messages(self, chat_id: int) -> Iterable[StoredMessage]:
        chat = self.chats.get(chat_id)
        if chat is None:
            return ()
        return [m for m in chat.messages.values() if m.by_bot]


def snapshot(data: JsonDict) -> JsonDict:
    """A replied-to message as embedded in a reply: one level deep, like Telegram."""
    return {k: v for k, v in data.items() if k != "reply_to_message"}


def _photo_size(file_id: str, unique_id: str, width: int, height: int, size: int) -> JsonDict:
    return {
        "file_id": file_id,
        "file_unique_id": unique_id,
        "file_size": size,
        "width": width,
        "height": height,
    }


def _check_state(state: str) -> None:
    if state not in USER_STATES:
        raise ValueError(f"user state must be one of {sorted(USER_STATES)}, got {state!r}")
