"""Keeping the admin informed about a running broadcast, edit or retraction.

A watcher task per job edits its status message every few seconds (only when something
changed: Telegram answers 400 "message is not modified" otherwise), the Pause / Resume /
Cancel buttons steer the engine, and the engine's end-of-job callback (fired in one of its
threads) is marshalled onto the Application's loop to post the final report.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from pushbot.bot import render
from pushbot.bot.services import SERVICES_KEY, Services, services
from pushbot.broadcast.engine import BroadcastBusy, UnknownPush
from pushbot.broadcast.progress import JobKind, JobReport, JobState, Progress

logger = logging.getLogger(__name__)

# Every edit costs one request of the bot's 30/s budget; one every few seconds is plenty.
PROGRESS_EDIT_INTERVAL = 3.0
# A progress edit gives up sooner than the Application's other sends (60 s): the next one,
# a few seconds later, carries fresher figures anyway.
PROGRESS_EDIT_RETRY_BUDGET = 2 * PROGRESS_EDIT_INTERVAL
ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.PAUSED})
# Paused by an admin (the status message says so), shut down (resumed at the next start),
# superseded by a retraction (whose own report follows), or run by another process of the
# bot (which reports it): nothing to announce.
SILENT_STATES = frozenset({JobState.INTERRUPTED, JobState.SUPERSEDED, JobState.HANDLED_ELSEWHERE})


def watch_job(
    app: Application[Any, Any, Any, Any, Any, Any], push_uuid: UUID, chat_id: int, message_id: int
) -> None:
    svc: Services = app.bot_data[SERVICES_KEY]
    svc.watchers.start(push_uuid, _keep_status_fresh(app, svc, push_uuid, chat_id, message_id))


async def _keep_status_fresh(
    app: Application[Any, Any, Any, Any, Any, Any],
    svc: Services,
    push_uuid: UUID,
    chat_id: int,
    message_id: int,
) -> None:
    last_shown: tuple[str, str] | None = None
    while True:
        progress = svc.broadcasts.progress(push_uuid)
        if progress is None or progress.state not in ACTIVE_STATES:
            return
        text = render.render_progress(progress)
        markup = render.job_keyboard(push_uuid, progress.state, progress.kind)
        shown = (text, _markup_key(markup))
        if shown != last_shown and await _edit_status(
            app, chat_id, message_id, text, markup, retry_budget=PROGRESS_EDIT_RETRY_BUDGET
        ):
            last_shown = shown
        await asyncio.sleep(PROGRESS_EDIT_INTERVAL)


def _markup_key(markup: InlineKeyboardMarkup | None) -> str:
    return "" if markup is None else str(markup.to_dict())


async def _edit_status(
    app: Application[Any, Any, Any, Any, Any, Any],
    chat_id: int,
    message_id: int,
    text: str,
    markup: InlineKeyboardMarkup | None,
    *,
    retry_budget: float | None = None,
) -> bool:
    """Whether the status message now shows `text`. The job goes on regardless: the admin
    may have deleted the message, or Telegram may be having a bad day."""
    try:
        await app.bot.edit_message_text(
            text,
            chat_id=chat_id,
            message_id=message_id,
            reply_markup=markup,
            rate_limit_args=retry_budget,
        )
    except TelegramError as exc:
        if isinstance(exc, BadRequest) and "not modified" in exc.message.lower():
            return True
        logger.warning("could not update status message %s/%s: %s", chat_id, message_id, exc)
        return False
    return True


async def post_report(app: Application[Any, Any, Any, Any, Any, Any], report: JobReport) -> None:
    svc: Services = app.bot_data[SERVICES_KEY]
    push = await asyncio.to_thread(svc.broadcasts.get, report.uuid)
    if push is None or push.report_chat_id is None:
        return
    if report.state in SILENT_STATES:
        return
    if report.state in (JobState.PAUSED, JobState.FAILED):
        if report.error:
            # An edit has no Resume button: it carries on at the next start, or a new /edit.
            again = (
                "/edit it again to retry"
                if report.kind is JobKind.EDIT
                else "press Resume on its status message to try again"
            )
            await app.bot.send_message(
                push.report_chat_id,
                f"⚠️ The job stopped by itself: {report.error}. It is kept as it is; {again}.",
            )
        return
    retract = report.kind is JobKind.RETRACT
    if report.kind is JobKind.EDIT:
        text = render.render_edit_report(report, push.current_text)
    elif retract:
        text = render.render_retract_report(report)
    else:
        text = render.render_push_report(report, push)
    if push.status_message_id is not None:
        await _edit_status(
            app, push.report_chat_id, push.status_message_id, _final_status_line(report), None
        )
    sent = await app.bot.send_message(
        push.report_chat_id,
        text,
        reply_to_message_id=push.status_message_id,
        allow_sending_without_reply=True,
    )
    if not retract:
        await asyncio.to_thread(svc.broadcasts.report_posted, report.uuid, sent.message_id)


FINAL_STATUS_SUBJECTS = {
    JobKind.PUSH: "Broadcast",
    JobKind.RETRACT: "Retraction",
    JobKind.EDIT: "Edit",
}


def _final_status_line(report: JobReport) -> str:
    return f"{FINAL_STATUS_SUBJECTS[report.kind]} {report.state}: see the report below."


async def on_job_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    svc = services(context)
    if not svc.settings.is_admin(query.from_user.id):
        await query.answer()
        return
    _, action, raw_uuid = query.data.split(":", 2)
    push_uuid = UUID(raw_uuid)
    steer = {
        "pause": svc.broadcasts.pause,
        "resume": svc.broadcasts.resume,
        "cancel": svc.broadcasts.cancel,
    }[action]
    try:
        changed = await asyncio.to_thread(steer, push_uuid)
    except BroadcastBusy as exc:
        # One job at a time: Resume waits for the active one. Answering (instead of raising)
        # ends the button's spinner and tells the admin why nothing happened.
        await query.answer(busy_text(push_uuid, exc.active))
        return
    except UnknownPush:
        await query.answer("Nothing to do: that broadcast no longer exists.")
        return
    await query.answer(
        {"pause": "Paused", "resume": "Resumed", "cancel": "Cancelled"}[action]
        if changed
        else "Nothing to do: that job is not active."
    )
    if changed and action == "resume" and query.message is not None:
        watch_job(context.application, push_uuid, query.message.chat.id, query.message.message_id)


def busy_text(push_uuid: UUID, active: Progress) -> str:
    """Why Resume did nothing while another job runs (a callback answer: at most 200 chars)."""
    if active.uuid == push_uuid:
        # Paused a moment ago and its in-flight sends are still landing.
        return "This broadcast has not stopped yet; press Resume again in a moment."
    # No total when the engine cannot tell how far the other job is: no percentage then.
    done = f" ({int(100 * active.done / active.total)}% done)" if active.total else ""
    if active.kind == JobKind.RETRACT:
        return f"A retraction is running{done}; resume this broadcast when it ends."
    if active.kind == JobKind.EDIT:
        return f"An edit is running{done}; resume this broadcast when it ends."
    return f"Another broadcast is running{done}; resume this one when it ends."


def job_button_handler() -> CallbackQueryHandler[Any, Any]:
    return CallbackQueryHandler(on_job_button, pattern=r"^job:(pause|resume|cancel):")
