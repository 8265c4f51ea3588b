"""Application wiring: one place that builds the bot, in the style of ptb's rules-bot.

ApplicationBuilder with Defaults and our shared rate limiter, post_init/post_shutdown for
the lifecycle (commands, the broadcaster, resuming interrupted broadcasts), one module per
feature, a central error handler.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import warnings
from collections.abc import Sequence
from typing import Any

from telegram import BotCommand, BotCommandScopeChat, LinkPreviewOptions
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, Defaults, filters
from telegram.warnings import PTBUserWarning

from pushbot.bot import errors, render
from pushbot.bot.admins import AdminsOnly, sent_by_admin
from pushbot.bot.edit import edit_conversation
from pushbot.bot.jobs import job_button_handler, post_report, watch_job
from pushbot.bot.ordering import PerChatOrderedProcessor
from pushbot.bot.outbox import OUTBOX_SENDERS, Outbox
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
from pushbot.bot.webhook import run_webhook
from pushbot.broadcast.gateway import SharedRateLimiter, TelegramGateway, answered_at_all
from pushbot.broadcast.progress import JobKind, JobReport, JobState
from pushbot.broadcast.service import BroadcastService
from pushbot.config import Settings, TelegramTransport
from pushbot.stats import StatsService
from pushbot.transport import TransportName, make_request

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
# The Application's own requests: the outbox's senders, each with one reply in flight, and
# as many again for what jumps the queue (admins' replies, button answers, status edits,
# reports, getMe probes), so that these never wait for a connection behind the replies (a
# full pool is a TimedOut after 1 s, not a queue). The broadcaster has its own pool of
# BROADCAST_POOL_SIZE.
APP_CONNECTION_POOL = 2 * OUTBOX_SENDERS
# One long poll at a time; a second connection for the next poll while a timed-out one is
# still being closed.
GET_UPDATES_CONNECTION_POOL = 2
GET_UPDATES_READ_TIMEOUT = 40.0
# The signals that stop `pushbot run`: ptb's documented default for run_polling/run_webhook,
# spelt out so that callers can also pass None (no handlers, for a bot off the main thread).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGABRT)

# The cyclic garbage collector's generations (Python's default: 700, 10, 10). Each update
# allocates a few dozen containers (ptb's objects), so by default a collection ran every
# ~20 updates and a full one, walking every object of ptb, SQLAlchemy and the rest, every
# ~2,000: a /start burst got 10 % more updates/s at 8 % less CPU each with these (bench/
# inbound.py, webhook, 0.54 -> 0.50 ms). Memory held by cycles waits a little longer.
GC_THRESHOLDS = (20_000, 20, 20)

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
    transport = transport_name(settings)
    outbox = Outbox(store, limit=settings.reply_queue_limit, booked=gateway.free.booked_ahead)
    app = (
        ApplicationBuilder()
        .token(settings.bot_token)
        .base_url(settings.telegram_base_url)
        .request(make_request(transport, pool_size=APP_CONNECTION_POOL))
        .get_updates_request(
            make_request(
                transport,
                pool_size=GET_UPDATES_CONNECTION_POOL,
                read_timeout=GET_UPDATES_READ_TIMEOUT,
            )
        )
        .defaults(
            Defaults(
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                allow_sending_without_reply=True,
            )
        )
        .rate_limiter(SharedRateLimiter(gateway))
        .concurrent_updates(
            PerChatOrderedProcessor(
                settings.update_concurrency,
                # Admins' updates overtake a rush of users' ones; users' wait while the
                # outbox is full.
                is_urgent=functools.partial(sent_by_admin, admin_ids=settings.admin_ids),
                admission=outbox.wait_for_room,
            )
        )
        .post_init(_post_init)
        .post_stop(_post_stop)
        .post_shutdown(_post_shutdown)
        .build()
    )
    # While Telegram is down, the Application's waiting sends ask getMe whether it is back.
    gateway.set_probes(async_probe=functools.partial(telegram_answers, app.bot))
    app.bot_data[SERVICES_KEY] = Services(
        settings=settings, store=store, broadcasts=broadcasts, stats=stats, outbox=outbox
    )
    app.bot_data["pushbot.relay"] = relay
    add_handlers(app, settings)
    return app


def transport_name(settings: Settings) -> TransportName:
    return "httpx" if settings.telegram_transport is TelegramTransport.HTTPX else "aiohttp"


async def telegram_answers(bot: Any) -> bool:
    try:
        await bot.get_me()
    except TelegramError as exc:
        return answered_at_all(exc)
    return True


def add_handlers(app: AnyApp, settings: Settings) -> None:
    admins = filters.User(user_id=settings.admin_ids, allow_empty=False)
    # Behind a cheap gate: users' updates need not ask the conversations (pushbot.bot.admins).
    for handler in (
        push_conversation(admins),
        undo_conversation(admins),
        edit_conversation(admins),
        stats_handler(admins),
        *scheduled_handlers(admins),
    ):
        app.add_handler(AdminsOnly(handler, settings.admin_ids))
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
    await svc.outbox.start(app.bot)
    await asyncio.to_thread(svc.broadcasts.start)
    resumed = await asyncio.to_thread(svc.broadcasts.resume_unfinished)
    for push_uuid in resumed:
        await announce_resumed(app, svc, push_uuid)
    # After the resumed jobs: a scheduled push due now waits for them.
    schedule_relay = ScheduleRelay(app, asyncio.get_running_loop())
    await asyncio.to_thread(svc.broadcasts.start_scheduler, schedule_relay)


async def _post_stop(app: AnyApp) -> None:
    # No handler runs any more: the replies being sent finish, the rest stays owed.
    svc: Services = app.bot_data[SERVICES_KEY]
    await svc.watchers.stop()
    await svc.outbox.stop()


async def _post_shutdown(app: AnyApp) -> None:
    svc: Services = app.bot_data[SERVICES_KEY]
    # When the start failed, post_stop did not run.
    await svc.watchers.stop()
    await svc.outbox.stop()
    await asyncio.to_thread(svc.broadcasts.shutdown)
    await asyncio.to_thread(svc.store.close)


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
    gc.set_threshold(*GC_THRESHOLDS)
    if settings.webhook_url is not None:
        # Ours, not ptb's run_webhook: cheaper, and it acknowledges an update only once it
        # was handled (pushbot.bot.webhook).
        run_webhook(app, settings, ALLOWED_UPDATES, stop_signals)
    else:
        app.run_polling(
            allowed_updates=ALLOWED_UPDATES, stop_signals=stop_signals, close_loop=False
        )
