"""The stand-in's control operations, defined once for both ways of driving it.

`StandInControl` holds every operation tests, the demo and the benchmarks call on the
stand-in: people acting, observing what the bot did, turning the knobs. Each one is a
method marked `@operation`, written once, its body acting on the world under its lock.

- `StandIn` (server.py) owns the world and runs the bodies in-process.
- `RemoteStandIn` (remote.py) inherits the very same methods; calling one sends its name
  and bound arguments as JSON to the control endpoint of a stand-in in another process
  (`POST /_standin/<name>`), where the method runs, and decodes the answer by the
  method's return annotation.

So adding an operation means writing one method here. Predicates cannot travel: `wait_for`
and `wait_for_message` are not operations, they poll operations from the caller's side.
Operations take and return JSON-shaped values (dicts, lists, str, int, float, bool, None)
and `Call` records.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import time
import types
from collections.abc import Callable, Collection
from typing import Any, Concatenate, ParamSpec, TypeVar, Union, cast, get_args, get_origin

from tgstandin.methods import callback_datas
from tgstandin.world import (
    ACTIVE,
    FAULT_KINDS,
    KICKED,
    LEFT,
    MEMBER,
    Call,
    Chat,
    FaultPlan,
    JsonDict,
    World,
)

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound="StandInControl")

# Every operation by name: the undecorated method, whose signature and return annotation
# the remote side binds and decodes by.
OPERATIONS: dict[str, Callable[..., Any]] = {}


def operation(method: Callable[Concatenate[C, P], R]) -> Callable[Concatenate[C, P], R]:
    """Mark a control operation: it runs where the world is (see `StandInControl._perform`)."""
    name = method.__name__
    OPERATIONS[name] = method

    def perform(self: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast(R, self._perform(name, args, kwargs))

    functools.update_wrapper(perform, method)
    return perform


class StandInControl:
    """The control surface shared by `StandIn` and `RemoteStandIn` (see the module doc)."""

    base_url: str
    token: str
    # Only the process that runs the stand-in has it; a remote proxy never runs a body.
    _world: World
    # How often wait_for and wait_for_message look again.
    poll_interval = 0.02

    def _perform(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the operation here, on this process's world."""
        return OPERATIONS[name](self, *args, **kwargs)

    @operation
    def info(self) -> JsonDict:
        return {
            "base_url": self.base_url,
            "token": self.token,
            "bot_id": self._world.bot_user["id"],
            "bot_username": self._world.bot_user["username"],
        }

    # -- world ------------------------------------------------------------------------------

    @operation
    def add_user(
        self,
        user_id: int | None = None,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        state: str = ACTIVE,
    ) -> int:
        with self._world.lock:
            return self._world.add_user(user_id, first_name, username, language_code, state)

    @operation
    def add_users(
        self, count: int, *, blocked: int = 0, deactivated: int = 0, start_id: int | None = None
    ) -> list[int]:
        """`count` users in all; the first `blocked` of them have blocked the bot and the next
        `deactivated` deleted their accounts."""
        if blocked + deactivated > count:
            raise ValueError("blocked + deactivated cannot exceed count")
        world = self._world
        ids: list[int] = []
        with world.lock:
            for index in range(count):
                state = _state_for(index, blocked, deactivated)
                user_id = None if start_id is None else start_id + index
                ids.append(world.add_user(user_id, None, None, "en", state))
        return ids

    @operation
    def add_group(
        self,
        title: str,
        group_id: int | None = None,
        supergroup: bool = False,
        *,
        bot_status: str = MEMBER,
    ) -> int:
        with self._world.lock:
            return self._world.add_group(title, group_id, supergroup, bot_status)

    @operation
    def set_user_state(self, user_id: int, state: str, notify: bool = True) -> None:
        with self._world.lock:
            self._world.set_user_state(self._world.person(user_id), state, notify)
        self._world.notify()

    @operation
    def set_user_language(self, user_id: int, language_code: str | None) -> None:
        """The person switches Telegram's language: their updates report it from now on."""
        with self._world.lock:
            person = self._world.person(user_id)
            # A new User object: the messages already sent keep the one they were sent with.
            user = {k: v for k, v in person.user.items() if k != "language_code"}
            if language_code:
                user["language_code"] = language_code
            person.user = user

    @operation
    def migrate_to_supergroup(self, group_chat_id: int, *, by_user_id: int | None = None) -> int:
        """Upgrade a group to a supergroup, as Telegram does (see World.migrate_to_supergroup);
        returns the supergroup's id. by_user_id None: an anonymous admin upgraded it."""
        world = self._world
        with world.lock:
            actor = None if by_user_id is None else world.person(by_user_id)
            supergroup = world.migrate_to_supergroup(world.chat(group_chat_id), actor)
        world.notify()
        return supergroup.id

    # -- people act -------------------------------------------------------------------------

    @operation
    def send_text(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        reply_to_message_id: int | None = None,
        entities: list[JsonDict] | None = None,
    ) -> JsonDict:
        """The person writes; returns the Message they sent (its message_id is what a reply
        needs). A leading /command gets its bot_command entity unless entities are given."""
        world = self._world
        with world.lock:
            person = world.person(user_id)
            chat = world.sending_chat(person, chat_id)
            reply_to = world.replied_message(chat, reply_to_message_id)
            content = world.text_content(text, entities)
            update = world.user_message(person, chat, content, reply_to, text)
        world.notify()
        message: JsonDict = update["message"]
        return message

    @operation
    def send_texts(self, user_ids: list[int], text: str) -> int:
        """Each of these people writes `text` to the bot in their private chat (a rush: one
        control call for thousands of updates); returns how many were sent."""
        world = self._world
        with world.lock:
            for user_id in user_ids:
                person = world.person(user_id)
                chat = world.sending_chat(person, None)
                world.user_message(person, chat, world.text_content(text, None), None, text)
        world.notify()
        return len(user_ids)

    @operation
    def send_photo(
        self,
        user_id: int,
        caption: str | None = None,
        *,
        caption_entities: list[JsonDict] | None = None,
        chat_id: int | None = None,
    ) -> JsonDict:
        world = self._world
        with world.lock:
            person = world.person(user_id)
            chat = world.sending_chat(person, chat_id)
            content: JsonDict = {"photo": world.new_photo()}
            if caption:
                content["caption"] = caption
                if caption_entities:
                    content["caption_entities"] = caption_entities
            update = world.user_message(person, chat, content, None, caption)
        world.notify()
        message: JsonDict = update["message"]
        return message

    @operation
    def press_button(self, user_id: int, chat_id: int, message_id: int, data: str) -> JsonDict:
        """The person presses an inline button; returns the callback_query Update."""
        world = self._world
        with world.lock:
            person = world.person(user_id)
            chat = world.chat(chat_id)
            stored = chat.messages.get(message_id)
            if stored is None:
                raise ValueError(f"no message {message_id} in chat {chat_id} to press a button on")
            offered = callback_datas(stored.data.get("reply_markup"))
            if data not in offered:
                raise ValueError(
                    f"message {message_id} in chat {chat_id} has no button with callback_data "
                    f"{data!r}; its buttons carry {offered}"
                )
            query = {
                "id": world.new_callback_query_id(),
                "from": person.user,
                "message": dict(stored.data),
                "chat_instance": chat.chat_instance,
                "data": data,
            }
            update = world.emit("callback_query", chat.id, query, visible=world.bot_present(chat))
        world.notify()
        return update

    @operation
    def add_bot_to_group(self, group_id: int, by_user_id: int) -> JsonDict:
        """my_chat_member (old status left/kicked -> member), then the service message with
        new_chat_members, as Telegram sends them. If the bot already was a member the old
        status is reported as "left" (a re-join). Returns the my_chat_member Update."""
        world = self._world
        with world.lock:
            person = world.person(by_user_id)
            chat = _group(world, group_id)
            old = LEFT if chat.bot_status == MEMBER else chat.bot_status
            chat.bot_status = MEMBER
            update = world.my_chat_member(chat, person.user, old, MEMBER)
            service = {"new_chat_members": [world.bot_user]}
            stored = world.store_message(chat, person.user, service, by_bot=False)
            world.emit("message", chat.id, stored.data)
        world.notify()
        return update

    @operation
    def kick_bot_from_group(self, group_id: int, by_user_id: int) -> JsonDict:
        world = self._world
        with world.lock:
            person = world.person(by_user_id)
            chat = _group(world, group_id)
            old = chat.bot_status
            chat.bot_status = KICKED
            update = world.my_chat_member(chat, person.user, old, KICKED)
        world.notify()
        return update

    @operation
    def user_deletes_message(self, chat_id: int, message_id: int) -> None:
        with self._world.lock:
            chat = self._world.chat(chat_id)
            if chat.messages.pop(message_id, None) is None:
                raise ValueError(f"no message {message_id} in chat {chat_id} to delete")

    @operation
    def age_messages(self, hours: float) -> None:
        with self._world.lock:
            self._world.age_messages(hours)

    # -- observing --------------------------------------------------------------------------

    @operation
    def inbox(self, chat_id: int) -> list[JsonDict]:
        """The bot's messages in the chat as they are now (edits applied, deletions gone)."""
        with self._world.lock:
            return [self._world.export(m) for m in self._world.bot_messages(chat_id)]

    @operation
    def message(self, chat_id: int, message_id: int) -> JsonDict | None:
        with self._world.lock:
            chat = self._world.chats.get(chat_id)
            stored = chat.messages.get(message_id) if chat is not None else None
            return None if stored is None else self._world.export(stored)

    @operation
    def calls(self, method: str | None = None) -> list[Call]:
        with self._world.lock:
            log = self._world.log
            return list(log) if method is None else [c for c in log if c.method == method]

    @operation
    def deliveries(self, chat_id: int) -> int:
        """Successful sends and copies into the chat."""
        with self._world.lock:
            return self._world.delivery_counts[chat_id]

    @operation
    def count(self, method: str, status: int | None = None) -> int:
        with self._world.lock:
            counts = self._world.status_counts
            if status is not None:
                return counts[method, status]
            return sum(n for (m, _), n in counts.items() if m == method)

    @operation
    def stats(self) -> dict[str, dict[str, int]]:
        """{method: {status: count}} over the recorded calls (string keys: JSON-friendly)."""
        result: dict[str, dict[str, int]] = {}
        with self._world.lock:
            for (method, status), n in sorted(self._world.status_counts.items()):
                result.setdefault(method, {})[str(status)] = n
        return result

    @operation
    def pending_updates(self) -> int:
        with self._world.lock:
            return self._world.updates.pending_count()

    @operation
    def hold_updates(self, held: bool = True) -> None:
        """Held: new updates queue up, but neither getUpdates nor the webhook hands any out
        (a chat whose delivery is under way still gets the rest of its queue); released, the
        backlog flows at once. The benchmarks queue a burst this way while the bot is
        already running."""
        with self._world.lock:
            self._world.updates.held = held
        if not held:
            self._world.notify()

    @operation
    def webhook_info(self) -> JsonDict:
        """What getWebhookInfo would answer."""
        with self._world.lock:
            queue = self._world.updates
            webhook = queue.webhook
            info: JsonDict = {"url": "", "pending_update_count": queue.pending_count()}
            if webhook is not None:
                info["url"] = webhook.url
                info["max_connections"] = webhook.max_connections
                if webhook.last_error_date is not None:
                    info["last_error_date"] = webhook.last_error_date
                    info["last_error_message"] = webhook.last_error_message
            return info

    @property
    def webhook_url(self) -> str | None:
        url = self.webhook_info()["url"]
        return str(url) if url else None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll `predicate`; on timeout fail with the last calls the stand-in saw."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {describe(predicate)}; "
                    f"last calls: {summarize_calls(self.calls()[-8:])}"
                )
            time.sleep(self.poll_interval)

    def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[JsonDict], bool] | None = None,
        timeout: float = 10.0,
    ) -> JsonDict:
        """The newest bot message in the chat matching `predicate` (current content, so
        edits count)."""
        deadline = time.monotonic() + timeout
        while True:
            messages: list[JsonDict] = self.inbox(chat_id)
            for message in reversed(messages):
                if predicate is None or predicate(message):
                    return message
            if time.monotonic() >= deadline:
                shown = [m.get("text", m.get("caption")) for m in messages[-5:]]
                what = describe(predicate) if predicate is not None else "any bot message"
                raise AssertionError(
                    f"no bot message in chat {chat_id} matched {what} within {timeout:g}s; "
                    f"the last bot messages there: {json.dumps(shown, ensure_ascii=False)}"
                )
            time.sleep(self.poll_interval)

    # -- knobs ------------------------------------------------------------------------------

    @operation
    def set_limits(
        self,
        *,
        global_rate: float | None = None,
        global_burst: int | None = None,
        per_chat_rate: float | None = None,
        per_chat_burst: int | None = None,
        group_per_minute: int | None = None,
        enabled: bool | None = None,
        retry_after_penalty: int | None = None,
        paid_rate: float | None = None,
        paid_burst: int | None = None,
    ) -> None:
        changes = {
            "global_rate": global_rate,
            "global_burst": global_burst,
            "per_chat_rate": per_chat_rate,
            "per_chat_burst": per_chat_burst,
            "group_per_minute": group_per_minute,
            "enabled": enabled,
            "retry_after_penalty": retry_after_penalty,
            "paid_rate": paid_rate,
            "paid_burst": paid_burst,
        }
        with self._world.lock:
            settings = self._world.limiter.settings
            for name, value in changes.items():
                if value is not None:
                    setattr(settings, name, value)

    @operation
    def reset_limits(self) -> None:
        """Refill every budget, as after a long quiet period."""
        with self._world.lock:
            self._world.limiter.reset(time.monotonic())

    @operation
    def set_latency(self, low: float, high: float) -> None:
        if not 0.0 <= low <= high:
            raise ValueError("latency needs 0 <= low <= high")
        with self._world.lock:
            self._world.latency = (low, high)

    @operation
    def inject_faults(
        self,
        *,
        kind: str = "500",
        rate: float = 0.0,
        next_calls: int = 0,
        methods: Collection[str] | None = None,
        hold: float | None = None,
        chat_ids: Collection[int] | None = None,
    ) -> None:
        """Replace the fault plan. kind: "500", "502", "timeout" (not applied, held `hold`
        s (default config.timeout_hold) then dropped) or "lost_response" (applied, then the
        same). methods None: every method except getUpdates; chat_ids None: every chat, else
        only calls about those chats. rate 0 and next_calls 0 clear."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {sorted(FAULT_KINDS)}, got {kind!r}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        plan = None
        if rate > 0.0 or next_calls > 0:
            chosen = frozenset(methods) if methods is not None else None
            chats = frozenset(chat_ids) if chat_ids is not None else None
            plan = FaultPlan(kind, rate, next_calls, chosen, hold, chats)
        with self._world.lock:
            self._world.fault = plan

    @operation
    def start_outage(
        self,
        seconds: float,
        *,
        kind: str = "502",
        methods: Collection[str] | None = None,
        hold: float | None = None,
    ) -> None:
        """Telegram is down for `seconds` from now: every method (getUpdates included, unless
        `methods` names the ones to fail) answers `kind` ("500", "502", "timeout", …)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {sorted(FAULT_KINDS)}, got {kind!r}")
        if seconds <= 0:
            raise ValueError("an outage lasts a positive number of seconds")
        chosen = frozenset(methods) if methods is not None else None
        with self._world.lock:
            self._world.outage = FaultPlan(kind, 1.0, 0, chosen, hold)
            self._world.outage_until = time.monotonic() + seconds

    @operation
    def end_outage(self) -> None:
        with self._world.lock:
            self._world.outage = None

    @operation
    def reset_calls(self) -> None:
        with self._world.lock:
            self._world.reset_calls()


def _state_for(index: int, blocked: int, deactivated: int) -> str:
    if index < blocked:
        return "blocked"
    if index < blocked + deactivated:
        return "deactivated"
    return ACTIVE


def _group(world: World, group_id: int) -> Chat:
    chat = world.chat(group_id)
    if not chat.is_group:
        raise ValueError(f"chat {group_id} is not a group")
    return chat


# -- the wire: JSON both ways -------------------------------------------------------------------


def bound_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """An operation call's arguments by parameter name, JSON-shaped (only those given: the
    defaults are the method's own, on the side that runs it)."""
    bound = inspect.signature(OPERATIONS[name]).bind(None, *args, **kwargs)
    arguments = dict(bound.arguments)
    del arguments["self"]
    return {key: to_jsonable(value) for key, value in arguments.items()}


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def decode_result(name: str, value: Any) -> Any:
    """An operation's JSON answer in the shape its return annotation promises."""
    hint = inspect.signature(OPERATIONS[name], eval_str=True).return_annotation
    return _decode(value, hint)


def _decode(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        return [_decode(v, item) for v in value]
    if origin in (Union, types.UnionType):
        (present,) = (arg for arg in get_args(hint) if arg is not type(None))
        return _decode(value, present)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint(**value)
    return value


def describe(predicate: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))


def summarize_calls(calls: list[Call]) -> str:
    if not calls:
        return "none"
    parts = [
        f"{c.method}(chat_id={c.chat_id}) -> {c.status}"
        + (f" {c.description!r}" if c.description else "")
        for c in calls
    ]
    return "; ".join(parts)
