"""Application wiring: one place that builds the bot, in the style of ptb's rules-bot.

ApplicationBuilder with Defaults and our shared rate limiter, post_init/post_shutdown for
the lifecycle (commands, the broadcaster, resuming interrupted broadcasts), one module per
feature, a central error handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import warnings
from collections.abc import Sequence
from typing import Any

from telegram import BotCommand, BotCommandScopeChat, LinkPreviewOptions
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, Defaults, filters
from telegram.request import HTTPXRequest
from telegram.warnings import PTBUserWarning

from pushbot.bot import errors, render
from pushbot.bot.edit import edit_conversation
from pushbot.bot.jobs import job_button_handler, post_report, watch_job
from pushbot.bot.ordering import PerChatOrderedProcessor
from pushbot.bot.push import push_conversation
from pushbot.bot.scheduled import ScheduleRelay, scheduled_handlers
from pushbot.bot.services import SERVICES_KEY, Services
from pushbot.bot.stats import stats_handler
from pushbot.bot.store import Store
from pushbot.bot.undo import undo_conversation
from pushbot.bot.users import (
    ADMIN_COMMANDS,
    USER_COMMANDS,
    fallback_handlers,
    language_handlers,
    user_handlers,
)
from pushbot.broadcast.gateway import SharedRateLimiter, TelegramGateway, answered_at_all
from pushbot.broadcast.progress import JobKind, JobReport, JobState
from pushbot.broadcast.service import BroadcastService
from pushbot.config import Settings
from pushbot.stats import StatsService

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
# The Application's own requests (replies, progress edits) need few connections: the
# broadcaster has its own pool of BROADCAST_POOL_SIZE.
APP_CONNECTION_POOL = 16
# The signals that stop `pushbot run`: ptb's documented default for run_polling/run_webhook,
# spelt out so that callers can also pass None (no handlers, for a bot off the main thread).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGABRT)

# ConversationHandlers mixing commands and buttons warn that buttons are tracked per chat,
# not per message; that is exactly what we want for one admin conversation per chat.
warnings.filterwarnings("ignore", message=".*per_message.*", category=PTBUserWarning)

AnyApp = Application[Any, Any, Any, Any, Any, Any]
# What the admin is told is being resumed after a restart.
RESUMED_JOBS = {JobKind.PUSH: "broadcast", JobKind.RETRACT: "retraction", JobKind.EDIT: "edit"}
# After group 0, where every command and message has its one handler.
LANGUAGE_HANDLER_GROUP = 1


class ReportRelay:
    """Hands the engine's end-of-job reports (fired in engine threads) to the app's loop."""

    def __init__(self) -> None:
        self.app: AnyApp | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, report: JobReport) -> None:
        if self.app is not None and self.loop is not None and not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(post_report(self.app, report), self.loop)


def build_application(
    settings: Settings,
    store: Store,
    broadcasts: BroadcastService,
    gateway: TelegramGateway,
    relay: ReportRelay,
    stats: StatsService,
) -> AnyApp:
    app = (
        ApplicationBuilder()
        .token(settings.bot_token)
        .base_url(settings.telegram_base_url)
        .request(HTTPXRequest(connection_pool_size=APP_CONNECTION_POOL))
        .get_updates_request(HTTPXRequest(connection_pool_size=2, read_timeout=40))
        .defaults(
            Defaults(
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                allow_sending_without_reply=True,
            )
        )
        .rate_limiter(SharedRateLimiter(gateway))
        .concurrent_updates(PerChatOrderedProcessor(settings.update_concurrency))
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    # While Telegram is down, the Application's waiting sends ask getMe whether it is back.
    gateway.set_probes(async_probe=functools.partial(telegram_answers, app.bot))
    app.bot_data[SERVICES_KEY] = Services(
        settings=settings, store=store, broadcasts=broadcasts, stats=stats
    )
    app.bot_data["pushbot.relay"] = relay
    add_handlers(app, settings)
    return app


async def telegram_answers(bot: Any) -> bool:
    try:
        await bot.get_me()
    except TelegramError as exc:
        return answered_at_all(exc)
    return True


def add_handlers(app: AnyApp, settings: Settings) -> None:
    admins = filters.User(user_id=settings.admin_ids, allow_empty=False)
    app.add_handler(push_conversation(admins))
    app.add_handler(undo_conversation(admins))
    app.add_handler(edit_conversation(admins))
    app.add_handler(stats_handler(admins))
    app.add_handlers(scheduled_handlers(admins))
    app.add_handler(job_button_handler())
    app.add_handlers(user_handlers())
    app.add_handlers(fallback_handlers())
    app.add_handlers(language_handlers(), group=LANGUAGE_HANDLER_GROUP)
    errors.install(app)


async def _post_init(app: AnyApp) -> None:
    svc: Services = app.bot_data[SERVICES_KEY]
    relay: ReportRelay = app.bot_data["pushbot.relay"]
    relay.app, relay.loop = app, asyncio.get_running_loop()
    await register_commands(app, svc.settings)
    await asyncio.to_thread(svc.broadcasts.start)
    resumed = await asyncio.to_thread(svc.broadcasts.resume_unfinished)
    for push_uuid in resumed:
        await announce_resumed(app, svc, push_uuid)
    # After the resumed jobs: a scheduled push due now waits for them.
    schedule_relay = ScheduleRelay(app, asyncio.get_running_loop())
    await asyncio.to_thread(svc.broadcasts.start_scheduler, schedule_relay)


async def _post_shutdown(app: AnyApp) -> None:
    svc: Services = app.bot_data[SERVICES_KEY]
    await asyncio.to_thread(svc.broadcasts.shutdown)


async def register_commands(app: AnyApp, settings: Settings) -> None:
    user_commands = [BotCommand(name, what) for name, what in USER_COMMANDS.items()]
    admin_commands = user_commands + [BotCommand(n, w) for n, w in ADMIN_COMMANDS.items()]
    await app.bot.set_my_commands(user_commands)
    for admin_id in sorted(settings.admin_ids):
        try:
            await app.bot.set_my_commands(admin_commands, scope=BotCommandScopeChat(admin_id))
        except TelegramError as exc:
            # Telegram knows an admin's chat only once they have written to the bot.
            logger.warning("admin commands not registered for %s: %s", admin_id, exc)


async def announce_resumed(app: AnyApp, svc: Services, push_uuid: Any) -> None:
    push = await asyncio.to_thread(svc.broadcasts.get, push_uuid)
    progress = svc.broadcasts.progress(push_uuid)
    if push is None or progress is None:
        return
    chat_id = push.report_chat_id or push.admin_id
    verb = RESUMED_JOBS[progress.kind]
    try:
        await app.bot.send_message(
            chat_id,
            f"♻️ The bot restarted: resuming the {verb} of "
            f"“{render.excerpt(push.current_text, push.content_type)}” where it stopped.",
        )
        status = await app.bot.send_message(
            chat_id,
            render.render_progress(progress),
            reply_markup=render.job_keyboard(push_uuid, JobState.RUNNING, progress.kind),
        )
    except TelegramError as exc:
        logger.warning("could not tell admin %s about resumed job %s: %s", chat_id, push_uuid, exc)
        return
    await asyncio.to_thread(svc.broadcasts.move_status_to, push_uuid, chat_id, status.message_id)
    watch_job(app, push_uuid, chat_id, status.message_id)


def run(app: AnyApp, settings: Settings, stop_signals: Sequence[int] | None = STOP_SIGNALS) -> None:
    """Serve until stopped: webhook when WEBHOOK_URL is set, long polling otherwise."""
    if settings.webhook_url is not None:
        app.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=settings.webhook_path,
            webhook_url=settings.webhook_url,
            secret_token=settings.webhook_secret,
            allowed_updates=ALLOWED_UPDATES,
            stop_signals=stop_signals,
            close_loop=False,
        )
    else:
        app.run_polling(
            allowed_updates=ALLOWED_UPDATES, stop_signals=stop_signals, close_loop=False
        )
