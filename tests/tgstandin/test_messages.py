"""Sending, copying, editing and deleting, with Telegram's answers, through a real ptb Bot."""

from __future__ import annotations

import pytest
import telegram.error
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    ReplyParameters,
)

from tests.tgstandin.support import make_bot, raw, run
from tgstandin import StandIn

KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Undo", callback_data="undo:7")]])


def test_send_message_with_html_gives_entities_and_keyboard(standin: StandIn) -> None:
    user = standin.add_user(first_name="Ann", username="ann")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            sent = await bot.send_message(
                user,
                "<b>Hi</b> &amp; <a href='https://x.org'>bye</a>",
                parse_mode="HTML",
                reply_markup=KEYBOARD,
            )
            assert sent.text == "Hi & bye"
            assert sent.from_user is not None and sent.from_user.is_bot
            assert sent.chat.username == "ann"

    run(scenario())
    [message] = standin.inbox(user)
    assert message["entities"] == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "text_link", "url": "https://x.org", "offset": 5, "length": 3},
    ]
    assert message["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "undo:7"
    assert standin.deliveries(user) == 1


def test_bad_html_is_rejected_like_telegram(standin: StandIn) -> None:
    user = standin.add_user()
    response = raw(standin, "sendMessage", chat_id=user, text="1 < 2", parse_mode="HTML")
    assert response.json()["description"] == (
        'Bad Request: can\'t parse entities: Unsupported start tag "" at byte offset 2'
    )


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
    assert copies[0]["copied_from"] == (admin, text["message_id"])
    assert copies[0]["reply_markup"] == KEYBOARD.to_dict()
    assert copies[1]["photo"] == photo["photo"]
    assert copies[1]["caption"] == "New"
    assert copies[1]["caption_entities"] == [{"type": "bold", "offset": 0, "length": 3}]
    assert "forward_origin" not in copies[0]
    assert standin.deliveries(reader) == 2


def test_forward_message_keeps_the_origin(standin: StandIn) -> None:
    admin, reader = standin.add_user(first_name="Ada"), standin.add_user()
    original = standin.send_text(admin, "hello")
    result = raw(
        standin,
        "forwardMessage",
        chat_id=reader,
        from_chat_id=admin,
        message_id=original["message_id"],
    ).json()["result"]
    assert result["text"] == "hello"
    assert result["forward_origin"]["sender_user"]["first_name"] == "Ada"


def test_send_photo_by_file_id_and_reply(standin: StandIn) -> None:
    user = standin.add_user()
    incoming = standin.send_photo(user, "mine")
    file_id = incoming["photo"][-1]["file_id"]

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            sent = await bot.send_photo(
                user,
                file_id,
                caption="<i>yours</i>",
                parse_mode="HTML",
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


def test_edit_text_and_markup_with_not_modified_and_not_found(standin: StandIn) -> None:
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
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message is not modified"):
                await bot.edit_message_reply_markup(chat_id=user, message_id=sent.message_id)
            await bot.edit_message_reply_markup(user, sent.message_id, reply_markup=KEYBOARD)
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)message to edit not found"):
                await bot.edit_message_text("x", chat_id=user, message_id=999)

    run(scenario())
    message = standin.wait_for_message(user, lambda m: m["text"] == "Sending… 50%")
    assert message["reply_markup"] == KEYBOARD.to_dict()
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
    removed = standin.add_user()
    standin.remove_chat(removed)
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
    assert answer(removed) == (400, "Bad Request: chat not found")
    assert answer(123) == (400, "Bad Request: chat not found")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            with pytest.raises(telegram.error.Forbidden, match=r"(?i)blocked by the user"):
                await bot.send_message(blocked, "x")
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)chat not found"):
                await bot.copy_message(removed, blocked, 1)

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


def test_commands_per_scope_chat_action_and_get_chat(standin: StandIn) -> None:
    admin = standin.add_user(username="ada")

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            await bot.set_my_commands([BotCommand("start", "Subscribe")])
            await bot.set_my_commands(
                [BotCommand("push", "Broadcast")], scope=BotCommandScopeChat(admin)
            )
            assert [c.command for c in await bot.get_my_commands()] == ["start"]
            scoped = await bot.get_my_commands(scope=BotCommandScopeChat(admin))
            assert [c.command for c in scoped] == ["push"]
            await bot.delete_my_commands(scope=BotCommandScopeChat(admin))
            assert await bot.get_my_commands(scope=BotCommandScopeChat(admin)) == ()
            assert await bot.send_chat_action(admin, "typing")
            chat = await bot.get_chat(admin)
            assert chat.username == "ada"
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)bot_command_invalid"):
                await bot.set_my_commands([BotCommand("Bad Name", "x")])

    run(scenario())
    assert standin.commands() == [{"command": "start", "description": "Subscribe"}]
    assert standin.commands({"type": "chat", "chat_id": admin}) == []
