"""`StandIn`: the public, thread-safe facade tests, the demo and the benchmarks use.

The HTTP server runs on its own thread and event loop; every method here may be called from
any other thread. Methods that make people act return private copies of what they produced:
send_text/send_photo the Message the person sent (its message_id is what a reply needs), the
others the Update the bot receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import socket
import threading
import time
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

from tornado.netutil import bind_sockets

from tgstandin.config import StandInConfig
from tgstandin.httpd import CONTROL_PREFIX, HttpServer
from tgstandin.methods import BotApi, callback_datas, scope_key, webhook_info
from tgstandin.spec import Spec, load_spec
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

# The methods the process-mode control endpoint may call (everything a remote test needs;
# wait_for* run on the caller's side because predicates cannot travel).
CONTROL_METHODS = frozenset(
    {
        "info",
        "add_user",
        "add_users",
        "add_group",
        "set_user_state",
        "user_state",
        "user_ids",
        "remove_chat",
        "send_text",
        "send_photo",
        "press_button",
        "add_bot_to_group",
        "kick_bot_from_group",
        "user_deletes_message",
        "age_messages",
        "inbox",
        "message",
        "calls",
        "deliveries",
        "count",
        "stats",
        "pending_updates",
        "commands",
        "set_limits",
        "reset_limits",
        "set_latency",
        "inject_faults",
        "start_outage",
        "end_outage",
        "reset_calls",
        "webhook_info",
    }
)


class StandIn:
    def __init__(self, config: StandInConfig | None = None, spec: Spec | None = None) -> None:
        self.config = config or StandInConfig()
        self.token = self.config.token
        self.spec = spec or load_spec()
        self._world = World(self.config)
        self._api = BotApi(self._world)
        self._world.notify = self._notify
        self._server = HttpServer(self._world, self._api, self.spec, self._control_call)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.base_url = ""
        self.control_url = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> StandIn:
        if self._thread is not None:
            raise RuntimeError("the stand-in is already running")
        # A fresh HTTP side, so a stopped stand-in can be started again with its world intact.
        self._server = HttpServer(self._world, self._api, self.spec, self._control_call)
        sockets = bind_sockets(self.config.port, self.config.host)
        self.port = sockets[0].getsockname()[1]
        root = f"http://{_url_host(self.config.host)}:{self.port}"
        self.base_url = f"{root}/bot"
        self.control_url = f"{root}{CONTROL_PREFIX.rstrip('/')}"
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sockets, ready), name=f"standin:{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10.0):
            raise RuntimeError("the stand-in server did not start within 10 s")
        return self

    def _run(self, sockets: list[socket.socket], ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._server.listen(sockets))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop)
        try:
            future.result(timeout=10.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10.0)
            self._loop = None
            self._thread = None

    def __enter__(self) -> StandIn:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop is shutting down; nobody is waiting for updates any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._server.on_updates_changed)

    def info(self) -> JsonDict:
        return {
            "base_url": self.base_url,
            "control_url": self.control_url,
            "token": self.token,
            "bot_id": self._world.bot_user["id"],
            "bot_username": self._world.bot_user["username"],
        }

    # -- world ------------------------------------------------------------------------------

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

    def set_user_state(self, user_id: int, state: str, notify: bool = True) -> None:
        with self._world.lock:
            self._world.set_user_state(self._world.person(user_id), state, notify)
        self._notify()

    def user_state(self, user_id: int) -> str:
        with self._world.lock:
            return self._world.person(user_id).state

    def user_ids(self, state: str | None = None) -> list[int]:
        with self._world.lock:
            return self._world.user_ids(state)

    def remove_chat(self, chat_id: int) -> None:
        with self._world.lock:
            self._world.remove_chat(chat_id)

    # -- people act -------------------------------------------------------------------------

    def send_text(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        reply_to_message_id: int | None = None,
        entities: list[JsonDict] | None = None,
    ) -> JsonDict:
        world = self._world
        with world.lock:
            person = world.person(user_id)
            chat = world.sending_chat(person, chat_id)
            reply_to = world.replied_message(chat, reply_to_message_id)
            content = world.text_content(text, entities)
            update = world.user_message(person, chat, content, reply_to, text)
        self._notify()
        message: JsonDict = update["message"]
        return message

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
        self._notify()
        message: JsonDict = update["message"]
        return message

    def press_button(self, user_id: int, chat_id: int, message_id: int, data: str) -> JsonDict:
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
        self._notify()
        return update

    def add_bot_to_group(self, group_id: int, by_user_id: int) -> JsonDict:
        """my_chat_member (old status left/kicked -> member), then the service message with
        new_chat_members, as Telegram sends them. If the bot already was a member the old
        status is reported as "left" (a re-join)."""
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
        self._notify()
        return update

    def kick_bot_from_group(self, group_id: int, by_user_id: int) -> JsonDict:
        world = self._world
        with world.lock:
            person = world.person(by_user_id)
            chat = _group(world, group_id)
            old = chat.bot_status
            chat.bot_status = KICKED
            update = world.my_chat_member(chat, person.user, old, KICKED)
        self._notify()
        return update

    def user_deletes_message(self, chat_id: int, message_id: int) -> None:
        with self._world.lock:
            chat = self._world.chat(chat_id)
            if chat.messages.pop(message_id, None) is None:
                raise ValueError(f"no message {message_id} in chat {chat_id} to delete")

    def age_messages(self, hours: float) -> None:
        with self._world.lock:
            self._world.age_messages(hours)

    # -- observing --------------------------------------------------------------------------

    def inbox(self, chat_id: int) -> list[JsonDict]:
        with self._world.lock:
            return [self._world.export(m) for m in self._world.bot_messages(chat_id)]

    def message(self, chat_id: int, message_id: int) -> JsonDict | None:
        with self._world.lock:
            chat = self._world.chats.get(chat_id)
            stored = chat.messages.get(message_id) if chat is not None else None
            return None if stored is None else self._world.export(stored)

    def calls(self, method: str | None = None) -> list[Call]:
        with self._world.lock:
            log = self._world.log
            return list(log) if method is None else [c for c in log if c.method == method]

    def deliveries(self, chat_id: int) -> int:
        with self._world.lock:
            return self._world.delivery_counts[chat_id]

    def count(self, method: str, status: int | None = None) -> int:
        with self._world.lock:
            counts = self._world.status_counts
            if status is not None:
                return counts[method, status]
            return sum(n for (m, _), n in counts.items() if m == method)

    def stats(self) -> dict[str, dict[str, int]]:
        """{method: {status: count}} over the recorded calls (string keys: JSON-friendly)."""
        result: dict[str, dict[str, int]] = {}
        with self._world.lock:
            for (method, status), n in sorted(self._world.status_counts.items()):
                result.setdefault(method, {})[str(status)] = n
        return result

    def pending_updates(self) -> int:
        with self._world.lock:
            return self._world.updates.pending_count()

    def commands(self, scope: JsonDict | None = None, language_code: str = "") -> list[JsonDict]:
        """What setMyCommands stored for exactly this scope and language (no fallback)."""
        key = scope_key(scope or {"type": "default"}), language_code
        with self._world.lock:
            return [dict(c) for c in self._world.commands.get(key, [])]

    @property
    def webhook_url(self) -> str | None:
        with self._world.lock:
            webhook = self._world.updates.webhook
            return webhook.url if webhook is not None else None

    def webhook_info(self) -> JsonDict:
        with self._world.lock:
            return webhook_info(self._world)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
    ) -> None:
        wait_until(predicate, self.calls, timeout, interval)

    def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[JsonDict], bool] | None = None,
        timeout: float = 10.0,
    ) -> JsonDict:
        return wait_for_message(self.inbox, chat_id, predicate, timeout)

    # -- knobs ------------------------------------------------------------------------------

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

    def reset_limits(self) -> None:
        """Refill every budget, as after a long quiet period."""
        with self._world.lock:
            self._world.limiter.reset(time.monotonic())

    def set_latency(self, low: float, high: float) -> None:
        if not 0.0 <= low <= high:
            raise ValueError("latency needs 0 <= low <= high")
        with self._world.lock:
            self._world.latency = (low, high)

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

    def end_outage(self) -> None:
        with self._world.lock:
            self._world.outage = None

    def reset_calls(self) -> None:
        with self._world.lock:
            self._world.reset_calls()

    # -- process mode -----------------------------------------------------------------------

    def _control_call(self, name: str, kwargs: dict[str, Any]) -> Any:
        if name not in CONTROL_METHODS:
            raise AttributeError(f"StandIn has no remotely callable method {name!r}")
        return to_jsonable(getattr(self, name)(**kwargs))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
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


def wait_until(
    predicate: Callable[[], bool],
    calls: Callable[[], list[Call]],
    timeout: float,
    interval: float,
) -> None:
    """Poll `predicate`; on timeout fail with the last calls the stand-in saw.
    Shared by StandIn and RemoteStandIn."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {describe(predicate)}; "
                f"last calls: {summarize_calls(calls()[-8:])}"
            )
        time.sleep(interval)


def wait_for_message(
    inbox: Callable[[int], list[JsonDict]],
    chat_id: int,
    predicate: Callable[[JsonDict], bool] | None,
    timeout: float,
    interval: float = 0.02,
) -> JsonDict:
    """The newest bot message in the chat matching `predicate` (current content, so edits
    count). Shared by StandIn and RemoteStandIn."""
    deadline = time.monotonic() + timeout
    while True:
        messages = inbox(chat_id)
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
        time.sleep(interval)


__all__ = ["Call", "StandIn", "StandInConfig"]
