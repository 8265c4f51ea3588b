"""/edit end to end: reply to a broadcast's report, send the corrected text, see it, Apply."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pushbot.db import queries
from tests.fixtures.bot import ADMIN_ID, BotHarness

BOLD = [{"type": "bold", "offset": 0, "length": 5}]


def _successful(bot: BotHarness, method: str) -> Counter[int]:
    """Successful calls per chat, the admin's own chat (status messages) left out."""
    return Counter(
        int(c.params["chat_id"])
        for c in bot.tg.calls(method)
        if c.status == 200 and int(c.params["chat_id"]) != ADMIN_ID
    )


def _copy(bot: BotHarness, chat_id: int) -> dict[str, Any] | None:
    return next((m for m in bot.tg.inbox(chat_id) if m.get("copied_from")), None)


def _ask_by_reply(bot: BotHarness, replied_to: int) -> dict[str, Any]:
    mark = bot.last_message_id()
    bot.say("/edit", reply_to_message_id=replied_to)
    return bot.next_reply(mark)


def _correct(
    bot: BotHarness, text: str, entities: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send the corrected text; the bot's preview and its Apply / Cancel question."""
    mark = bot.last_message_id()
    bot.tg.send_text(ADMIN_ID, text, entities=entities)
    confirm = bot.next_reply(mark, lambda m: "Apply the correction?" in m.get("text", ""))
    preview = bot.tg.message(ADMIN_ID, confirm["reply_to_message"]["message_id"])
    assert preview is not None
    return preview, confirm


def _apply(bot: BotHarness, confirm: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "edit:apply")
    report = bot.next_reply(
        confirm["message_id"],
        lambda m: "Broadcast edited" in m.get("text", ""),
        timeout=timeout,
    )
    # The report's id is stored right after Telegram returns it (see BotHarness.push).
    bot.tg.wait_for(lambda: bot.push_of(report["message_id"]) is not None)
    return report


def test_edit_by_reply_corrects_every_copy_once_and_undo_still_removes_them(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    users = bot.tg.add_users(20)
    bot.subscribe(users)
    report = bot.push("Tpyo in the news")
    deleted_by_user = users[0]
    gone = _copy(bot, deleted_by_user)
    assert gone is not None
    bot.tg.user_deletes_message(deleted_by_user, gone["message_id"])

    ask = _ask_by_reply(bot, report["message_id"])
    assert "“Tpyo in the news”" in ask["text"] and "Send me the corrected text" in ask["text"]
    assert "20 copies out" in ask["text"]
    preview, confirm = _correct(bot, "Typos in the news, fixed", BOLD)
    assert preview["text"] == "Typos in the news, fixed" and preview["entities"] == BOLD
    assert "copied_from" not in preview, "the preview is the bot's, not a copy of the source"
    assert _successful(bot, "editMessageText") == Counter(), "nothing is edited before Apply"
    edited = _apply(bot, confirm)

    assert "Now: “Typos in the news, fixed”" in edited["text"]
    assert "Edited 19 · Unchanged 1 (deleted by the user: 1) · Could not edit 0" in edited["text"]
    assert "Reply /undo" in edited["text"]
    assert _successful(bot, "editMessageText") == Counter(users[1:])
    for user in users[1:]:
        copy = _copy(bot, user)
        assert copy is not None and copy["text"] == "Typos in the news, fixed"
        assert copy["entities"] == BOLD
    status = bot.tg.message(ADMIN_ID, confirm["message_id"])
    assert status is not None and status["text"] == "Edit done: see the report below."
    push = bot.push_of(edited["message_id"])
    assert push is not None and push.status == "done" and push.edited_at is not None

    mark = bot.last_message_id()
    bot.say("/undo", reply_to_message_id=edited["message_id"])
    ask_undo = bot.next_reply(mark, lambda m: "Delete it" in m.get("text", ""))
    assert "“Typos in the news, fixed”" in ask_undo["text"]
    assert re.search(r"\nEdited \d{4}-\d\d-\d\d \d\d:\d\d UTC\n", ask_undo["text"])
    data = ask_undo["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, ask_undo["message_id"], data)
    done = bot.next_reply(ask_undo["message_id"], lambda m: "Removed:" in m.get("text", ""))
    assert "Removed: 20" in done["text"]
    assert all(_copy(bot, user) is None for user in users)


def test_the_live_status_of_an_edit_at_telegrams_limits(bot: BotHarness) -> None:
    users = bot.seed_subscribers(120)
    report = bot.push("Slow and wrong", timeout=90)
    _ask_by_reply(bot, report["message_id"])
    _, confirm = _correct(bot, "Slow and right")

    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "edit:apply")
    live = bot.tg.wait_for_message(
        ADMIN_ID,
        lambda m: (
            m["message_id"] == confirm["message_id"] and "✏️ Editing broadcast" in m.get("text", "")
        ),
        timeout=30,
    )
    edited = bot.next_reply(
        confirm["message_id"], lambda m: "Broadcast edited" in m.get("text", ""), timeout=90
    )

    assert "reply_markup" not in live, "an edit has no Pause / Cancel"
    assert "Edited 120 · Unchanged 0 · Could not edit 0" in edited["text"]
    assert _successful(bot, "editMessageText") == Counter(users)
    assert bot.tg.count("editMessageText", 429) == 0


def test_edit_by_uuid_and_from_the_list_of_recent_broadcasts(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(3)
    bot.subscribe(users)
    bot.push("First")
    bot.push("Second")
    (latest,) = bot.query(lambda s: queries.recent_pushes(s, 1))

    mark = bot.last_message_id()
    bot.say(f"/edit {latest.push.uuid}")
    assert "“Second”" in bot.next_reply(mark)["text"]
    _, confirm = _correct(bot, "Second, corrected")
    _apply(bot, confirm)

    mark = bot.last_message_id()
    bot.say("/edit")
    menu = bot.next_reply(mark, lambda m: "Which broadcast" in m.get("text", ""))
    rows = menu["reply_markup"]["inline_keyboard"]
    assert "Second, corrected" in rows[0][0]["text"] and "First" in rows[1][0]["text"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, menu["message_id"], rows[1][0]["callback_data"])
    bot.tg.wait_for_message(
        ADMIN_ID,
        lambda m: m["message_id"] == menu["message_id"] and "corrected text" in m.get("text", ""),
    )
    _, confirm = _correct(bot, "First, corrected")
    _apply(bot, confirm)

    for user in users:
        texts = [m["text"] for m in bot.tg.inbox(user) if m.get("copied_from")]
        assert texts == ["First, corrected", "Second, corrected"]


def test_a_media_broadcast_has_its_caption_edited_and_previewed_with_its_photo(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    users = bot.tg.add_users(4)
    bot.subscribe(users)
    mark = bot.last_message_id()
    bot.say("/push")
    bot.next_reply(mark)
    bot.tg.send_photo(ADMIN_ID, caption="Look at tihs")
    confirm_push = bot.next_reply(mark, lambda m: "Send it?" in m.get("text", ""))
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm_push["message_id"], "push:send")
    report = bot.next_reply(
        confirm_push["message_id"], lambda m: "Broadcast finished" in m.get("text", "")
    )
    bot.tg.wait_for(lambda: bot.push_of(report["message_id"]) is not None)

    ask = _ask_by_reply(bot, report["message_id"])
    assert "corrected caption" in ask["text"]
    preview, confirm = _correct(bot, "Look at this", BOLD)
    assert "photo" in preview and preview["caption"] == "Look at this"
    assert preview["caption_entities"] == BOLD
    assert "Above is exactly what the 4 copies out will read" in confirm["text"]
    edited = _apply(bot, confirm)

    assert "Edited 4 · Unchanged 0 · Could not edit 0" in edited["text"]
    assert _successful(bot, "editMessageCaption") == Counter(users)
    assert _successful(bot, "editMessageText") == Counter()
    for user in users:
        copy = _copy(bot, user)
        assert copy is not None and "photo" in copy
        assert copy["caption"] == "Look at this" and copy["caption_entities"] == BOLD


def test_a_non_admin_gets_the_unknown_command_answer(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(2)
    bot.subscribe(users)
    report = bot.push("Admins only")
    stranger = users[0]

    push = bot.push_of(report["message_id"])
    assert push is not None

    for command in ("/edit", f"/edit {push.uuid}"):
        mark = bot.last_message_id(stranger)
        bot.say(command, stranger)
        answer = bot.next_reply(mark, chat_id=stranger)
        assert answer["text"] == "Sorry, I don't know that command. /help"
    their_copy = _copy(bot, stranger)
    assert their_copy is not None
    mark = bot.last_message_id(stranger)
    bot.say("/edit", stranger, reply_to_message_id=their_copy["message_id"])
    assert "don't know that command" in bot.next_reply(mark, chat_id=stranger)["text"]
    bot.say("Fixed by a stranger", stranger)
    assert _successful(bot, "editMessageText") == Counter()
    assert all((_copy(bot, u) or {}).get("text") == "Admins only" for u in users)


def test_cancel_leaves_and_bad_targets_change_nothing(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(2)
    bot.subscribe(users)
    report = bot.push("Keep me")

    _ask_by_reply(bot, report["message_id"])
    mark = bot.last_message_id()
    bot.say("/cancel")
    assert bot.next_reply(mark)["text"] == "Cancelled: nothing was changed."
    bot.say("Too late")  # no conversation any more: just a message
    own = bot.say("just a note")
    assert "not a broadcast" in _ask_by_reply(bot, own["message_id"])["text"]
    mark = bot.last_message_id()
    bot.say("/edit 1234")
    assert "No broadcast" in bot.next_reply(mark)["text"]

    _ask_by_reply(bot, report["message_id"])
    _, confirm = _correct(bot, "Changed my mind")
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "edit:cancel")
    bot.tg.wait_for_message(
        ADMIN_ID,
        lambda m: m["message_id"] == confirm["message_id"] and "Cancelled" in m.get("text", ""),
    )

    assert _successful(bot, "editMessageText") == Counter()
    assert all((_copy(bot, u) or {}).get("text") == "Keep me" for u in users)


def test_a_second_correction_replaces_the_first_before_apply(fast_bot: BotHarness) -> None:
    bot = fast_bot
    users = bot.tg.add_users(3)
    bot.subscribe(users)
    report = bot.push("Draft 0")
    _ask_by_reply(bot, report["message_id"])
    _, first = _correct(bot, "Draft 1")
    _, second = _correct(bot, "Draft 2")

    bot.tg.press_button(ADMIN_ID, ADMIN_ID, first["message_id"], "edit:apply")
    edited = _apply(bot, second)

    assert "Now: “Draft 2”" in edited["text"]
    assert all((_copy(bot, u) or {}).get("text") == "Draft 2" for u in users)
    assert _successful(bot, "editMessageText") == Counter(users)


def test_a_retracted_broadcast_cannot_be_edited(fast_bot: BotHarness) -> None:
    bot = fast_bot
    bot.subscribe(bot.tg.add_users(2))
    report = bot.push("Gone soon")
    mark = bot.last_message_id()
    bot.say("/undo", reply_to_message_id=report["message_id"])
    ask = bot.next_reply(mark, lambda m: "Delete it" in m.get("text", ""))
    data = ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, ask["message_id"], data)
    bot.next_reply(ask["message_id"], lambda m: "Removed:" in m.get("text", ""))

    refused = _ask_by_reply(bot, report["message_id"])

    assert "It is retracted" in refused["text"] and "reply_markup" not in refused
    assert "Send me" not in refused["text"]


def test_help_and_the_admin_commands_list_edit_for_admins_only(bot: BotHarness) -> None:
    user = bot.tg.add_user()
    bot.say("/help", user)
    assert "/edit" not in bot.tg.wait_for_message(user)["text"]
    bot.say("/help", ADMIN_ID)
    help_text = bot.tg.wait_for_message(ADMIN_ID)["text"]
    assert "/edit — Correct a broadcast's text in every chat" in help_text

    registered = {
        "everyone" if call.params.get("scope") is None else "admin": [
            command["command"] for command in call.params["commands"]
        ]
        for call in bot.tg.calls("setMyCommands")
        if call.status == 200 and call.params.get("scope", {}).get("chat_id") in (None, ADMIN_ID)
    }
    assert "edit" in registered["admin"] and "edit" not in registered["everyone"]
