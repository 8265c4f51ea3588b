"""User commands and the audience, end to end: real bot, real HTTP, stand-in Telegram."""

from __future__ import annotations

from pushbot.db import queries
from tests.fixtures.bot import ADMIN_ID, BotHarness


def test_start_subscribes_and_a_second_start_says_already(bot: BotHarness) -> None:
    user = bot.tg.add_user(first_name="Alice")
    bot.say("/start", user)
    assert "Welcome" in bot.tg.wait_for_message(user)["text"]
    bot.say("/start", user)
    bot.tg.wait_for(lambda: len(bot.tg.inbox(user)) == 2)
    assert "already subscribed" in bot.tg.inbox(user)[-1]["text"]
    assert bot.audience().subscribed == 1


def test_stop_unsubscribes_but_keeps_the_chat_on_record(bot: BotHarness) -> None:
    user = bot.tg.add_user()
    bot.subscribe([user])
    bot.say("/stop", user)
    bot.tg.wait_for(lambda: len(bot.tg.inbox(user)) == 2)
    assert "no more announcements" in bot.tg.inbox(user)[-1]["text"]
    counts = bot.audience()
    assert (counts.subscribed, counts.unsubscribed) == (0, 1)
    bot.say("/start", user)
    bot.tg.wait_for(lambda: bot.audience().subscribed == 1)


def test_blocking_purges_at_once_and_unblocking_brings_back(bot: BotHarness) -> None:
    user = bot.tg.add_user()
    bot.subscribe([user])
    bot.tg.set_user_state(user, "blocked")
    bot.tg.wait_for(lambda: bot.audience().purged == 1)
    assert bot.audience().subscribed == 0
    bot.tg.set_user_state(user, "active")
    bot.tg.wait_for(lambda: bot.audience().subscribed == 1)


def test_a_group_the_bot_is_added_to_joins_the_audience(bot: BotHarness) -> None:
    user = bot.tg.add_user()
    group = bot.tg.add_group("Book club")
    bot.tg.add_bot_to_group(group, user)
    bot.tg.wait_for(lambda: bot.audience().subscribed == 1)
    bot.tg.kick_bot_from_group(group, user)
    bot.tg.wait_for(lambda: bot.audience().purged == 1)


def test_help_shows_admin_commands_to_admins_only(bot: BotHarness) -> None:
    user = bot.tg.add_user()
    bot.say("/help", user)
    assert "/push" not in bot.tg.wait_for_message(user)["text"]
    bot.say("/help", ADMIN_ID)
    assert "/push" in bot.tg.wait_for_message(ADMIN_ID)["text"]


def test_commands_are_registered_for_everyone_and_admin_ones_per_admin(bot: BotHarness) -> None:
    calls = bot.tg.calls("setMyCommands")
    scopes = [call.params.get("scope") for call in calls if call.status == 200]
    assert None in scopes
    assert any(scope and scope.get("chat_id") == ADMIN_ID for scope in scopes)


def test_a_non_admin_gets_no_broadcast_power(bot: BotHarness) -> None:
    user = bot.tg.add_user()
    bot.subscribe([user])
    for text in ("/push hello everyone", "/push", "/undo"):
        mark = bot.last_message_id(user)
        bot.say(text, user)
        reply = bot.next_reply(mark, chat_id=user)
        assert reply["text"] == "Sorry, I don't know that command. /help"
    assert bot.tg.count("copyMessage") == 0
    assert bot.query(queries.recent_pushes) == []
