"""Every request is checked against the Bot API spec subset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import telegram.error
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from tests.tgstandin.support import make_bot, raw, raw_json, run
from tgstandin import StandIn
from tgstandin.spec import (
    IMPLEMENTED_METHODS,
    LICENSE_PATH,
    SUBSET_PATH,
    load_spec,
    write_subset,
)

OFFICIAL_SPEC = Path("/work/shared/telegram-bot-api/api.min.json")


@pytest.mark.skipif(not OFFICIAL_SPEC.exists(), reason="official spec not available")
def test_subset_is_reproducible_from_the_official_spec(tmp_path: Path) -> None:
    subset, licence = write_subset(OFFICIAL_SPEC, tmp_path)
    assert subset.read_text() == SUBSET_PATH.read_text()
    assert licence.read_text() == LICENSE_PATH.read_text()
    assert "MIT License" in licence.read_text()


def test_subset_covers_implemented_methods_and_nested_types() -> None:
    spec = load_spec()
    assert set(spec.methods) == set(IMPLEMENTED_METHODS)
    for name in (
        "InlineKeyboardMarkup",
        "InlineKeyboardButton",
        "MessageEntity",
        "BotCommand",
        "BotCommandScopeChat",
        "ReplyParameters",
        "LinkPreviewOptions",
        "CopyTextButton",
    ):
        assert name in spec.types


def test_misspelled_method_is_404_like_telegram(standin: StandIn) -> None:
    response = raw(standin, "sendMesage", chat_id=1, text="x")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


def test_misspelled_parameter_is_rejected(standin: StandIn) -> None:
    user = standin.add_user()
    response = raw(standin, "sendMessage", chat_id=user, txt="hello")
    assert response.status_code == 400
    assert response.json()["description"] == (
        "Bad Request: unknown parameter 'txt' for method 'sendMessage'"
    )
    assert standin.inbox(user) == []


def test_missing_required_parameters(standin: StandIn) -> None:
    user = standin.add_user()
    assert raw(standin, "sendMessage", chat_id=user).json()["description"] == (
        "Bad Request: message text is empty"
    )
    assert raw(standin, "sendMessage", text="x").json()["description"] == (
        "Bad Request: chat_id is empty"
    )
    response = raw(standin, "copyMessage", chat_id=user, from_chat_id=user)
    assert response.json()["description"] == (
        "Bad Request: parameter 'message_id' is required for method 'copyMessage'"
    )


@pytest.mark.parametrize(
    ("method", "params", "problem"),
    [
        (
            "deleteMessage",
            {"chat_id": 1, "message_id": "abc"},
            "'message_id' of method 'deleteMessage' must be Integer",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "disable_notification": "maybe"},
            "must be Boolean",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "reply_markup": "{not json"},
            "must be valid JSON",
        ),
        (
            "sendMessage",
            {
                "chat_id": 1,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_dat": "b"}]]},
            },
            "unknown field 'callback_dat' in InlineKeyboardButton",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "entities": [{"type": "bold", "offset": 0}]},
            "field 'length' is required in MessageEntity",
        ),
        (
            "setMyCommands",
            {"commands": [{"command": "a", "description": "b"}], "scope": {"type": "chat"}},
            "field 'chat_id' is required",
        ),
        (
            "setMyCommands",
            {"commands": [], "scope": {"type": "everyone"}},
            "unsupported BotCommandScope type 'everyone'",
        ),
    ],
)
def test_wrong_types_are_rejected(
    standin: StandIn, method: str, params: dict[str, Any], problem: str
) -> None:
    response = raw(standin, method, **params)
    assert response.status_code == 400
    assert problem in response.json()["description"]


def test_spec_method_we_do_not_implement(standin: StandIn) -> None:
    response = raw(standin, "sendDice", chat_id=1)
    assert response.status_code == 400
    assert response.json()["description"] == "Bad Request: method is not supported by the stand-in"


def test_wrong_token_is_unauthorized(standin: StandIn) -> None:
    import httpx

    url = f"{standin.base_url}999:WRONG/getMe"
    response = httpx.post(url, trust_env=False)
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


def test_json_bodies_query_strings_and_any_method_case(standin: StandIn) -> None:
    import httpx

    user = standin.add_user()
    assert raw_json(standin, "sendMessage", chat_id=user, text="json body").json()["ok"]
    url = f"{standin.base_url}{standin.token}/SENDMESSAGE"
    response = httpx.get(url, params={"chat_id": user, "text": "query"}, trust_env=False)
    assert response.json()["result"]["text"] == "query"
    assert [m["text"] for m in standin.inbox(user)] == ["json body", "query"]


def test_ptb_encodings_are_accepted(standin: StandIn) -> None:
    """ptb 22 sends form fields, non-strings JSON-encoded; files as multipart."""
    user = standin.add_user()
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Open", callback_data="open:1")]])

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            await bot.send_message(
                user,
                "hi",
                reply_markup=keyboard,
                disable_notification=True,
                allow_paid_broadcast=False,
            )
            await bot.send_photo(user, photo=b"\x89PNG fake bytes", caption="upload")
            with pytest.raises(telegram.error.BadRequest, match=r"(?i)unknown parameter 'colour'"):
                await bot.send_message(user, "x", api_kwargs={"colour": "red"})

    run(scenario())
    call = standin.calls("sendMessage")[0]
    assert call.params["disable_notification"] is True
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "open:1"
    assert standin.inbox(user)[1]["caption"] == "upload"


def _check_against_spec(obj: Any, type_name: str, types: dict[str, Any], where: str) -> None:
    spec = types[type_name]
    fields = {f["name"]: f for f in spec["fields"]}
    for key, value in obj.items():
        assert key in fields, f"{where}: {key!r} is not a field of {type_name}"
        nested = [t for t in fields[key]["types"] if t in types]
        if nested and isinstance(value, dict):
            _check_against_spec(value, nested[0], types, f"{where}.{key}")
    for name, field in fields.items():
        assert not field["required"] or name in obj, f"{where}: {type_name}.{name} missing"


def test_emitted_objects_use_only_spec_fields(standin: StandIn) -> None:
    types = json.loads(SUBSET_PATH.read_text())["types"]
    user = standin.add_user(username="ann")
    group = standin.add_group("Team", bot_status="left")
    messages = [standin.send_text(user, "/start"), standin.send_photo(user, "look")]
    updates = [standin.add_bot_to_group(group, user)]
    sent = raw(
        standin,
        "sendMessage",
        chat_id=user,
        text="pick",
        reply_markup={"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]},
    )
    message = sent.json()["result"]
    updates.append(standin.press_button(user, user, message["message_id"], "a"))
    messages.append(standin.send_text(user, "re", reply_to_message_id=message["message_id"]))
    standin.migrate_to_supergroup(group, by_user_id=user)
    standin.set_user_state(user, "blocked")
    updates += raw(standin, "getUpdates").json()["result"]
    assert len(updates) == 2 + 9  # all nine again from getUpdates, incl. 3 + 2 messages
    for update in updates:
        _check_against_spec(update, "Update", types, "update")
    for sent_message in [*messages, message]:
        _check_against_spec(sent_message, "Message", types, "message")
    _check_against_spec(raw(standin, "getMe").json()["result"], "User", types, "getMe")
