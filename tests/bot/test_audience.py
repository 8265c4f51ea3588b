"""/push to a segment, silent or protected, end to end: the real bot against the stand-in."""

from __future__ import annotations

from tests.bot.flows import buttons, choose_audience, copies_in, open_push, press, report_after
from tests.fixtures.bot import ADMIN_ID, OTHER_ADMIN_ID, BotHarness


def _people(bot: BotHarness) -> tuple[list[int], list[int], list[int]]:
    """English and German users who sent /start, and two groups the bot was added to."""
    english = [bot.tg.add_user(language_code="en") for _ in range(3)]
    german = [bot.tg.add_user(language_code="de") for _ in range(2)]
    bot.subscribe(english + german)
    groups = [bot.tg.add_group(f"Club {n}") for n in range(2)]
    for group in groups:
        bot.tg.add_bot_to_group(group, english[0])
    bot.tg.wait_for(lambda: bot.audience().subscribed == 7)
    return english, german, groups


def test_private_chats_only_silent_and_protected(fast_bot: BotHarness) -> None:
    bot = fast_bot
    english, german, groups = _people(bot)
    confirm = open_push(bot, "Just for you")
    assert "7 subscribed chat(s)" in confirm["text"]

    press(bot, confirm["message_id"], "push:audience", lambda t: "Who should receive it?" in t)
    offered = buttons(bot, confirm["message_id"])
    assert {"everyone · 7", "private chats · 5", "groups · 2", "admins only (test) · 0"} <= set(
        offered
    )
    assert {"language en · 3", "language de · 2"} <= set(offered)
    text = press(bot, confirm["message_id"], "push:seg:private", lambda t: "Send it?" in t)
    assert "5 subscribed chat(s) will receive (private chats only)" in text
    press(bot, confirm["message_id"], "push:silent", lambda t: "🔕 Silent" in t)
    text = press(bot, confirm["message_id"], "push:protect", lambda t: "🔒 Protected" in t)
    assert "🔕 Silent: on" in buttons(bot, confirm["message_id"])
    assert "5 subscribed" in text
    press(bot, confirm["message_id"], "push:send")
    report = report_after(bot, confirm["message_id"])

    assert "Audience: private chats · silent, protected" in report["text"]
    assert "Delivered: 5" in report["text"]
    for user in english + german:
        (copy,) = copies_in(bot, user)
        assert copy["text"] == "Just for you"
        assert copy["send_options"]["disable_notification"] is True
        assert copy["send_options"]["protect_content"] is True
        assert copy.get("has_protected_content") is True
    assert all(copies_in(bot, group) == [] for group in groups)
    push = bot.push_of(report["message_id"])
    assert push is not None and str(push.segment) == "private"
    assert push.disable_notification and push.protect_content

    mark = bot.last_message_id()
    bot.say("/history")
    history = bot.next_reply(mark, lambda m: "Latest broadcasts" in m.get("text", ""))
    assert "done · private chats · silent, protected" in history["text"]


def test_send_with_the_defaults_is_still_one_tap(fast_bot: BotHarness) -> None:
    bot = fast_bot
    english, german, groups = _people(bot)
    confirm = open_push(bot, "Everyone")
    press(bot, confirm["message_id"], "push:send")
    report = report_after(bot, confirm["message_id"])
    assert "Audience: everyone" in report["text"] and "Delivered: 7" in report["text"]
    for chat in english + german + groups:
        (copy,) = copies_in(bot, chat)
        assert copy["send_options"] == {
            "disable_notification": False,
            "protect_content": False,
            "allow_paid_broadcast": False,
        }


def test_groups_only(fast_bot: BotHarness) -> None:
    bot = fast_bot
    english, german, groups = _people(bot)
    confirm = open_push(bot, "Hello, groups")
    text = choose_audience(bot, confirm["message_id"], "groups")
    assert "2 subscribed chat(s) will receive (groups only)" in text
    press(bot, confirm["message_id"], "push:send")
    assert "Audience: groups" in report_after(bot, confirm["message_id"])["text"]
    assert all(len(copies_in(bot, group)) == 1 for group in groups)
    assert all(copies_in(bot, user) == [] for user in english + german)


def test_a_language_change_after_start_moves_a_user_between_language_segments(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    english, german, _ = _people(bot)
    switcher = english[1]
    bot.tg.set_user_language(switcher, "de")
    mark = bot.last_message_id(switcher)
    bot.say("/help", switcher)  # any later message reports the new language
    bot.next_reply(mark, chat_id=switcher)
    bot.tg.wait_for(lambda: bot.query(lambda s: _language(s, switcher)) == "de")

    confirm = open_push(bot, "Hallo")
    press(bot, confirm["message_id"], "push:audience", lambda t: "Who should receive it?" in t)
    offered = buttons(bot, confirm["message_id"])
    assert "language de · 3" in offered and "language en · 2" in offered
    text = press(bot, confirm["message_id"], "push:seg:language:de", lambda t: "Send it?" in t)
    assert "3 subscribed chat(s) will receive (language de only)" in text
    press(bot, confirm["message_id"], "push:send")
    report = report_after(bot, confirm["message_id"])

    assert "Audience: language de" in report["text"]
    assert {u for u in english + german if copies_in(bot, u)} == {*german, switcher}


def _language(session: object, chat_id: int) -> str | None:
    from pushbot.db import queries

    chat = queries.get_chat(session, chat_id)  # type: ignore[arg-type]
    return None if chat is None else chat.language_code


def test_a_test_send_reaches_the_admins_on_record_and_names_the_others(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    english, german, groups = _people(bot)
    bot.subscribe([ADMIN_ID])  # Ada has written to the bot; the other admin never did
    confirm = open_push(bot, "Test, please ignore")
    text = choose_audience(bot, confirm["message_id"], "admins")

    assert "1 admin chat(s) will receive (a test)" in text
    assert f"Not reached: {OTHER_ADMIN_ID}" in text
    press(bot, confirm["message_id"], "push:send")
    report = report_after(bot, confirm["message_id"])
    assert "Audience: admins only (test)" in report["text"] and "Delivered: 1" in report["text"]
    assert [c["text"] for c in copies_in(bot, ADMIN_ID)] == ["Test, please ignore"]
    assert all(copies_in(bot, chat) == [] for chat in english + german + groups)
