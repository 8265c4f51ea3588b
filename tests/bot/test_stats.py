"""/stats end to end: the real bot over real HTTP against the stand-in (both backends)."""

from __future__ import annotations

from typing import Any

from tests.fixtures.bot import ADMIN_ID, BotHarness
from tgstandin.spec import Upload

UNKNOWN_COMMAND = "Sorry, I don't know that command. /help"


def _photos_to(bot: BotHarness, chat_id: int) -> list[Any]:
    return [c for c in bot.tg.calls("sendPhoto") if c.chat_id == chat_id and c.status == 200]


def test_an_admin_gets_the_numbers_and_the_chart(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(6)
    bot.subscribe(users)
    bot.say("/stop", users[0])
    bot.tg.set_user_state(users[1], "blocked")
    bot.tg.wait_for(lambda: bot.audience().subscribed == 4)
    bot.push("Numbers, please")
    mark = bot.last_message_id()

    bot.say("/stats")

    text = bot.next_reply(mark, lambda m: "Statistics" in m.get("text", ""))["text"]
    assert "Subscribers now: 4 (unsubscribed 1, purged 1)" in text
    assert "Last 7 days: joined 6, returned 0, left 1, purged 1 (blocked: 1)" in text
    assert "“Numbers, please” (done): delivered 4 · failed 0 · removed 0" in text
    photo = bot.next_reply(mark, lambda m: "photo" in m)
    assert photo["caption"] == "Audience over the last 90 days (UTC), broadcasts marked"
    (call,) = _photos_to(bot, ADMIN_ID)
    # Uploaded as a file of its own (multipart), a PNG of some tens of kilobytes.
    upload = call.params["photo"]
    assert isinstance(upload, Upload) and upload.size > 10_000


def test_anyone_else_gets_the_unknown_command_answer_and_no_numbers(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    user = bot.tg.add_user()
    bot.subscribe([user])
    mark = bot.last_message_id(user)

    bot.say("/stats", user)

    assert bot.next_reply(mark, chat_id=user)["text"] == UNKNOWN_COMMAND
    # Everything the bot sent this user after /start is that one answer.
    assert [m["text"] for m in bot.tg.inbox(user) if m["message_id"] > mark] == [UNKNOWN_COMMAND]
    assert _photos_to(bot, user) == []


def test_admins_see_stats_among_their_commands(fast_bot: BotHarness) -> None:
    bot = fast_bot
    mark = bot.last_message_id()
    bot.say("/help")
    assert "/stats" in bot.next_reply(mark)["text"]
    admin_scopes = [
        call.params["commands"]
        for call in bot.tg.calls("setMyCommands")
        if (call.params.get("scope") or {}).get("chat_id") == ADMIN_ID and call.status == 200
    ]
    assert admin_scopes and any(c["command"] == "stats" for c in admin_scopes[0])
