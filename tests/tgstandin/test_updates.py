"""Updates: what people do reaches the bot by long polling or by webhook, like Telegram."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import telegram.error

from tests.tgstandin.support import make_bot, raw, run
from tgstandin import StandIn
from tgstandin.world import command_entities, utf16_len


def test_get_updates_offset_semantics(standin: StandIn) -> None:
    user = standin.add_user()
    command = standin.send_text(user, "/start")
    plain = standin.send_text(user, "hello")
    assert command["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]
    assert "entities" not in plain

    def ids(**params: Any) -> list[int]:
        return [u["update_id"] for u in raw(standin, "getUpdates", **params).json()["result"]]

    first, second = ids()
    assert second == first + 1
    assert ids() == [first, second]  # unconfirmed: still there
    assert ids(limit=1) == [first]
    assert ids(offset=second) == [second]  # confirms the first
    assert ids() == [second]
    assert standin.pending_updates() == 1
    assert ids(offset=second + 1) == []
    assert standin.pending_updates() == 0


def test_a_leading_command_gets_its_entity() -> None:
    assert command_entities("/push@pushbot_test_bot hi") == [
        {"offset": 0, "length": 22, "type": "bot_command"}
    ]
    assert command_entities("/ nope") == []
    assert command_entities("not /a command") == []
    assert utf16_len("😀") == 2


def test_long_polling_waits_for_an_update_or_the_timeout(standin: StandIn) -> None:
    user = standin.add_user()

    async def scenario() -> tuple[float, float, int]:
        async with make_bot(standin) as bot:
            started = time.monotonic()
            assert await bot.get_updates(timeout=1) == ()
            idle = time.monotonic() - started
            threading.Timer(0.3, standin.send_text, (user, "wake up")).start()
            started = time.monotonic()
            updates = await bot.get_updates(timeout=5)
            return idle, time.monotonic() - started, len(updates)

    idle, woken, count = run(scenario())
    assert 0.9 <= idle < 1.5
    assert 0.25 <= woken < 1.0
    assert count == 1


def test_allowed_updates_filters_new_updates(standin: StandIn) -> None:
    user = standin.add_user()
    raw(standin, "getUpdates", allowed_updates=["callback_query"])
    standin.send_text(user, "ignored")
    sent = raw(
        standin,
        "sendMessage",
        chat_id=user,
        text="Pick",
        reply_markup={"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]},
    )
    standin.press_button(user, user, sent.json()["result"]["message_id"], "a")
    updates = raw(standin, "getUpdates").json()["result"]
    assert [list(u)[1] for u in updates] == ["callback_query"]


def test_blocking_and_group_membership_produce_my_chat_member(standin: StandIn) -> None:
    user = standin.add_user()
    standin.set_user_state(user, "blocked")
    standin.set_user_state(user, "active")
    group = standin.add_group("Team", bot_status="left")
    joined = standin.add_bot_to_group(group, user)["my_chat_member"]
    assert (joined["old_chat_member"]["status"], joined["new_chat_member"]["status"]) == (
        "left",
        "member",
    )
    assert joined["chat"] == {"id": group, "title": "Team", "type": "group"}
    kicked = standin.kick_bot_from_group(group, user)["my_chat_member"]
    assert kicked["new_chat_member"] == {
        "status": "kicked",
        "user": joined["new_chat_member"]["user"],
        "until_date": 0,
    }

    async def scenario() -> list[Any]:
        async with make_bot(standin) as bot:
            return list(await bot.get_updates())

    updates = run(scenario())
    kinds = [
        (u.my_chat_member.chat.type, u.my_chat_member.new_chat_member.status)
        if u.my_chat_member
        else ("message", "new_chat_members")
        for u in updates
    ]
    assert kinds == [
        ("private", "kicked"),
        ("private", "member"),
        ("group", "member"),
        ("message", "new_chat_members"),
        ("group", "kicked"),
    ]
    assert updates[0].my_chat_member.from_user.id == user


def test_privacy_mode_in_groups(standin: StandIn) -> None:
    user = standin.add_user()
    group = standin.add_group("Team")
    standin.send_text(user, "chatting", chat_id=group)
    standin.send_text(user, "/help", chat_id=group)
    updates = raw(standin, "getUpdates").json()["result"]
    assert [u["message"]["text"] for u in updates] == ["/help"]


def test_writing_to_a_blocked_bot_restarts_it(standin: StandIn) -> None:
    user = standin.add_user(state="blocked")
    standin.send_text(user, "/start")
    updates = raw(standin, "getUpdates").json()["result"]
    assert [sorted(u)[0] for u in updates] == ["my_chat_member", "message"]
    assert updates[0]["my_chat_member"]["new_chat_member"]["status"] == "member"
    assert raw(standin, "sendMessage", chat_id=user, text="welcome back").json()["ok"]


def test_a_newer_long_poll_ends_the_older_one(standin: StandIn) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        older = pool.submit(raw, standin, "getUpdates", timeout=5)
        standin.wait_for(lambda: waiting_polls(standin) == 1)
        assert raw(standin, "getUpdates").json()["result"] == []
        assert older.result(timeout=5).json()["error_code"] == 409


def waiting_polls(standin: StandIn) -> int:
    return len(standin._server._polls)  # only len(): the set belongs to the server's thread


# -- webhooks -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """A loopback webhook endpoint recording what it was sent; fails the first `failures`."""

    failures: int = 0
    received: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.failures > 0:
                state.failures -= 1
                self.send_response(500)
            else:
                secret = self.headers.get("X-Telegram-Bot-Api-Secret-Token")
                state.received.append((json.loads(body), secret))
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    state.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.server.shutdown()
    state.server.server_close()


def test_webhook_delivery_with_secret_and_retries(standin: StandIn, receiver: Receiver) -> None:
    user = standin.add_user()
    early = standin.send_text(user, "before the webhook")
    receiver.failures = 2

    async def set_hook() -> None:
        async with make_bot(standin) as bot:
            assert await bot.set_webhook(receiver.url, secret_token="s3cret", max_connections=5)
            with pytest.raises(telegram.error.Conflict, match=r"(?i)webhook is active"):
                await bot.get_updates()

    run(set_hook())
    assert standin.webhook_url == receiver.url
    later = [standin.send_text(user, f"message {i}") for i in range(5)]
    standin.wait_for(lambda: len(receiver.received) == 6 and standin.pending_updates() == 0)
    texts = [update["message"]["text"] for update, _ in receiver.received]
    assert texts == [early["text"]] + [m["text"] for m in later]  # per-chat order
    ids = [update["update_id"] for update, _ in receiver.received]
    assert ids == sorted(ids)
    assert {secret for _, secret in receiver.received} == {"s3cret"}
    info = standin.webhook_info()
    assert info["pending_update_count"] == 0 and info["max_connections"] == 5
    assert (
        info["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    )


def test_webhook_rejects_non_loopback_and_delete_returns_to_polling(
    standin: StandIn, receiver: Receiver
) -> None:
    outside = raw(standin, "setWebhook", url="https://example.com/hook").json()
    assert outside["error_code"] == 400 and "loopback" in outside["description"]
    assert raw(standin, "setWebhook", url=receiver.url).json()["description"] == "Webhook was set"
    assert raw(standin, "deleteWebhook").json() == {
        "ok": True,
        "result": True,
        "description": "Webhook was deleted",
    }
    user = standin.add_user()
    standin.send_text(user, "polling again")
    assert len(raw(standin, "getUpdates").json()["result"]) == 1
    assert standin.webhook_url is None


def test_webhook_spreads_chats_over_connections(standin: StandIn, receiver: Receiver) -> None:
    users = standin.add_users(20)
    raw(standin, "setWebhook", url=receiver.url, max_connections=4)
    for user in users:
        standin.send_text(user, "/start")
    standin.wait_for(lambda: len(receiver.received) == 20 and standin.pending_updates() == 0)
    assert {update["message"]["chat"]["id"] for update, _ in receiver.received} == set(users)


def test_a_group_upgrade_sends_a_service_message_in_each_chat(standin: StandIn) -> None:
    member = standin.add_user(first_name="Ann")
    group = standin.add_group("Team")
    supergroup = standin.migrate_to_supergroup(group, by_user_id=member)
    anonymous_group = standin.add_group("Quiet")
    anonymous_supergroup = standin.migrate_to_supergroup(anonymous_group)

    async def scenario() -> list[Any]:
        async with make_bot(standin) as bot:
            return [u.message for u in await bot.get_updates()]

    old, new, anonymous_old, _anonymous_new = run(scenario())
    # In the old group, from the member who upgraded it: where the chat went.
    assert (old.chat.id, old.chat.type, old.migrate_to_chat_id) == (group, "group", supergroup)
    assert old.from_user.id == member and old.sender_chat is None
    # In the supergroup, on behalf of the supergroup itself: where it came from.
    assert (new.chat.id, new.chat.type, new.migrate_from_chat_id) == (
        supergroup,
        "supergroup",
        group,
    )
    assert new.chat.title == "Team" and new.sender_chat.id == supergroup
    assert new.from_user.username == "GroupAnonymousBot"
    # An anonymous admin's upgrade comes from the group, through GroupAnonymousBot.
    assert anonymous_old.migrate_to_chat_id == anonymous_supergroup
    assert anonymous_old.sender_chat.id == anonymous_group
