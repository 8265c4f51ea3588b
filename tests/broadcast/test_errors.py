"""The outcome table, checked with the exceptions ptb really raises.

ptb builds these from Telegram's answers: "Bad Request: " is stripped and the rest
capitalised; "Forbidden: " stays. The engine tests get the same exceptions over HTTP.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from pushbot.broadcast.errors import (
    MAX_REASON_LENGTH,
    PURGE_REASONS,
    Action,
    Verdict,
    classify_delete_error,
    classify_edit_error,
    classify_send_error,
    describe,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Forbidden("Forbidden: bot was blocked by the user"), Verdict(Action.PURGE, "blocked")),
        (Forbidden("Forbidden: user is deactivated"), Verdict(Action.PURGE, "deactivated")),
        (
            Forbidden("Forbidden: bot was kicked from the group chat"),
            Verdict(Action.PURGE, "kicked"),
        ),
        (
            Forbidden("Forbidden: bot is not a member of the channel chat"),
            Verdict(Action.PURGE, "kicked"),
        ),
        (BadRequest("Bad Request: chat not found"), Verdict(Action.PURGE, "chat not found")),
        (
            ChatMigrated(-1001234),
            Verdict(Action.MOVED, "migrated to supergroup", moved_to=-1001234),
        ),
        (
            Forbidden("Forbidden: bot can't initiate conversation with a user"),
            Verdict(Action.FAIL, "bot can't initiate conversation with a user"),
        ),
        (
            BadRequest("Bad Request: message is too long"),
            Verdict(Action.FAIL, "message is too long"),
        ),
        (TimedOut(), Verdict(Action.TRANSIENT, "timed out")),
        (NetworkError("Internal Server Error (500)"), Verdict(Action.TRANSIENT, "network error")),
        (NetworkError("Bad Gateway"), Verdict(Action.TRANSIENT, "network error")),
        (InvalidToken("Unauthorized"), Verdict(Action.FATAL, "invalid token")),
        (
            BadRequest("Bad Request: message to copy not found"),
            Verdict(Action.FATAL, "source message not found"),
        ),
        (
            Conflict("Conflict: terminated by other getUpdates"),
            Verdict(Action.FAIL, "conflict: terminated by other getupdates"),
        ),
        (ConnectionResetError(), Verdict(Action.TRANSIENT, "error: ConnectionResetError")),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_send_outcomes(error: Exception, expected: Verdict) -> None:
    assert classify_send_error(error) == expected


def test_bad_request_is_checked_before_network_error() -> None:
    # BadRequest subclasses NetworkError: a 400 must never be retried as transient.
    assert issubclass(BadRequest, NetworkError)
    verdict = classify_send_error(BadRequest("Bad Request: chat not found"))
    assert verdict.action is Action.PURGE


def test_retry_after_is_neither_final_nor_an_attempt() -> None:
    verdict = classify_send_error(RetryAfter(timedelta(seconds=3)))
    assert verdict.action is Action.RETRY_AFTER
    assert verdict.retry_after == 3.0
    assert not verdict.is_final and not verdict.purges


def test_transient_errors_never_purge() -> None:
    for error in (TimedOut(), NetworkError("Service Unavailable (503)"), OSError("reset")):
        assert not classify_send_error(error).purges


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BadRequest("Bad Request: message to delete not found"), Verdict(Action.GONE)),
        (
            BadRequest("Bad Request: message can't be deleted"),
            Verdict(Action.FAIL, "older than 48 hours"),
        ),
        (
            BadRequest("Bad Request: message can't be deleted for everyone"),
            Verdict(Action.FAIL, "older than 48 hours"),
        ),
        (Forbidden("Forbidden: bot was blocked by the user"), Verdict(Action.FAIL, "blocked")),
        (Forbidden("Forbidden: user is deactivated"), Verdict(Action.FAIL, "deactivated")),
        (BadRequest("Bad Request: chat not found"), Verdict(Action.FAIL, "chat not found")),
        (ChatMigrated(-100), Verdict(Action.FAIL, "migrated to supergroup")),
        (TimedOut(), Verdict(Action.TRANSIENT, "timed out")),
        (NetworkError("Internal Server Error (500)"), Verdict(Action.TRANSIENT, "network error")),
        (InvalidToken(), Verdict(Action.FATAL, "invalid token")),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_delete_outcomes(error: Exception, expected: Verdict) -> None:
    assert classify_delete_error(error) == expected


def test_deletes_never_purge() -> None:
    for error in (
        Forbidden("Forbidden: bot was blocked by the user"),
        BadRequest("Bad Request: chat not found"),
        ChatMigrated(-5),
    ):
        assert not classify_delete_error(error).purges


def test_delete_retry_after() -> None:
    verdict = classify_delete_error(RetryAfter(timedelta(seconds=1.5)))
    assert verdict == Verdict(Action.RETRY_AFTER, "flood control", 1.5)


def test_reasons_are_short_and_stable() -> None:
    long = BadRequest("Bad Request: " + "can't parse entities: " * 20)
    reason = classify_send_error(long).reason
    assert reason is not None and len(reason) <= MAX_REASON_LENGTH
    assert reason == classify_send_error(long).reason
    assert describe(Forbidden("Forbidden: bot can't send messages to bots")) == (
        "bot can't send messages to bots"
    )
    assert "blocked" in PURGE_REASONS and "timed out" not in PURGE_REASONS


def test_a_migrated_group_is_followed_never_purged() -> None:
    verdict = classify_send_error(ChatMigrated(-1001234))
    assert verdict.moved_to == -1001234
    assert not verdict.purges and not verdict.is_final  # the copy is still owed, elsewhere
    assert "migrated to supergroup" not in PURGE_REASONS


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            BadRequest(
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message"
            ),
            Verdict(Action.UNCHANGED, "already had this text"),
        ),
        (
            BadRequest("Bad Request: message to edit not found"),
            Verdict(Action.UNCHANGED, "deleted by the user"),
        ),
        (
            BadRequest("Bad Request: message can't be edited"),
            Verdict(Action.FAIL, "message can't be edited"),
        ),
        (Forbidden("Forbidden: bot was blocked by the user"), Verdict(Action.FAIL, "blocked")),
        (Forbidden("Forbidden: user is deactivated"), Verdict(Action.FAIL, "deactivated")),
        (
            Forbidden("Forbidden: bot was kicked from the group chat"),
            Verdict(Action.FAIL, "kicked"),
        ),
        (BadRequest("Bad Request: chat not found"), Verdict(Action.FAIL, "chat not found")),
        (ChatMigrated(-100), Verdict(Action.FAIL, "migrated to supergroup")),
        (TimedOut(), Verdict(Action.TRANSIENT, "timed out")),
        (NetworkError("Bad Gateway"), Verdict(Action.TRANSIENT, "network error")),
        (RetryAfter(timedelta(seconds=2)), Verdict(Action.RETRY_AFTER, "flood control", 2.0)),
        (InvalidToken(), Verdict(Action.FATAL, "invalid token")),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_edit_outcomes(error: Exception, expected: Verdict) -> None:
    assert classify_edit_error(error) == expected


def test_edits_never_purge_and_unchanged_is_final() -> None:
    for error in (
        Forbidden("Forbidden: bot was blocked by the user"),
        Forbidden("Forbidden: user is deactivated"),
        BadRequest("Bad Request: chat not found"),
    ):
        assert not classify_edit_error(error).purges
    unchanged = classify_edit_error(BadRequest("Bad Request: message to edit not found"))
    assert unchanged.is_final and not unchanged.purges
