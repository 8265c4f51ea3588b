"""The broadcast service: the one owner of a push's life.

Handlers, the CLI and the demo ask it, and only it, to create, launch, steer, edit, retract
and look up broadcasts; the engine (pushbot.broadcast.engine) only executes the jobs it is
given. What a push may become is the transitions table beside `PushStatus`
(pushbot.db.models.PUSH_TRANSITIONS), enforced by the one query that changes a status.

Its methods do database work and may wait on the engine's locks: call them from a thread
(the bot's handlers use `asyncio.to_thread`), never on an event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from uuid import UUID

from sqlalchemy.orm import Session, sessionmaker
from telegram import MessageEntity

from pushbot.broadcast.engine import BroadcastBusy, Broadcaster, JobHandle
from pushbot.broadcast.progress import Progress
from pushbot.broadcast.scheduler import (
    BUSY_POLL_INTERVAL,
    POLL_INTERVAL,
    NotScheduled,
    ScheduleListener,
    Scheduler,
)
from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.queries import (
    AudienceCounts,
    EditedText,
    LanguageCount,
    PushCounts,
    PushDraft,
    PushHistoryRow,
    PushSummary,
)
from pushbot.db.segments import EVERYONE, Segment

# Telegram lets bots delete their messages only within 48 hours. Editing has no such window
# (the Bot API limits only business messages not sent by the bot to 48 hours), so /edit
# corrects a broadcast of any age.
DELETE_WINDOW = timedelta(hours=48)
# Kinds of broadcast whose caption /edit corrects; the others (stickers, locations, polls…)
# have no text to correct. A text broadcast has its text corrected.
CAPTIONED_CONTENT = frozenset({"photo", "video", "document", "animation", "audio", "voice"})
# Telegram's limits, in UTF-16 code units as Telegram counts them.
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024


class UndoVerdict(StrEnum):
    """Whether a push can be retracted, and if not, why."""

    RETRACT = "retract"  # copies are out (or may still go out): retract them
    ALREADY_RETRACTED = "already_retracted"
    TOO_OLD = "too_old"  # beyond Telegram's 48 hours
    NOTHING_DELIVERED = "nothing_delivered"  # finished without a copy left to delete


@dataclass(frozen=True)
class UndoCheck:
    push: PushSummary
    counts: PushCounts
    verdict: UndoVerdict

    @property
    def stops_sending_first(self) -> bool:
        """The push is still being sent (or paused): its sending stops before retracting."""
        return self.verdict is UndoVerdict.RETRACT and self.push.status.sending


class CannotRetract(Exception):
    def __init__(self, check: UndoCheck) -> None:
        super().__init__(f"push {check.push.uuid} cannot be retracted: {check.verdict}")
        self.check = check


class EditVerdict(StrEnum):
    """Whether a push's copies can be corrected, and if not, why."""

    EDIT = "edit"  # a finished broadcast with copies out (or an edit left unfinished)
    ALREADY_RETRACTED = "already_retracted"
    NOT_DONE = "not_done"  # scheduled, still being sent, or paused: it is not finished
    CANCELLED = "cancelled"  # stopped part-way: retract it and send the corrected one
    NO_TEXT = "no_text"  # a sticker, location, poll…: nothing to correct
    NOTHING_DELIVERED = "nothing_delivered"


@dataclass(frozen=True)
class EditCheck:
    push: PushSummary
    counts: PushCounts
    verdict: EditVerdict

    @property
    def copies(self) -> int:
        """Copies out, which the edit corrects."""
        return self.counts.sent - self.counts.retracted

    @property
    def corrects_caption(self) -> bool:
        return self.push.content_type != "text"


class CannotEdit(Exception):
    def __init__(self, check: EditCheck) -> None:
        super().__init__(f"push {check.push.uuid} cannot be edited: {check.verdict}")
        self.check = check


class InvalidEditText(ValueError):
    """The corrected text cannot be sent as it is; the message says why, in one line."""


class UnknownBroadcast(LookupError):
    def __init__(self, push_uuid: UUID) -> None:
        super().__init__(f"no broadcast {push_uuid}")
        self.push_uuid = push_uuid


def is_too_old(push: PushSummary, now: datetime | None = None) -> bool:
    created = push.created_at if push.created_at.tzinfo else push.created_at.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) - created > DELETE_WINDOW


def undo_verdict(push: PushSummary, counts: PushCounts, now: datetime | None = None) -> UndoVerdict:
    if push.deleted or push.status.retracted_or_retracting:
        return UndoVerdict.ALREADY_RETRACTED
    if is_too_old(push, now):
        return UndoVerdict.TOO_OLD
    if counts.sent - counts.retracted == 0 and not push.status.sending:
        return UndoVerdict.NOTHING_DELIVERED
    return UndoVerdict.RETRACT


def edit_verdict(push: PushSummary, counts: PushCounts) -> EditVerdict:
    if push.deleted or push.status.retracted_or_retracting:
        return EditVerdict.ALREADY_RETRACTED
    if push.status is PushStatus.CANCELLED:
        return EditVerdict.CANCELLED
    if push.status not in (PushStatus.DONE, PushStatus.EDITING):
        return EditVerdict.NOT_DONE
    if push.content_type != "text" and push.content_type not in CAPTIONED_CONTENT:
        return EditVerdict.NO_TEXT
    if counts.sent - counts.retracted == 0:
        return EditVerdict.NOTHING_DELIVERED
    return EditVerdict.EDIT


def edit_text_problem(content_type: str, text: str) -> str | None:
    """Why Telegram would refuse `text` as the corrected text (or caption), or None."""
    what, limit = (
        ("text", MAX_TEXT_LENGTH) if content_type == "text" else ("caption", MAX_CAPTION_LENGTH)
    )
    if not text.strip():
        return f"the corrected {what} is empty"
    length = len(text.encode("utf-16-le")) // 2
    if length > limit:
        return f"the corrected {what} is {length} characters long; Telegram allows {limit}"
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


class BroadcastService:
    """`admin_ids`: who the `admins` segment reaches; `clock`: the time scheduled pushes are
    due by (aware datetimes; tests move it)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        broadcaster: Broadcaster,
        *,
        admin_ids: Collection[int] = (),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._factory = session_factory
        self._broadcaster = broadcaster
        self._admin_ids = frozenset(admin_ids)
        self.clock = clock
        self._scheduler: Scheduler | None = None
        self._scheduler_lock = threading.Lock()

    # --- the engine's life ---------------------------------------------------------------------

    def start(self) -> None:
        self._broadcaster.start()

    def shutdown(self) -> None:
        """Running jobs stay `running` in the ledger: the next start carries them on;
        scheduled pushes stay scheduled."""
        with self._scheduler_lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.stop()
        self._broadcaster.shutdown()

    def start_scheduler(
        self,
        listener: ScheduleListener,
        *,
        poll_interval: float = POLL_INTERVAL,
        busy_poll: float = BUSY_POLL_INTERVAL,
    ) -> None:
        """Start due scheduled pushes from now on (pushbot.broadcast.scheduler), telling
        `listener` (in the scheduler's thread). Call it after `start` and
        `resume_unfinished`: what was interrupted goes first."""
        with self._scheduler_lock:
            if self._scheduler is not None:
                return
            self._scheduler = Scheduler(
                self, self.clock, listener, poll_interval=poll_interval, busy_poll=busy_poll
            )
            self._scheduler.start()

    def wake_scheduler(self) -> None:
        """Look for due pushes now (after scheduling one, or moving a test's clock)."""
        with self._scheduler_lock:
            if self._scheduler is not None:
                self._scheduler.wake()

    # --- a push's life -------------------------------------------------------------------------

    def push(self, draft: PushDraft) -> JobHandle:
        """Create a broadcast and launch it, as one step: when another job is active (here
        or in another process of the bot) it raises BroadcastBusy and no broadcast exists.

        The reports go to the draft's source chat (where the admin saw the preview); its
        `status_message_id`, when given, becomes the live status."""
        busy = self._broadcaster.busy()
        if busy is not None:
            raise BroadcastBusy(busy)
        with self._factory.begin() as session:
            push = queries.create_push(session, draft)
        try:
            return self._broadcaster.launch_push(push.uuid)
        except BroadcastBusy:
            # Another process's job started between the check and the launch: this push
            # never ran, so it leaves no trace rather than a 'cancelled' row.
            with self._factory.begin() as session:
                queries.discard_unlaunched_push(session, push.uuid)
            raise

    def schedule(self, draft: PushDraft) -> PushSummary:
        """Store a push `scheduled` for `draft.scheduled_at` (which must be ahead): the
        scheduler of a running bot starts it then. Another broadcast running now is no
        obstacle: the push waits for it when it is due."""
        if draft.scheduled_at is None:
            raise ValueError("a scheduled push needs its time")
        if draft.scheduled_at <= self.clock():
            raise ValueError("a push is scheduled for a time ahead")
        with self._factory.begin() as session:
            push = queries.create_push(session, draft, now=self.clock())
        self.wake_scheduler()
        return push

    def start_scheduled(self, push_uuid: UUID) -> JobHandle:
        """Send a scheduled push now (it is due, or the admin pressed Send now), exactly
        once: BroadcastBusy while another job runs (the push stays scheduled), NotScheduled
        when it is no longer scheduled (started already, here or elsewhere, or cancelled)."""
        busy = self._broadcaster.busy()
        if busy is not None:
            raise BroadcastBusy(busy)
        with self._factory.begin() as session:
            started = queries.change_push_status(
                session,
                push_uuid,
                PushStatus.RUNNING,
                expected={PushStatus.SCHEDULED},
                now=self.clock(),
            )
            current = None if started else queries.get_push(session, push_uuid)
        if not started:
            raise NotScheduled(push_uuid, None if current is None else current.status)
        try:
            return self._broadcaster.launch_push(push_uuid)
        except BroadcastBusy:
            # Another process's job began between the check and the launch. The push is
            # running in the ledger now: like one resumed at start-up, its job waits for
            # the lease (launching it again returns that job).
            self._broadcaster.resume_unfinished()
            return self._broadcaster.launch_push(push_uuid)

    def cancel_scheduled(self, push_uuid: UUID) -> bool:
        """Drop a scheduled push before it starts; False if it is no longer scheduled."""
        with self._factory.begin() as session:
            return queries.change_push_status(
                session, push_uuid, PushStatus.CANCELLED, expected={PushStatus.SCHEDULED}
            )

    def scheduled(self, limit: int | None = None) -> list[PushSummary]:
        """Pushes waiting for their time, soonest first."""
        with self._factory.begin() as session:
            return queries.scheduled_pushes(session, limit=limit)

    def due_scheduled(self, now: datetime) -> list[PushSummary]:
        with self._factory.begin() as session:
            return queries.scheduled_pushes(session, due_by=now)

    def next_scheduled_at(self) -> datetime | None:
        soonest = self.scheduled(limit=1)
        return soonest[0].scheduled_at if soonest else None

    def check_undo(self, push_uuid: UUID) -> UndoCheck:
        """What /undo would do with this push. UnknownBroadcast if there is no such push."""
        with self._factory.begin() as session:
            push = queries.get_push(session, push_uuid)
            if push is None:
                raise UnknownBroadcast(push_uuid)
            counts = queries.push_counts(session, push_uuid)
        return UndoCheck(push, counts, undo_verdict(push, counts))

    def undo(self, push_uuid: UUID, status_message: tuple[int, int] | None = None) -> JobHandle:
        """Retract every copy of a push (stopping its sending first if it is still being
        sent). CannotRetract when `check_undo` says no; BroadcastBusy when another job is
        active. `status_message` (chat id, message id) becomes the live status; the report
        goes to the push's report chat."""
        check = self.check_undo(push_uuid)
        if check.verdict is not UndoVerdict.RETRACT:
            raise CannotRetract(check)
        handle = self._broadcaster.launch_retract(push_uuid)
        if status_message is not None:
            chat_id, message_id = status_message
            self.show_status_in(push_uuid, chat_id, message_id)
        return handle

    def check_edit(self, push_uuid: UUID) -> EditCheck:
        """What /edit would do with this push. UnknownBroadcast if there is no such push."""
        with self._factory.begin() as session:
            push = queries.get_push(session, push_uuid)
            if push is None:
                raise UnknownBroadcast(push_uuid)
            counts = queries.push_counts(session, push_uuid)
        return EditCheck(push, counts, edit_verdict(push, counts))

    def edit(
        self,
        push_uuid: UUID,
        new_text: str,
        entities: Sequence[MessageEntity] = (),
        status_message: tuple[int, int] | None = None,
    ) -> JobHandle:
        """Correct every delivered copy: its text, or its caption for media, becomes
        `new_text` with `entities` (the formatting of the admin's corrected message).
        CannotEdit when `check_edit` says no; InvalidEditText when Telegram would refuse the
        text; BroadcastBusy when another job is active. `status_message` (chat id, message
        id) becomes the live status; the report goes to the push's report chat."""
        check = self.check_edit(push_uuid)
        if check.verdict is not EditVerdict.EDIT:
            raise CannotEdit(check)
        problem = edit_text_problem(check.push.content_type, new_text)
        if problem is not None:
            raise InvalidEditText(problem)
        edit = EditedText(new_text, tuple(entity.to_dict() for entity in entities))
        if status_message is not None:
            # Before the launch: a short edit may end, and its report be posted, at once.
            chat_id, message_id = status_message
            self.show_status_in(push_uuid, chat_id, message_id)
        return self._broadcaster.launch_edit(push_uuid, edit)

    def pause(self, push_uuid: UUID) -> bool:
        return self._broadcaster.pause(push_uuid)

    def resume(self, push_uuid: UUID) -> bool:
        return self._broadcaster.resume(push_uuid)

    def cancel(self, push_uuid: UUID) -> bool:
        return self._broadcaster.cancel(push_uuid)

    def resume_unfinished(self) -> list[UUID]:
        """At start-up: carry on what a crash or restart interrupted."""
        return self._broadcaster.resume_unfinished()

    # --- where reports go ----------------------------------------------------------------------

    def show_status_in(self, push_uuid: UUID, chat_id: int, message_id: int) -> None:
        """The live status of the push's job is this message; the report chat keeps the
        first one recorded (where the push was made), so /undo's report lands there too."""
        with self._factory.begin() as session:
            push = queries.get_push(session, push_uuid)
            report_chat = chat_id if push is None or push.report_chat_id is None else None
            queries.set_push_message_ids(
                session, push_uuid, report_chat_id=report_chat, status_message_id=message_id
            )

    def move_status_to(self, push_uuid: UUID, chat_id: int, message_id: int) -> None:
        """After a restart the bot posts a fresh status message; reports follow it."""
        with self._factory.begin() as session:
            queries.set_push_message_ids(
                session, push_uuid, report_chat_id=chat_id, status_message_id=message_id
            )

    def report_posted(self, push_uuid: UUID, message_id: int) -> None:
        """The push's report message (its latest: an edit's report replaces the push's):
        replying /undo or /edit to it names this push."""
        with self._factory.begin() as session:
            queries.set_push_message_ids(session, push_uuid, report_message_id=message_id)

    # --- looking up ----------------------------------------------------------------------------

    def busy(self) -> Progress | None:
        """The job that keeps a new one from starting (here or in another process)."""
        return self._broadcaster.busy()

    def progress(self, push_uuid: UUID) -> Progress | None:
        return self._broadcaster.progress(push_uuid)

    def get(self, push_uuid: UUID) -> PushSummary | None:
        with self._factory.begin() as session:
            return queries.get_push(session, push_uuid)

    def find_by_message(self, chat_id: int, message_id: int) -> PushSummary | None:
        with self._factory.begin() as session:
            return queries.find_push_by_message(session, chat_id, message_id)

    def recent(self, limit: int = 10) -> list[PushHistoryRow]:
        with self._factory.begin() as session:
            return queries.recent_pushes(session, limit)

    def retractable(self, limit: int) -> list[PushHistoryRow]:
        """Recent pushes that delivered copies, for /undo's picker (picking one too old to
        retract is answered with the reason)."""
        return [row for row in self.recent(limit) if not row.push.deleted and row.counts.sent > 0]

    def editable(self, limit: int) -> list[PushHistoryRow]:
        """Recent pushes whose copies /edit can correct, for its picker."""
        rows = self.recent(limit)
        return [row for row in rows if edit_verdict(row.push, row.counts) is EditVerdict.EDIT]

    def audience(self) -> AudienceCounts:
        with self._factory.begin() as session:
            return queries.audience_counts(session)

    def audience_size(self, segment: Segment = EVERYONE) -> int:
        """The chats a push to `segment` would reach now."""
        with self._factory.begin() as session:
            return queries.audience_size(session, segment, self._admin_ids)

    def languages(self) -> list[LanguageCount]:
        """The languages present in the audience, with their chats, most first."""
        with self._factory.begin() as session:
            return queries.audience_languages(session)

    def admins_not_on_record(self) -> list[int]:
        """Admins a test send cannot reach: never wrote to the bot, or purged."""
        with self._factory.begin() as session:
            reachable = queries.admins_on_record(session, self._admin_ids)
        return sorted(self._admin_ids - reachable)
