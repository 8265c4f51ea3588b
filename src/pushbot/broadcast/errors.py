"""What to do about each outcome of a copy, a delete or an edit: one table, tested with real ptb
errors.

ptb raises `BadRequest` as a subclass of `NetworkError` and turns 5xx answers into a plain
`NetworkError`, so the order of the checks below matters: the specific classes first.
Reasons are short, stable, lower-case strings: they are grouped and counted in reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from pushbot.broadcast.pacing import retry_after_seconds

MAX_REASON_LENGTH = 64

# Reasons under which a chat leaves the audience (the bot layer brings it back when the
# user talks to the bot again or re-adds it).
REASON_BLOCKED = "blocked"
REASON_DEACTIVATED = "deactivated"
REASON_KICKED = "kicked"
REASON_CHAT_NOT_FOUND = "chat not found"
PURGE_REASONS = frozenset(
    {REASON_BLOCKED, REASON_DEACTIVATED, REASON_KICKED, REASON_CHAT_NOT_FOUND}
)
# A group upgraded to a supergroup lives on under a new id: never a purge.
REASON_MIGRATED = "migrated to supergroup"
REASON_TOO_OLD = "older than 48 hours"
REASON_TIMED_OUT = "timed out"
REASON_NETWORK = "network error"
REASON_INVALID_TOKEN = "invalid token"
REASON_SOURCE_GONE = "source message not found"
# Why an /edit left a copy as it was (both count as unchanged, not as failures).
REASON_COPY_DELETED = "deleted by the user"
REASON_NOT_MODIFIED = "already had this text"

# Substrings of Telegram's descriptions, matched case-insensitively (ptb re-capitalises
# some of them and strips "Bad Request: ").
_PURGING_FORBIDDEN = (
    ("bot was blocked by the user", REASON_BLOCKED),
    ("user is deactivated", REASON_DEACTIVATED),
    ("bot was kicked", REASON_KICKED),
    ("bot is not a member", REASON_KICKED),
)
_PURGING_BAD_REQUEST = (("chat not found", REASON_CHAT_NOT_FOUND),)
_SOURCE_GONE = ("message to copy not found", "message_id_invalid")
_DELETE_GONE = ("message to delete not found",)
_DELETE_TOO_OLD = ("message can't be deleted",)
_EDIT_GONE = ("message to edit not found",)
_EDIT_NOT_MODIFIED = ("message is not modified",)
_DESCRIPTION_PREFIXES = ("forbidden: ", "bad request: ", "error: ", "[error]: ")


class Action(Enum):
    """What the engine does next with one recipient."""

    SUCCEEDED = "succeeded"  # delivered / deleted
    GONE = "gone"  # delete: the copy was already gone, which counts as removed
    UNCHANGED = "unchanged"  # edit: nothing to correct (the copy is gone or already right)
    PURGE = "purge"  # failed for good and the chat leaves the audience
    FAIL = "fail"  # failed for good, the chat stays
    RETRY_AFTER = "retry_after"  # flood control: close the shared gate, retry (not an attempt)
    MOVED = "moved"  # the group became a supergroup: the recipient is `moved_to` now
    TRANSIENT = "transient"  # retry with backoff, up to the attempt limit, never purge
    FATAL = "fatal"  # no recipient can succeed (bad token, source deleted): stop the job


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str | None = None
    retry_after: float = 0.0
    moved_to: int | None = None

    @property
    def purges(self) -> bool:
        return self.action is Action.PURGE

    @property
    def is_final(self) -> bool:
        """True when the outcome can be recorded (no further attempt is due)."""
        return self.action in _FINAL_ACTIONS


_FINAL_ACTIONS = frozenset(
    {Action.SUCCEEDED, Action.GONE, Action.UNCHANGED, Action.PURGE, Action.FAIL}
)
SUCCEEDED = Verdict(Action.SUCCEEDED)
GONE = Verdict(Action.GONE)


def classify_send_error(exc: BaseException) -> Verdict:
    """Verdict for an exception raised by copy_message."""
    common = _classify_common(exc)
    if common is not None:
        return common
    description = describe(exc)
    if isinstance(exc, Forbidden):
        return _purge_or_fail(description, _PURGING_FORBIDDEN)
    if isinstance(exc, BadRequest):
        if _mentions(description, _SOURCE_GONE):
            return Verdict(Action.FATAL, REASON_SOURCE_GONE)
        return _purge_or_fail(description, _PURGING_BAD_REQUEST)
    return _classify_network_or_unknown(exc, description)


def classify_delete_error(exc: BaseException) -> Verdict:
    """Verdict for an exception raised by delete_message. Deletes never purge a chat."""
    common = _classify_common(exc)
    if common is not None:
        # A copy in the old group cannot be deleted through the supergroup's id.
        return Verdict(Action.FAIL, REASON_MIGRATED) if common.action is Action.MOVED else common
    description = describe(exc)
    if isinstance(exc, BadRequest):
        if _mentions(description, _DELETE_GONE):
            return GONE
        if _mentions(description, _DELETE_TOO_OLD):
            return Verdict(Action.FAIL, REASON_TOO_OLD)
        return Verdict(Action.FAIL, _known_reason(description, _PURGING_BAD_REQUEST))
    if isinstance(exc, Forbidden):
        return Verdict(Action.FAIL, _known_reason(description, _PURGING_FORBIDDEN))
    return _classify_network_or_unknown(exc, description)


def classify_edit_error(exc: BaseException) -> Verdict:
    """Verdict for an exception raised by edit_message_text / edit_message_caption.

    Edits never purge a chat: an edit corrects what was delivered, the audience is kept
    true by Telegram's my_chat_member updates and by the next broadcast, which purges the
    chats it cannot reach. 429s, 5xx and timeouts are retried exactly as copies are."""
    common = _classify_common(exc)
    if common is not None:
        # A copy in the old group cannot be edited through the supergroup's id.
        return Verdict(Action.FAIL, REASON_MIGRATED) if common.action is Action.MOVED else common
    description = describe(exc)
    if isinstance(exc, BadRequest):
        if _mentions(description, _EDIT_NOT_MODIFIED):
            return Verdict(Action.UNCHANGED, REASON_NOT_MODIFIED)
        if _mentions(description, _EDIT_GONE):
            return Verdict(Action.UNCHANGED, REASON_COPY_DELETED)
        return Verdict(Action.FAIL, _known_reason(description, _PURGING_BAD_REQUEST))
    if isinstance(exc, Forbidden):
        return Verdict(Action.FAIL, _known_reason(description, _PURGING_FORBIDDEN))
    return _classify_network_or_unknown(exc, description)


def _classify_common(exc: BaseException) -> Verdict | None:
    if isinstance(exc, RetryAfter):
        return Verdict(Action.RETRY_AFTER, "flood control", retry_after_seconds(exc))
    if isinstance(exc, InvalidToken):
        return Verdict(Action.FATAL, REASON_INVALID_TOKEN)
    if isinstance(exc, ChatMigrated):
        return Verdict(Action.MOVED, REASON_MIGRATED, moved_to=exc.new_chat_id)
    return None


def _classify_network_or_unknown(exc: BaseException, description: str) -> Verdict:
    if isinstance(exc, TimedOut):
        return Verdict(Action.TRANSIENT, REASON_TIMED_OUT)
    if isinstance(exc, NetworkError):
        # 5xx, a 429 without retry_after, connection resets: the chat is not at fault.
        return Verdict(Action.TRANSIENT, REASON_NETWORK)
    if isinstance(exc, TelegramError):
        return Verdict(Action.FAIL, description)
    # Not from Telegram at all (e.g. the HTTP client failing in an unexpected way): retry,
    # and if it persists record it under the exception's type rather than purge anyone.
    return Verdict(Action.TRANSIENT, f"error: {type(exc).__name__}"[:MAX_REASON_LENGTH])


def _purge_or_fail(description: str, purging: tuple[tuple[str, str], ...]) -> Verdict:
    for needle, reason in purging:
        if needle in description:
            return Verdict(Action.PURGE, reason)
    return Verdict(Action.FAIL, description)


def _known_reason(description: str, known: tuple[tuple[str, str], ...]) -> str:
    for needle, reason in known:
        if needle in description:
            return reason
    return description


def _mentions(description: str, needles: tuple[str, ...]) -> bool:
    return any(needle in description for needle in needles)


def describe(exc: BaseException) -> str:
    """Telegram's description, normalised into a short reason: lower case, no prefix."""
    text = str(exc).strip().lower()
    for prefix in _DESCRIPTION_PREFIXES:
        text = text.removeprefix(prefix)
    text = text or type(exc).__name__.lower()
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 1].rstrip() + "…"
    return text
