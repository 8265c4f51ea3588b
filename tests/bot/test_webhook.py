"""Webhook mode: the same bot behind ptb's webhook server, fed by the stand-in's POSTs."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from tests.fixtures.bot import ADMIN_ID, BotHarness
from tgstandin.server import StandIn

SECRET = "s3cret-Token_for-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def webhook_bot(standin: StandIn, bot_factory: Callable[..., BotHarness]) -> BotHarness:
    port = _free_port()
    standin.set_limits(enabled=False)
    return bot_factory(
        broadcast_rate=1000.0,
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_path="hook",
        webhook_secret=SECRET,
    )


def _start_update(update_id: int, user_id: int) -> dict[str, object]:
    user = {"id": user_id, "is_bot": False, "first_name": "Mallory"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": user_id, "type": "private", "first_name": "Mallory"},
            "from": user,
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


def test_webhook_mode_serves_updates_delivered_by_post(webhook_bot: BotHarness) -> None:
    bot = webhook_bot
    assert bot.tg.webhook_url is not None and bot.tg.webhook_url.endswith("/hook")
    user = bot.tg.add_user()
    bot.say("/start", user)
    assert "Welcome" in bot.tg.wait_for_message(user)["text"]
    assert bot.tg.count("getUpdates") == 0


@pytest.mark.parametrize("header", [None, "wrong-secret"])
def test_a_request_without_the_right_secret_is_refused(
    webhook_bot: BotHarness, header: str | None
) -> None:
    url = webhook_bot.tg.webhook_url
    assert url is not None
    headers = {} if header is None else {"X-Telegram-Bot-Api-Secret-Token": header}
    response = httpx.post(url, json=_start_update(999_999, 4242), headers=headers)
    assert response.status_code == 403
    assert webhook_bot.tg.inbox(4242) == []
    assert webhook_bot.audience().subscribed == 0


def test_push_and_undo_work_in_webhook_mode(webhook_bot: BotHarness) -> None:
    bot = webhook_bot
    users = bot.tg.add_users(20)
    bot.subscribe(users)
    report = bot.push("Hooked")
    assert "Delivered: 20" in report["text"]
    mark = bot.last_message_id()
    bot.say("/undo", reply_to_message_id=report["message_id"])
    ask = bot.next_reply(mark, lambda m: "Delete it" in m.get("text", ""))
    data = ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, ask["message_id"], data)
    done = bot.next_reply(ask["message_id"], lambda m: "Removed:" in m.get("text", ""))
    assert "Removed: 20" in done["text"]
