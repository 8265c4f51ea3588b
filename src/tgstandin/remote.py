"""`RemoteStandIn`: the `StandIn` API for a stand-in running in another process.

Process mode (`python -m tgstandin ...`) keeps the stand-in off the bot's GIL in
benchmarks; this client speaks to its JSON control endpoint (`POST /_standin/<method>`).
Same method names and parameters as `StandIn`; `wait_for` and `wait_for_message` poll from
this side because predicates cannot be sent over the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

import httpx

from tgstandin.server import wait_for_message, wait_until
from tgstandin.world import Call, JsonDict

_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "TypeError": TypeError,
    "AttributeError": AttributeError,
    "AssertionError": AssertionError,
}


class RemoteError(RuntimeError):
    """The remote stand-in failed in a way that has no local exception type."""


class RemoteStandIn:
    def __init__(self, control_url: str, timeout: float = 30.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._http = httpx.Client(timeout=timeout, trust_env=False)
        info = self.info()
        self.base_url: str = info["base_url"]
        self.token: str = info["token"]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteStandIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, name: str, **kwargs: Any) -> Any:
        response = self._http.post(f"{self.control_url}/{name}", json=kwargs)
        payload = response.json()
        if response.status_code != 200:
            error = _ERRORS.get(payload.get("type", ""), RemoteError)
            raise error(payload.get("error", response.text))
        return payload["result"]

    def info(self) -> JsonDict:
        result: JsonDict = self._call("info")
        return result

    # -- world ------------------------------------------------------------------------------

    def add_user(
        self,
        user_id: int | None = None,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        state: str = "active",
    ) -> int:
        return int(
            self._call(
                "add_user",
                user_id=user_id,
                first_name=first_name,
                username=username,
                language_code=language_code,
                state=state,
            )
        )

    def add_users(
        self, count: int, *, blocked: int = 0, deactivated: int = 0, start_id: int | None = None
    ) -> list[int]:
        return list(
            self._call(
                "add_users",
                count=count,
                blocked=blocked,
                deactivated=deactivated,
                start_id=start_id,
            )
        )

    def add_group(
        self,
        title: str,
        group_id: int | None = None,
        supergroup: bool = False,
        *,
        bot_status: str = "member",
    ) -> int:
        return int(
            self._call(
                "add_group",
                title=title,
                group_id=group_id,
                supergroup=supergroup,
                bot_status=bot_status,
            )
        )

    def set_user_state(self, user_id: int, state: str, notify: bool = True) -> None:
        self._call("set_user_state", user_id=user_id, state=state, notify=notify)

    def user_state(self, user_id: int) -> str:
        return str(self._call("user_state", user_id=user_id))

    def user_ids(self, state: str | None = None) -> list[int]:
        return list(self._call("user_ids", state=state))

    def remove_chat(self, chat_id: int) -> None:
        self._call("remove_chat", chat_id=chat_id)

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
        result: JsonDict = self._call(
            "send_text",
            user_id=user_id,
            text=text,
            chat_id=chat_id,
            reply_to_message_id=reply_to_message_id,
            entities=entities,
        )
        return result

    def send_photo(
        self,
        user_id: int,
        caption: str | None = None,
        *,
        caption_entities: list[JsonDict] | None = None,
        chat_id: int | None = None,
    ) -> JsonDict:
        result: JsonDict = self._call(
            "send_photo",
            user_id=user_id,
            caption=caption,
            caption_entities=caption_entities,
            chat_id=chat_id,
        )
        return result

    def press_button(self, user_id: int, chat_id: int, message_id: int, data: str) -> JsonDict:
        result: JsonDict = self._call(
            "press_button", user_id=user_id, chat_id=chat_id, message_id=message_id, data=data
        )
        return result

    def add_bot_to_group(self, group_id: int, by_user_id: int) -> JsonDict:
        result: JsonDict = self._call("add_bot_to_group", group_id=group_id, by_user_id=by_user_id)
        return result

    def kick_bot_from_group(self, group_id: int, by_user_id: int) -> JsonDict:
        result: JsonDict = self._call(
            "kick_bot_from_group", group_id=group_id, by_user_id=by_user_id
        )
        return result

    def user_deletes_message(self, chat_id: int, message_id: int) -> None:
        self._call("user_deletes_message", chat_id=chat_id, message_id=message_id)

    def age_messages(self, hours: float) -> None:
        self._call("age_messages", hours=hours)

    # -- observing --------------------------------------------------------------------------

    def inbox(self, chat_id: int) -> list[JsonDict]:
        return [_with_copy_tuple(m) for m in self._call("inbox", chat_id=chat_id)]

    def message(self, chat_id: int, message_id: int) -> JsonDict | None:
        result = self._call("message", chat_id=chat_id, message_id=message_id)
        return None if result is None else _with_copy_tuple(result)

    def calls(self, method: str | None = None) -> list[Call]:
        return [Call(**c) for c in self._call("calls", method=method)]

    def deliveries(self, chat_id: int) -> int:
        return int(self._call("deliveries", chat_id=chat_id))

    def count(self, method: str, status: int | None = None) -> int:
        return int(self._call("count", method=method, status=status))

    def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = self._call("stats")
        return result

    def pending_updates(self) -> int:
        return int(self._call("pending_updates"))

    def commands(self, scope: JsonDict | None = None, language_code: str = "") -> list[JsonDict]:
        return list(self._call("commands", scope=scope, language_code=language_code))

    @property
    def webhook_url(self) -> str | None:
        url = self.webhook_info()["url"]
        return str(url) if url else None

    def webhook_info(self) -> JsonDict:
        result: JsonDict = self._call("webhook_info")
        return result

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
    ) -> None:
        wait_until(predicate, self.calls, timeout, interval)

    def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[JsonDict], bool] | None = None,
        timeout: float = 10.0,
    ) -> JsonDict:
        return wait_for_message(self.inbox, chat_id, predicate, timeout, interval=0.05)

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
        self._call(
            "set_limits",
            global_rate=global_rate,
            global_burst=global_burst,
            per_chat_rate=per_chat_rate,
            per_chat_burst=per_chat_burst,
            group_per_minute=group_per_minute,
            enabled=enabled,
            retry_after_penalty=retry_after_penalty,
            paid_rate=paid_rate,
            paid_burst=paid_burst,
        )

    def reset_limits(self) -> None:
        self._call("reset_limits")

    def set_latency(self, low: float, high: float) -> None:
        self._call("set_latency", low=low, high=high)

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
        self._call(
            "inject_faults",
            kind=kind,
            rate=rate,
            next_calls=next_calls,
            methods=None if methods is None else sorted(methods),
            hold=hold,
            chat_ids=None if chat_ids is None else sorted(chat_ids),
        )

    def start_outage(
        self,
        seconds: float,
        *,
        kind: str = "502",
        methods: Collection[str] | None = None,
        hold: float | None = None,
    ) -> None:
        self._call(
            "start_outage",
            seconds=seconds,
            kind=kind,
            methods=None if methods is None else sorted(methods),
            hold=hold,
        )

    def end_outage(self) -> None:
        self._call("end_outage")

    def reset_calls(self) -> None:
        self._call("reset_calls")


def _with_copy_tuple(message: JsonDict) -> JsonDict:
    """JSON turned the copied_from tuple into a list; give callers the local shape."""
    if "copied_from" in message:
        message["copied_from"] = tuple(message["copied_from"])
    return message
