"""/undo end to end: retract a broadcast from every chat by replying to its report."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from pushbot.db import queries
from pushbot.db.models import PushMessage
from tests.fixtures.bot import ADMIN_ID, BotHarness


def _undo_by_reply(bot: BotHarness, replied_to: int) -> dict[str, Any]:
    mark = bot.last_message_id()
    bot.say("/undo", reply_to_message_id=replied_to)
    return bot.next_reply(mark)


def _retract(bot: BotHarness, ask: dict[str, Any]) -> dict[str, Any]:
    data = ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data.startswith("undo:retract:")
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, ask["message_id"], data)
    return bot.next_reply(ask["message_id"], lambda m: "Removed:" in m.get("text", ""), timeout=60)


def _successful_deletes(bot: BotHarness) -> Counter[int]:
    return Counter(
        int(c.params["chat_id"]) for c in bot.tg.calls("deleteMessage") if c.status == 200
    )


def test_undo_deletes_every_delivered_copy_exactly_once(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(30)
    bot.subscribe(users)
    report = bot.push("Oops, wrong message")
    ask = _undo_by_reply(bot, report["message_id"])
    assert "Copies out: 30" in ask["text"] and "Delete it from every chat?" in ask["text"]
    done = _retract(bot, ask)
    assert "Removed: 30" in done["text"]
    assert _successful_deletes(bot) == Counter({user: 1 for user in users})
    assert all(not any(m.get("copied_from") for m in bot.tg.inbox(u)) for u in users)
    push = bot.query(lambda s: queries.find_push_by_message(s, ADMIN_ID, report["message_id"]))
    assert push.deleted and push.status == "retracted"


def test_blocked_since_and_already_deleted_copies_are_accounted_for(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(10)
    bot.subscribe(users)
    report = bot.push("Counting")
    blocked, self_deleted = users[0], users[1]
    bot.tg.set_user_state(blocked, "blocked", notify=False)
    copy = next(m for m in bot.tg.inbox(self_deleted) if m.get("copied_from"))
    bot.tg.user_deletes_message(self_deleted, copy["message_id"])
    done = _retract(bot, _undo_by_reply(bot, report["message_id"]))
    assert "Removed: 9" in done["text"]
    assert "Could not remove: 1" in done["text"] and "blocked" in done["text"]


def test_a_broadcast_older_than_48_hours_is_refused_up_front(fast_bot: BotHarness) -> None:
    bot = fast_bot
    bot.subscribe(bot.tg.add_users(3))
    report = bot.push("Ancient")
    with bot.runtime.session_factory.begin() as session:
        session.execute(
            update(PushMessage).values(created_at=datetime.now(UTC) - timedelta(hours=49))
        )
    bot.tg.age_messages(49)
    ask = _undo_by_reply(bot, report["message_id"])
    assert "older than 48 hours" in ask["text"] and "reply_markup" not in ask
    assert bot.tg.count("deleteMessage") == 0


def test_copies_telegram_considers_too_old_are_reported_not_pretended(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(4)
    bot.subscribe(users)
    report = bot.push("Edge of the window")
    bot.tg.age_messages(49)  # Telegram's clock says too old; our record says 0 hours
    done = _retract(bot, _undo_by_reply(bot, report["message_id"]))
    assert "Removed: 0" in done["text"] and "Could not remove: 4" in done["text"]
    assert "48 hours" in done["text"]


def test_undo_during_a_running_broadcast_stops_it_then_retracts(bot: BotHarness) -> None:
    bot.seed_subscribers(200)
    confirm = bot.send_push("too early")
    bot.tg.wait_for(lambda: len(bot.copies_per_chat()) >= 20)
    ask = _undo_by_reply(bot, confirm["message_id"])  # the status message
    assert "still running" in ask["text"]
    done = _retract(bot, ask)
    delivered = bot.copies_per_chat()
    assert 20 <= sum(delivered.values()) < 200
    assert _successful_deletes(bot) == Counter({chat: 1 for chat in delivered})
    assert f"Removed: {len(delivered)}" in done["text"]


def test_second_undo_says_already_retracted_and_bad_targets_change_nothing(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    bot.subscribe(bot.tg.add_users(3))
    report = bot.push("Once")
    _retract(bot, _undo_by_reply(bot, report["message_id"]))
    again = _undo_by_reply(bot, report["message_id"])
    assert "already retracted" in again["text"]
    mark = bot.last_message_id()
    own = bot.say("just a note")
    not_a_push = _undo_by_reply(bot, own["message_id"])
    assert "not a broadcast" in not_a_push["text"]
    assert bot.last_message_id() == not_a_push["message_id"] > mark
    bot.say("/undo 1234")
    assert "No broadcast" in bot.next_reply(not_a_push["message_id"])["text"]
    assert sum(_successful_deletes(bot).values()) == 3


def test_undo_without_reply_lists_recent_broadcasts(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(3)
    bot.subscribe(users)
    bot.push("First")
    bot.push("Second")
    mark = bot.last_message_id()
    bot.say("/undo")
    menu = bot.next_reply(mark, lambda m: "Which broadcast" in m.get("text", ""))
    rows = menu["reply_markup"]["inline_keyboard"]
    assert "Second" in rows[0][0]["text"] and "First" in rows[1][0]["text"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, menu["message_id"], rows[1][0]["callback_data"])
    ask = bot.tg.wait_for_message(
        ADMIN_ID,
        lambda m: m["message_id"] == menu["message_id"] and "Delete it" in m.get("text", ""),
    )
    assert "First" in ask["text"]
    done = _retract(bot, ask)
    assert "Removed: 3" in done["text"]
    for user in users:
        assert [m["text"] for m in bot.tg.inbox(user) if m.get("copied_from")] == ["Second"]


def test_undo_by_uuid(fast_bot: BotHarness) -> None:
    bot = fast_bot
    bot.subscribe(bot.tg.add_users(2))
    bot.push("By id")
    (row,) = bot.query(lambda s: queries.recent_pushes(s, 1))
    mark = bot.last_message_id()
    bot.say(f"/undo {row.push.uuid}")
    ask = bot.next_reply(mark)
    assert "Delete it" in ask["text"]
    assert "Removed: 2" in _retract(bot, ask)["text"]
