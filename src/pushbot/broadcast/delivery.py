"""The delivery policy: one recipient's copy (or its deletion, or its correction), from the first
try to an outcome.

A worker calls `deliver_copy`, `delete_copy` or `edit_copy` for one recipient. Each try
takes a ticket from the token's gateway (Telegram answering, the chat's slot, the budget's
slot), sends the request through the transport, and reports the answer on the ticket. What
happens next is the verdict of pushbot.broadcast.errors:

* succeeded, gone, unchanged, failed, purged: the outcome goes to the ledger's writer
  (`OutcomeSink`);
* transient (5xx, timeouts, connection errors): retried after a back-off. It counts as an
  attempt only if the gateway says Telegram answered other requests meanwhile; after
  `max_attempts` of those the recipient is failed, never purged. An outage charges nobody;
* 429: the gateway holds the chat (or the whole budget) for its retry_after; not an attempt;
* fatal (bad token, source message gone): the job's `on_fatal` stops it; nothing recorded;
* moved (the group became a supergroup): `follow_migration` moves the recipient's row to the
  new id, and the copy goes there.

When the job stops mid-way (a wait cut short by its `stop_signal`), nothing is recorded and
the slot is given back: the recipient stays pending for a resume.

It owns no thread, no state across recipients and no database access (the migration move
is the ledger's, passed in); how a job stops is
pushbot.broadcast.control's, and where outcomes are stored is pushbot.broadcast.ledger's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from telegram import LinkPreviewOptions, MessageEntity, MessageId

from pushbot.broadcast.backoff import Backoff
from pushbot.broadcast.errors import (
    SUCCEEDED,
    Action,
    Verdict,
    classify_delete_error,
    classify_edit_error,
    classify_send_error,
)
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.jobs import Job
from pushbot.broadcast.transport import Transport
from pushbot.db import queries
from pushbot.db.models import EditStatus, RetractStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")
OutcomeT = TypeVar("OutcomeT", contravariant=True)

INTERNAL_ERROR_REASON = "internal error"
# The bot's own messages (the /edit preview among them) go out without link previews
# (pushbot.bot.app's Defaults): a corrected copy looks like its preview.
NO_LINK_PREVIEW = LinkPreviewOptions(is_disabled=True)


@dataclass(frozen=True)
class CopyEdit:
    """What every copy of an /edit round becomes: `text` with its `entities`, as the
    message's text, or as its caption when the broadcast is a photo, video, document…"""

    text: str
    entities: tuple[MessageEntity, ...] = ()
    caption: bool = False


class OutcomeSink(Protocol[OutcomeT]):
    """Where a recipient's outcome goes (the job's OutcomeWriter): exactly one of the two
    per slot taken."""

    def submit(self, outcome: OutcomeT) -> None: ...

    def give_back_slot(self) -> None: ...


class Delivery:
    def __init__(
        self,
        transport: Transport,
        gateway: TelegramGateway,
        *,
        max_attempts: int,
        backoff: Backoff,
        paid_copies: bool,
        on_fatal: Callable[[Job, str], None],
        follow_migration: Callable[[Job, int, int], bool],
    ) -> None:
        self._transport = transport
        self._gateway = gateway
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._paid_copies = paid_copies
        self._paid: dict[str, Any] = {"allow_paid_broadcast": True} if paid_copies else {}
        self._on_fatal = on_fatal
        self._follow_migration = follow_migration

    def deliver_copy(
        self,
        job: Job,
        outcomes: OutcomeSink[queries.DeliveryOutcome],
        chat_id: int,
        source_chat_id: int,
        source_message_id: int,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """`options`: the push's own copyMessage flags (disable_notification,
        protect_content)."""

        def copy() -> Coroutine[Any, Any, MessageId]:
            return self._transport.bot.copy_message(
                chat_id=chat_id,
                from_chat_id=source_chat_id,
                message_id=source_message_id,
                **self._paid,
                **(options or {}),
            )

        try:
            result, verdict = self.attempt(
                job, chat_id, copy, classify_send_error, paid=self._paid_copies
            )
        except Exception:
            logger.exception("delivery to chat %s failed unexpectedly", chat_id)
            result, verdict = None, Verdict(Action.FAIL, INTERNAL_ERROR_REASON)
        if verdict is None:
            outcomes.give_back_slot()
            return
        moved_to = verdict.moved_to
        if (
            moved_to is not None
            and moved_to != chat_id
            and self._follow_migration(job, chat_id, moved_to)
        ):
            # The group became a supergroup: the same recipient, under its new id.
            self.deliver_copy(job, outcomes, moved_to, source_chat_id, source_message_id, options)
            return
        now = datetime.now(UTC)
        if verdict.action is Action.SUCCEEDED and result is not None:
            outcomes.submit(queries.DeliveryOutcome(chat_id, result.message_id, None, False, now))
            job.tally.succeeded()
        else:
            reason = verdict.reason or INTERNAL_ERROR_REASON
            outcomes.submit(queries.DeliveryOutcome(chat_id, None, reason, verdict.purges, now))
            job.tally.failed(reason, verdict.purges)

    def delete_copy(
        self,
        job: Job,
        outcomes: OutcomeSink[queries.RetractOutcome],
        chat_id: int,
        message_id: int,
    ) -> None:
        def delete() -> Coroutine[Any, Any, Any]:
            return self._transport.bot.delete_message(chat_id=chat_id, message_id=message_id)

        try:
            # Telegram has no paid delete: retractions always spend the free budget.
            _, verdict = self.attempt(job, chat_id, delete, classify_delete_error, paid=False)
        except Exception:
            logger.exception("deleting the copy in chat %s failed unexpectedly", chat_id)
            verdict = Verdict(Action.FAIL, INTERNAL_ERROR_REASON)
        if verdict is None:
            outcomes.give_back_slot()
            return
        now = datetime.now(UTC)
        if verdict.action in (Action.SUCCEEDED, Action.GONE):
            status = (
                RetractStatus.DELETED if verdict.action is Action.SUCCEEDED else RetractStatus.GONE
            )
            outcomes.submit(queries.RetractOutcome(chat_id, status.value, None, now))
            job.tally.succeeded()
        else:
            reason = verdict.reason or INTERNAL_ERROR_REASON
            outcomes.submit(
                queries.RetractOutcome(chat_id, RetractStatus.FAILED.value, reason, now)
            )
            job.tally.failed(reason, purged=False)

    def edit_copy(
        self,
        job: Job,
        outcomes: OutcomeSink[queries.EditOutcome],
        chat_id: int,
        message_id: int,
        edit: CopyEdit,
    ) -> None:
        def correct() -> Coroutine[Any, Any, Any]:
            bot = self._transport.bot
            if edit.caption:
                return bot.edit_message_caption(
                    chat_id=chat_id,
                    message_id=message_id,
                    caption=edit.text,
                    caption_entities=edit.entities,
                )
            return bot.edit_message_text(
                edit.text,
                chat_id=chat_id,
                message_id=message_id,
                entities=edit.entities,
                link_preview_options=NO_LINK_PREVIEW,
            )

        try:
            # Telegram has no paid edit: corrections always spend the free budget.
            _, verdict = self.attempt(job, chat_id, correct, classify_edit_error, paid=False)
        except Exception:
            logger.exception("editing the copy in chat %s failed unexpectedly", chat_id)
            verdict = Verdict(Action.FAIL, INTERNAL_ERROR_REASON)
        if verdict is None:
            outcomes.give_back_slot()
            return
        now = datetime.now(UTC)
        reason = verdict.reason or INTERNAL_ERROR_REASON
        if verdict.action is Action.SUCCEEDED:
            outcomes.submit(queries.EditOutcome(chat_id, EditStatus.EDITED.value, None, now))
            job.tally.succeeded()
        elif verdict.action is Action.UNCHANGED:
            outcomes.submit(queries.EditOutcome(chat_id, EditStatus.UNCHANGED.value, reason, now))
            job.tally.unchanged(reason)
        else:
            outcomes.submit(queries.EditOutcome(chat_id, EditStatus.FAILED.value, reason, now))
            job.tally.failed(reason, purged=False)

    def attempt(
        self,
        job: Job,
        chat_id: int,
        request: Callable[[], Coroutine[Any, Any, T]],
        classify: Callable[[BaseException], Verdict],
        paid: bool,
    ) -> tuple[T | None, Verdict | None]:
        """Send until there is a final verdict. (result, SUCCEEDED) on success, (None,
        verdict) on a final failure, (None, None) if the job stopped first: then nothing is
        recorded and the recipient stays pending for a resume.

        Only transient failures that happened while Telegram answered other requests count
        as attempts (see TelegramHealth): an outage of any length charges nobody."""
        attempts = 0
        while True:
            ticket = self._gateway.acquire(chat_id, paid=paid, stop=job.stop_signal)
            if ticket is None:
                return None, None
            try:
                result = self._transport.call(request())
            except Exception as exc:
                verdict = classify(exc)
            else:
                self._gateway.answered(ticket)
                return result, SUCCEEDED
            if verdict.action is Action.TRANSIENT:
                if self._gateway.failed(ticket):
                    attempts += 1
                    if attempts >= self._max_attempts:
                        return None, Verdict(Action.FAIL, verdict.reason)
                    pause = self._backoff.delay(attempts)
                else:
                    # Telegram failed everyone: the gateway holds the senders from here on;
                    # a short pause only spaces the retries until it notices.
                    pause = self._backoff.delay(1)
                if job.stop_signal.wait(pause):
                    return None, None
                continue
            if verdict.action is Action.RETRY_AFTER:
                self._gateway.flooded(ticket, verdict.retry_after)
                continue
            self._gateway.answered(ticket)
            if verdict.action is Action.FATAL:
                self._on_fatal(job, verdict.reason or "fatal error")
                return None, None
            return None, verdict
