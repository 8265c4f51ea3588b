"""Sending, copying, editing and deleting, with Telegram's answers, through a real ptb Bot."""

from __future__ import annotations

import pytest
import telegram.error
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    MessageEntity,
    ReplyParameters,
)

from tests.tgstandin.support import make_bot, raw, run
from tgstandin import StandIn
from tgstandin.spec import Upload

KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Undo", callback_data="undo:7")]])


def test_send_message_with_entities_and_keyboard(standin: StandIn) -> None:
    user = standin.add_user(first_name="Ann", username="ann")
    bold, link = MessageEntity("bold", 0, 2), MessageEntity("text_link", 5, 3, url="https://x.org")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            sent = await bot.send_message(
                user, "Hi & bye", entities=[bold, link], reply_markup=KEYBOARD
            )
            assert sent.text == "Hi & bye"
            assert sent.from_user is not None and sent.from_user.is_bot
            assert sent.chat.username == "ann"

    run(scenario())
    [message] = standin.inbox(user)
    assert message["entities"] == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "text_link", "offset": 5, "length": 3, "url": "https://x.org"},
    ]
    assert message["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "undo:7"
    assert standin.deliveries(user) == 1


def test_parse_mode_is_refused_rather_than_stored_as_markup(standin: StandIn) -> None:
    user = standin.add_user()
    response = raw(standin, "sendMessage", chat_id=user, text="<b>x</b>", parse_mode="HTML")
    assert response.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: parse_mode is not supported by the stand-in: send entities",
    }
    assert standin.inbox(user) == []


def test_copy_message_copies_text_entities_and_photos(standin: StandIn) -> None:
    admin, reader = standin.add_user(), standin.add_user()
    bold = [{"type": "bold", "offset": 0, "length": 4}]
    text = standin.send_text(admin, "News today", entities=bold)
    photo = standin.send_photo(
        admin, "Look", caption_entities=[{"type": "italic", "offset": 0, "length": 4}]
    )

    async def scenario() -> tuple[int, int]:
        async with make_bot(standin) as bot:
            first = await bot.copy_message(reader, admin, text["message_id"], reply_markup=KEYBOARD)
            second = await bot.copy_message(
                reader,
                admin,
                photo["message_id"],
                caption="New",
                caption_entities=[MessageEntity("bold", 0, 3)],
            )
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message to copy not found"):
                await bot.copy_message(reader, admin, 999)
            return first.message_id, second.message_id

    first_id, second_id = run(scenario())
    copies = standin.inbox(reader)
    assert [m["message_id"] for m in copies] == [first_id, second_id]
    assert copies[0]["text"] == "News today" and copies[0]["entities"] == bold
    assert copies[0]["copied_from"] == [admin, text["message_id"]]
    assert copies[0]["reply_markup"] == KEYBOARD.to_dict()
    assert copies[1]["photo"] == photo["photo"]
    assert copies[1]["caption"] == "New"
    assert copies[1]["caption_entities"] == [{"type": "bold", "offset": 0, "length": 3}]
    assert "forward_origin" not in copies[0]
    assert standin.deliveries(reader) == 2


def test_copy_message_records_how_each_copy_was_sent(standin: StandIn) -> None:
    standin.set_limits(enabled=False)
    admin, quiet, loud = standin.add_user(), standin.add_user(), standin.add_user()
    post = standin.send_text(admin, "News")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            await bot.copy_message(
                quiet,
                admin,
                post["message_id"],
                disable_notification=True,
                protect_content=True,
                allow_paid_broadcast=True,
            )
            await bot.copy_message(loud, admin, post["message_id"])

    run(scenario())
    [quiet_copy], [loud_copy] = standin.inbox(quiet), standin.inbox(loud)
    assert quiet_copy["send_options"] == {
        "disable_notification": True,
        "protect_content": True,
        "allow_paid_broadcast": True,
    }
    assert quiet_copy["has_protected_content"] is True
    assert loud_copy["send_options"] == dict.fromkeys(
        ("disable_notification", "protect_content", "allow_paid_broadcast"), False
    )
    assert "has_protected_content" not in loud_copy


def test_send_photo_by_file_id_and_reply(standin: StandIn) -> None:
    user = standin.add_user()
    incoming = standin.send_photo(user, "mine")
    file_id = incoming["photo"][-1]["file_id"]

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            sent = await bot.send_photo(
                user,
                file_id,
                caption="yours",
                caption_entities=[MessageEntity("italic", 0, 5)],
                reply_parameters=ReplyParameters(incoming["message_id"]),
            )
            assert sent.photo[-1].file_id == file_id
            assert sent.reply_to_message is not None
            assert sent.reply_to_message.message_id == incoming["message_id"]
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message to be replied not"):
                await bot.send_message(user, "x", reply_parameters=ReplyParameters(4242))

    run(scenario())
    assert standin.inbox(user)[0]["caption_entities"] == [
        {"type": "italic", "offset": 0, "length": 5}
    ]


def test_send_photo_uploads_a_png_as_multipart(standin: StandIn) -> None:
    user = standin.add_user()
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            chart = InputFile(png, filename="stats.png")
            sent = await bot.send_photo(user, chart, caption="This week")
            assert sent.photo and sent.caption == "This week"
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)file must be non-empty"):
                await bot.send_photo(user, InputFile(b"", filename="empty.png"))

    run(scenario())
    [call, _empty] = standin.calls("sendPhoto")
    assert call.status == 200
    assert call.params["photo"] == Upload("stats.png", "image/png", len(png))
    [photo] = standin.inbox(user)
    assert photo["caption"] == "This week" and photo["photo"][-1]["file_id"]
    assert standin.deliveries(user) == 1


def test_edit_text_with_not_modified_and_not_found(standin: StandIn) -> None:
    standin.set_limits(enabled=False)  # eight calls in one chat exceed Telegram's 1/s there
    user = standin.add_user()

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            sent = await bot.send_message(user, "Sending… 0%", reply_markup=KEYBOARD)
            await bot.edit_message_text(
                "Sending… 50%", chat_id=user, message_id=sent.message_id, reply_markup=KEYBOARD
            )
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message is not modified"):
                await bot.edit_message_text(
                    "Sending… 50%", chat_id=user, message_id=sent.message_id, reply_markup=KEYBOARD
                )
            # Without reply_markup Telegram removes the keyboard: that is a modification.
            await bot.edit_message_text("Sending… 50%", chat_id=user, message_id=sent.message_id)
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message to edit not found"):
                await bot.edit_message_text("x", chat_id=user, message_id=999)
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)no caption in the message"):
                await bot.edit_message_caption(user, sent.message_id, caption="x")

    run(scenario())
    message = standin.wait_for_message(user, lambda m: m["text"] == "Sending… 50%")
    assert "reply_markup" not in message
    assert "edit_date" in message
    exact = (
        "Bad Request: message is not modified: specified new message content and reply "
        "markup are exactly the same as a current content and reply markup of the message"
    )
    assert exact in [c.description for c in standin.calls("editMessageText")]


def test_delete_not_found_and_too_old(standin: StandIn) -> None:
    standin.set_limits(enabled=False)
    user = standin.add_user()
    first = raw(standin, "sendMessage", chat_id=user, text="one").json()["result"]
    second = raw(standin, "sendMessage", chat_id=user, text="two").json()["result"]
    assert raw(standin, "deleteMessage", chat_id=user, message_id=first["message_id"]).json() == {
        "ok": True,
        "result": True,
    }
    gone = raw(standin, "deleteMessage", chat_id=user, message_id=first["message_id"]).json()
    assert gone["description"] == "Bad Request: message to delete not found"
    standin.age_messages(49)
    old = raw(standin, "deleteMessage", chat_id=user, message_id=second["message_id"]).json()
    assert old == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: message can't be deleted for everyone",
    }
    assert [m["text"] for m in standin.inbox(user)] == ["two"]


def test_a_bots_message_can_be_edited_at_any_age_unless_the_user_deleted_it(
    standin: StandIn,
) -> None:
    """The Bot API's 48-hour edit window is for business messages only (/edit relies on it)."""
    standin.set_limits(enabled=False)
    user = standin.add_user()
    old = raw(standin, "sendMessage", chat_id=user, text="old").json()["result"]
    gone = raw(standin, "sendMessage", chat_id=user, text="gone").json()["result"]
    standin.age_messages(72)
    standin.user_deletes_message(user, gone["message_id"])
    bold = [{"type": "bold", "offset": 0, "length": 3}]

    edited = raw(
        standin,
        "editMessageText",
        chat_id=user,
        message_id=old["message_id"],
        text="new text",
        entities=bold,
    ).json()
    missing = raw(
        standin, "editMessageText", chat_id=user, message_id=gone["message_id"], text="x"
    ).json()

    assert edited["ok"] and edited["result"]["text"] == "new text"
    assert edited["result"]["entities"] == bold
    assert missing["description"] == "Bad Request: message to edit not found"
    assert [(m["text"], m.get("entities")) for m in standin.inbox(user)] == [("new text", bold)]


def test_user_deletes_a_copy_themselves(standin: StandIn) -> None:
    user = standin.add_user()
    sent = raw(standin, "sendMessage", chat_id=user, text="hi").json()["result"]
    standin.user_deletes_message(user, sent["message_id"])
    assert standin.inbox(user) == []
    assert standin.message(user, sent["message_id"]) is None
    answer = raw(standin, "deleteMessage", chat_id=user, message_id=sent["message_id"]).json()
    assert answer["description"] == "Bad Request: message to delete not found"


def test_blocked_deactivated_kicked_and_missing_chats(standin: StandIn) -> None:
    standin.set_limits(enabled=False)
    blocked = standin.add_user(state="blocked")
    gone = standin.add_user(state="deactivated")
    never_seen = 4242
    group = standin.add_group("Team")
    supergroup = standin.add_group("Big team", supergroup=True)
    standin.kick_bot_from_group(group, blocked)
    standin.kick_bot_from_group(supergroup, blocked)

    def answer(chat_id: int) -> tuple[int, str]:
        body = raw(standin, "sendMessage", chat_id=chat_id, text="hi").json()
        return body["error_code"], body["description"]

    assert answer(blocked) == (403, "Forbidden: bot was blocked by the user")
    assert answer(gone) == (403, "Forbidden: user is deactivated")
    assert answer(group) == (403, "Forbidden: bot was kicked from the group chat")
    assert answer(supergroup) == (403, "Forbidden: bot was kicked from the supergroup chat")
    assert answer(never_seen) == (400, "Bad Request: chat not found")
    assert answer(123) == (400, "Bad Request: chat not found")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            with pytest.raises(telegram.error.Forbidden, match=r"(?i)blocked by the user"):
                await bot.send_message(blocked, "x")
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)chat not found"):
                await bot.copy_message(never_seen, blocked, 1)

    run(scenario())
    assert standin.count("sendMessage", 403) == 5
    assert standin.count("sendMessage", 400) == 2


def test_inline_button_press_and_answer(standin: StandIn) -> None:
    user = standin.add_user()
    sent = raw(
        standin, "sendMessage", chat_id=user, text="Undo?", reply_markup=KEYBOARD.to_dict()
    ).json()["result"]
    update = standin.press_button(user, user, sent["message_id"], "undo:7")
    query = update["callback_query"]
    assert query["data"] == "undo:7" and query["from"]["id"] == user
    assert query["message"]["message_id"] == sent["message_id"]
    assert query["chat_instance"]
    with pytest.raises(ValueError, match="no button"):
        standin.press_button(user, user, sent["message_id"], "other")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            updates = await bot.get_updates()
            assert updates[-1].callback_query is not None
            assert await updates[-1].callback_query.answer("Done")
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)query is too old"):
                await bot.answer_callback_query(query["id"])

    run(scenario())


def test_edit_caption_of_a_photo(standin: StandIn) -> None:
    standin.set_limits(enabled=False)
    user = standin.add_user()
    photo = standin.send_photo(user, "mine")["photo"][-1]["file_id"]

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            sent = await bot.send_photo(user, photo, caption="Draft", reply_markup=KEYBOARD)
            bold = [MessageEntity("bold", 0, 5)]
            await bot.edit_message_caption(
                user, sent.message_id, caption="Final", caption_entities=bold
            )
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message is not modified"):
                await bot.edit_message_caption(
                    user, sent.message_id, caption="Final", caption_entities=bold
                )
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)no text in the message"):
                await bot.edit_message_text("x", chat_id=user, message_id=sent.message_id)

    run(scenario())
    [edited] = standin.inbox(user)
    assert edited["caption"] == "Final" and edited["photo"][-1]["file_id"] == photo
    assert edited["caption_entities"] == [{"type": "bold", "offset": 0, "length": 5}]
    assert "reply_markup" not in edited and "edit_date" in edited
    assert standin.count("editMessageCaption", 200) == 1


def test_set_my_commands_checks_names_and_scoped_chats(standin: StandIn) -> None:
    admin = standin.add_user(username="ada")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            assert await bot.set_my_commands([BotCommand("start", "Subscribe")])
            assert await bot.set_my_commands(
                [BotCommand("push", "Broadcast")], scope=BotCommandScopeChat(admin)
            )
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)chat not found"):
                await bot.set_my_commands([BotCommand("push", "x")], scope=BotCommandScopeChat(7))
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)bot_command_invalid"):
                await bot.set_my_commands([BotCommand("Bad Name", "x")])

    run(scenario())
    assert standin.count("setMyCommands", 200) == 2


def test_sends_to_an_upgraded_group_get_telegrams_migration_answer(standin: StandIn) -> None:
    standin.set_limits(enabled=False)
    member = standin.add_user()
    group = standin.add_group("Team")
    post = standin.send_text(member, "/news", chat_id=group)
    supergroup = standin.migrate_to_supergroup(group, by_user_id=member)
    assert supergroup != group

    answer = raw(standin, "sendMessage", chat_id=group, text="hi").json()
    assert answer == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": supergroup},
    }

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            with pytest.raises(telegram.error.ChatMigrated) as moved:
                await bot.copy_message(group, member, 1)
            assert moved.value.new_chat_id == supergroup
            with pytest.raises(telegram.error.ChatMigrated):
                await bot.delete_message(group, post["message_id"])
            await bot.send_message(supergroup, "Welcome to the supergroup")

    run(scenario())
    assert [m["text"] for m in standin.inbox(supergroup)] == ["Welcome to the supergroup"]
    assert standin.inbox(supergroup)[0]["chat"]["type"] == "supergroup"
    assert standin.count("sendMessage", 400) == 1 and standin.count("copyMessage", 400) == 1
    with pytest.raises(ValueError, match="was upgraded"):
        standin.send_text(member, "still here?", chat_id=group)
    with pytest.raises(ValueError, match="already upgraded"):
        standin.migrate_to_supergroup(group)
    with pytest.raises(ValueError, match="only groups are upgraded"):
        standin.migrate_to_supergroup(supergroup)


def test_a_kicked_bot_stays_out_of_the_upgraded_group(standin: StandIn) -> None:
    group = standin.add_group("Team", bot_status="kicked")
    supergroup = standin.migrate_to_supergroup(group)
    answer = raw(standin, "sendMessage", chat_id=supergroup, text="hi").json()
    assert answer["description"] == "Forbidden: bot was kicked from the supergroup chat"
    assert raw(standin, "getUpdates").json()["result"] == []  # it sees neither service message
