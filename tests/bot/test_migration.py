"""A group upgraded to a supergroup keeps its place in the audience under its new id, end to
end: the real bot hears Telegram's service messages, and a broadcast copy that meets the
400 "group chat was upgraded" follows the group there (both backends)."""

from __future__ import annotations

from typing import Any

from pushbot.db import queries
from tests.fixtures.bot import ADMIN_ID, BotHarness


def chat(bot: BotHarness, chat_id: int) -> queries.ChatRow | None:
    return bot.query(lambda s: queries.get_chat(s, chat_id))  # type: ignore[no-any-return]


def group_with_the_bot(bot: BotHarness, member: int, title: str = "Book club") -> int:
    group = bot.tg.add_group(title, bot_status="left")
    bot.tg.add_bot_to_group(group, member)
    bot.tg.wait_for(lambda: chat(bot, group) is not None)
    return group


def copies_to(bot: BotHarness, chat_id: int) -> list[int]:
    return [c.status for c in bot.tg.calls("copyMessage") if c.chat_id == chat_id]


def report_of(bot: BotHarness, confirm: dict[str, Any]) -> dict[str, Any]:
    report = bot.next_reply(
        confirm["message_id"], lambda m: "Broadcast finished" in m.get("text", ""), timeout=60
    )
    # The bot stores the report's id right after Telegram returns it (BotHarness.push).
    bot.tg.wait_for(lambda: bot.push_of(report["message_id"]) is not None)
    return report


def test_the_subscription_moves_when_the_bot_hears_of_the_upgrade(fast_bot: BotHarness) -> None:
    bot = fast_bot
    member = bot.tg.add_user()
    group = group_with_the_bot(bot, member)

    supergroup = bot.tg.migrate_to_supergroup(group, by_user_id=member)

    bot.tg.wait_for(lambda: chat(bot, supergroup) is not None)
    assert chat(bot, group) is None
    moved = chat(bot, supergroup)
    assert moved is not None and moved.in_audience
    assert (moved.type, moved.title) == ("supergroup", "Book club")
    report = report_of(bot, bot.send_push("Meeting moved to Friday"))
    assert "Delivered: 1" in report["text"] and "Failed: 0" in report["text"]
    assert copies_to(bot, supergroup) == [200] and copies_to(bot, group) == []


def test_a_group_that_said_stop_stays_unsubscribed_after_the_upgrade(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    member = bot.tg.add_user()
    group = group_with_the_bot(bot, member)
    bot.say("/stop", member, chat_id=group)
    bot.tg.wait_for_message(group, lambda m: "no more announcements" in m["text"])

    supergroup = bot.tg.migrate_to_supergroup(group)  # by an anonymous admin

    bot.tg.wait_for(lambda: chat(bot, supergroup) is not None)
    moved = chat(bot, supergroup)
    assert moved is not None and not moved.subscribed and moved.purged_at is None
    assert bot.audience() == queries.AudienceCounts(subscribed=0, unsubscribed=1, purged=0)


def test_a_copy_refused_as_upgraded_goes_to_the_supergroup_in_the_same_broadcast(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    users = bot.seed_subscribers(3)
    group = group_with_the_bot(bot, users[0])
    # Telegram fails the group's copy for a while; meanwhile the group is upgraded.
    bot.tg.inject_faults(kind="502", rate=1.0, methods={"copyMessage"}, chat_ids={group})
    confirm = bot.send_push("Big news")
    bot.tg.wait_for(lambda: 502 in copies_to(bot, group), timeout=30)
    supergroup = bot.tg.migrate_to_supergroup(group, by_user_id=users[0])
    bot.tg.wait_for(lambda: chat(bot, supergroup) is not None)  # the bot heard of it
    bot.tg.inject_faults()  # the group's next retry gets Telegram's 400 with the new id

    report = report_of(bot, confirm)

    assert "Delivered: 4" in report["text"] and "Failed: 0" in report["text"]
    assert "Purged from the audience: 0" in report["text"]
    assert copies_to(bot, group)[-1] == 400 and set(copies_to(bot, group)) == {502, 400}
    assert copies_to(bot, supergroup) == [200]
    moved = chat(bot, supergroup)
    assert moved is not None and moved.in_audience and chat(bot, group) is None
    # The ledger holds the copy under the new id, so /undo removes it from the supergroup.
    push = bot.push_of(report["message_id"])
    assert push is not None
    copies = bot.query(lambda s: queries.sent_copies(s, push.uuid, None, 10))
    [copy] = [message_id for chat_id, message_id in copies if chat_id == supergroup]
    assert bot.tg.message(supergroup, copy) is not None
    mark = bot.last_message_id()
    bot.say("/undo", reply_to_message_id=report["message_id"])
    ask = bot.next_reply(mark, lambda m: "Delete it from every chat?" in m.get("text", ""))
    retract = ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, ask["message_id"], retract)
    done = bot.next_reply(ask["message_id"], lambda m: "Removed:" in m.get("text", ""), timeout=60)
    assert "Removed: 4" in done["text"]
    assert bot.tg.message(supergroup, copy) is None
