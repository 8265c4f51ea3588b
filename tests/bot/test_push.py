"""/push end to end: conversation, preview, broadcast, live status and report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pushbot.bot import push as push_module
from pushbot.db import queries
from tests.fixtures.bot import ADMIN_ID, OTHER_ADMIN_ID, BotHarness
from tgstandin.server import StandIn


def _texts(bot: BotHarness, chat_id: int = ADMIN_ID) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in bot.tg.inbox(chat_id)]


def test_push_with_text_delivers_exactly_one_copy_per_subscriber(fast_bot: BotHarness) -> None:
    bot = fast_bot
    subscribers = bot.tg.add_users(40)
    quitter, blocker, ghost = bot.tg.add_users(3)
    bot.subscribe([*subscribers, quitter, blocker, ghost])
    bot.say("/stop", quitter)
    bot.tg.set_user_state(blocker, "blocked")
    bot.tg.set_user_state(ghost, "deactivated", notify=False)
    bot.tg.wait_for(lambda: bot.audience().subscribed == 41)

    report = bot.push("Hello *everyone*")

    copies = bot.copies_per_chat()
    assert {chat: n for chat, n in copies.items()} == {chat: 1 for chat in subscribers}
    assert quitter not in copies and blocker not in copies
    assert "Delivered: 40" in report["text"]
    assert "deactivated: 1" in report["text"]
    assert "Reply /undo" in report["text"]
    assert bot.audience().subscribed == 40  # the deactivated account was purged
    received = bot.tg.inbox(subscribers[0])[-1]
    assert received["text"] == "Hello *everyone*"


def test_the_report_is_stored_so_undo_can_find_the_broadcast(fast_bot: BotHarness) -> None:
    bot = fast_bot
    bot.subscribe(bot.tg.add_users(3))
    report = bot.push("Stored")
    push = bot.query(lambda s: queries.find_push_by_message(s, ADMIN_ID, report["message_id"]))
    assert push is not None and push.status == "done" and push.text == "Stored"


def test_push_asks_for_any_message_and_keeps_its_formatting(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(5)
    bot.subscribe(users)
    mark = bot.last_message_id()
    bot.say("/push")
    assert "Send me the message" in bot.next_reply(mark)["text"]
    bold = [{"type": "bold", "offset": 0, "length": 4}]
    bot.tg.send_text(ADMIN_ID, "Big news inside", entities=bold)
    preview = bot.next_reply(mark + 1, lambda m: m.get("copied_from") is not None)
    assert preview["text"] == "Big news inside" and preview["entities"] == bold
    confirm = bot.next_reply(preview["message_id"], lambda m: "Send it?" in m.get("text", ""))
    assert "5 subscribed" in confirm["text"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "push:send")
    bot.next_reply(confirm["message_id"], lambda m: "Broadcast finished" in m.get("text", ""))
    for user in users:
        copy = bot.tg.inbox(user)[-1]
        assert copy["text"] == "Big news inside" and copy["entities"] == bold


def test_push_of_a_photo_keeps_the_caption(fast_bot: BotHarness) -> None:
    bot = fast_bot
    user = bot.tg.add_user()
    bot.subscribe([user])
    mark = bot.last_message_id()
    bot.say("/push")
    bot.next_reply(mark)
    bot.tg.send_photo(ADMIN_ID, caption="Look at this")
    confirm = bot.next_reply(mark, lambda m: "Send it?" in m.get("text", ""))
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "push:send")
    bot.next_reply(confirm["message_id"], lambda m: "Broadcast finished" in m.get("text", ""))
    copy = bot.tg.inbox(user)[-1]
    assert copy["caption"] == "Look at this" and "photo" in copy


def test_cancel_button_and_cancel_command_send_nothing(fast_bot: BotHarness) -> None:
    bot = fast_bot
    bot.subscribe(bot.tg.add_users(2))
    mark = bot.last_message_id()
    bot.say("/push not this")
    confirm = bot.next_reply(mark, lambda m: "Send it?" in m.get("text", ""))
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "push:cancel")
    bot.tg.wait_for(
        lambda: (
            "nothing was sent"
            in (bot.tg.message(ADMIN_ID, confirm["message_id"]) or {}).get("text", "")
        )
    )
    mark = bot.last_message_id()
    bot.say("/push")
    asked = bot.next_reply(mark)
    bot.say("/cancel")
    assert "nothing was sent" in bot.next_reply(asked["message_id"])["text"]
    # The only copies are the previews, in the admin's own chat.
    assert all(call.chat_id == ADMIN_ID for call in bot.tg.calls("copyMessage"))
    assert bot.query(queries.recent_pushes) == []


def test_a_second_push_while_one_runs_is_told_so(bot: BotHarness) -> None:
    # Real limits: 60 recipients take about two seconds, long enough to overlap.
    bot.seed_subscribers(60)
    confirm = bot.send_push("first")

    def counted() -> bool:
        # Counted, not just launched: until the job has counted its recipients its progress
        # reads "starting…" (tests/bot/test_render.py), with no counts to show yet.
        active = bot.runtime.broadcaster.active()
        return active is not None and active.total > 0

    bot.tg.wait_for(counted)
    bot.tg.add_user(OTHER_ADMIN_ID)
    bot.say("/push second", OTHER_ADMIN_ID)
    busy = bot.tg.wait_for_message(OTHER_ADMIN_ID)
    assert "already running" in busy["text"] and "Delivered" in busy["text"]
    bot.next_reply(
        confirm["message_id"], lambda m: "Broadcast finished" in m.get("text", ""), timeout=30
    )


def test_status_message_is_edited_live_and_never_unmodified(bot: BotHarness) -> None:
    bot.seed_subscribers(150)
    bot.tg.reset_calls()
    report = bot.push("Paced", timeout=60)
    edits = [c for c in bot.tg.calls("editMessageText") if c.chat_id == ADMIN_ID]
    assert len(edits) >= 2, "the status message should have been updated while sending"
    assert all("not modified" not in (c.description or "") for c in edits)
    assert bot.tg.count("copyMessage", 429) == 0 and bot.tg.count("editMessageText", 429) == 0
    assert "Delivered: 150" in report["text"]
    status = bot.tg.message(ADMIN_ID, report["reply_to_message"]["message_id"])
    assert status is not None and "reply_markup" not in status


def test_pause_resume_and_cancel_buttons(bot: BotHarness) -> None:
    bot.seed_subscribers(120)
    status_id = bot.send_push("slow one")["message_id"]
    status = bot.tg.wait_for_message(
        ADMIN_ID, lambda m: m["message_id"] == status_id and "Pause" in str(m.get("reply_markup"))
    )
    push_uuid = _button(status, "Pause").split(":", 2)[2]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, status_id, f"job:pause:{push_uuid}")
    bot.tg.wait_for(lambda: _status_of(bot, push_uuid) == "paused")
    paused_at = len(bot.copies_per_chat())
    bot.tg.wait_for(
        lambda: "Resume" in str((bot.tg.message(ADMIN_ID, status_id) or {}).get("reply_markup")),
        timeout=10,
    )
    assert len(bot.copies_per_chat()) <= paused_at + 30  # at most the copies in flight
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, status_id, f"job:resume:{push_uuid}")
    bot.tg.wait_for(lambda: _status_of(bot, push_uuid) == "running")
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, status_id, f"job:cancel:{push_uuid}")
    report = bot.next_reply(status_id, lambda m: "cancelled" in m.get("text", ""))
    assert "Broadcast cancelled" in report["text"]
    assert _status_of(bot, push_uuid) == "cancelled"
    assert len(bot.copies_per_chat()) < 120


def _button(message: dict[str, Any], label: str) -> str:
    for row in message["reply_markup"]["inline_keyboard"]:
        for button in row:
            if label in button["text"]:
                return str(button["callback_data"])
    raise AssertionError(f"no {label} button in {message}")


def _status_of(bot: BotHarness, raw_uuid: str) -> str | None:
    from uuid import UUID

    push = bot.query(lambda s: queries.get_push(s, UUID(raw_uuid)))
    return None if push is None else str(push.status)


def test_an_abandoned_push_times_out(
    monkeypatch: pytest.MonkeyPatch, standin: StandIn, bot_factory: Callable[..., BotHarness]
) -> None:
    monkeypatch.setattr(push_module, "CONVERSATION_TIMEOUT_SECONDS", 1.0)
    standin.set_limits(enabled=False)
    bot = bot_factory(broadcast_rate=1000.0)
    mark = bot.last_message_id()
    bot.say("/push")
    bot.next_reply(mark)
    timed_out = bot.next_reply(mark, lambda m: "timed out" in m.get("text", ""), timeout=10)
    assert "nothing was sent" in timed_out["text"]
    # The conversation is over: a plain message now is not taken as the broadcast.
    mark = bot.last_message_id()
    bot.say("not a broadcast")
    # One chat's updates are handled one after another: once /help is answered, the message
    # before it has been handled too (a preview and "Send it?" would have come first).
    bot.say("/help")
    bot.next_reply(mark, lambda m: "I send announcements" in m.get("text", ""))
    assert all("Send it?" not in m.get("text", "") for m in bot.tg.inbox(ADMIN_ID))
    assert bot.tg.calls("copyMessage") == [], "nothing was previewed"
