"""The status message's buttons while another broadcast runs: a clear answer, never an error."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pushbot.bot import errors
from pushbot.db import queries
from tests.fixtures.bot import ADMIN_ID, OTHER_ADMIN_ID, BotHarness

# At the bot's real pace (29.8/s) 150 recipients take about five seconds: long enough for
# push B to still be running when Resume is pressed on push A.
RECIPIENTS = 150


def _button(message: dict[str, Any], label: str) -> str:
    for row in message.get("reply_markup", {}).get("inline_keyboard", []):
        for button in row:
            if label in button["text"]:
                return str(button["callback_data"])
    raise AssertionError(f"no {label} button in {message}")


def _status_of(bot: BotHarness, push_uuid: UUID) -> str | None:
    push = bot.query(lambda s: queries.get_push(s, push_uuid))
    return None if push is None else str(push.status)


def _launch(bot: BotHarness, text: str) -> tuple[int, UUID]:
    """/push <text> → Send; the status message id and the push once its Pause button shows."""
    status_id = bot.send_push(text)["message_id"]
    status = bot.tg.wait_for_message(
        ADMIN_ID,
        lambda m: m["message_id"] == status_id and "Pause" in str(m.get("reply_markup")),
        timeout=30,
    )
    return status_id, UUID(_button(status, "Pause").split(":", 2)[2])


def _answer_to(bot: BotHarness, update: dict[str, Any]) -> str:
    """The text the bot answered this button press with (waits until it has answered)."""
    query_id = str(update["callback_query"]["id"])

    def answers() -> list[str]:
        return [
            str(call.params.get("text", ""))
            for call in bot.tg.calls("answerCallbackQuery")
            if str(call.params.get("callback_query_id")) == query_id and call.status == 200
        ]

    bot.tg.wait_for(lambda: bool(answers()), timeout=15)
    (text,) = answers()
    return text


def test_resume_while_another_broadcast_runs_is_answered_not_an_error(bot: BotHarness) -> None:
    # Another test may have alerted within the last minute, which would mute an alert here.
    errors._last_alert = 0.0
    bot.seed_subscribers(RECIPIENTS)

    a_status, a_uuid = _launch(bot, "broadcast A")
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, a_status, f"job:pause:{a_uuid}")
    bot.tg.wait_for(lambda: _status_of(bot, a_uuid) == "paused", timeout=15)
    # Once A's job has wound down nothing is active, so a new /push is accepted.
    bot.tg.wait_for(lambda: bot.runtime.broadcaster.active() is None, timeout=15)
    bot.tg.wait_for(
        lambda: "Resume" in str((bot.tg.message(ADMIN_ID, a_status) or {}).get("reply_markup")),
        timeout=15,
    )

    b_status, b_uuid = _launch(bot, "broadcast B")
    active = bot.runtime.broadcaster.active()
    assert active is not None and active.uuid == b_uuid, "B should be the one running"

    press = bot.tg.press_button(ADMIN_ID, ADMIN_ID, a_status, f"job:resume:{a_uuid}")
    answer = _answer_to(bot, press)

    assert "Another broadcast is running" in answer and "% done" in answer, answer
    assert "resume this one when it ends" in answer
    assert _status_of(bot, a_uuid) == "paused", "A must stay paused"
    assert _status_of(bot, b_uuid) == "running"

    # B can be stopped, and then A resumes with the very same button.
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, b_status, f"job:cancel:{b_uuid}")
    bot.next_reply(b_status, lambda m: "Broadcast cancelled" in m.get("text", ""))
    bot.tg.wait_for(lambda: bot.runtime.broadcaster.active() is None, timeout=15)
    again = bot.tg.press_button(ADMIN_ID, ADMIN_ID, a_status, f"job:resume:{a_uuid}")
    assert _answer_to(bot, again) == "Resumed"
    bot.tg.wait_for(lambda: bot.runtime.broadcaster.active() is not None, timeout=15)
    # Cancelled rather than left running: the bot then stops at once at the end of the test.
    bot.tg.press_button(ADMIN_ID, ADMIN_ID, a_status, f"job:cancel:{a_uuid}")
    bot.next_reply(
        a_status,
        lambda m: (
            "Broadcast cancelled" in m.get("text", "")
            and m.get("reply_to_message", {}).get("message_id") == a_status
        ),
    )
    assert _status_of(bot, a_uuid) == "cancelled"

    for admin in (ADMIN_ID, OTHER_ADMIN_ID):
        texts = [m.get("text") or "" for m in bot.tg.inbox(admin)]
        assert not any("Unexpected error" in t for t in texts), texts
