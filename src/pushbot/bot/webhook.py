"""Webhook mode: Telegram's POSTs received by an aiohttp server of ours, answered once handled.

ptb's `run_webhook` serves updates with tornado and answers each POST as soon as the update
is queued. Ours differs in two ways, both measured or needed:

- cost: aiohttp's server (already a dependency, for the Bot API transport) and orjson take
  about 0.12 ms less CPU per update than tornado with ptb's handler (bench/inbound.py's
  minimal-bot rows), a fifth of what a /start may cost in all;
- acknowledgement: a POST is answered only when its update was handled, i.e. its handler's
  writes (a subscription, the reply it owes) are committed. Until then Telegram keeps the
  update and sends it again if the process dies, so a crash loses no update that was in
  flight; and while the bot cannot keep up (the outbox is full, the database is down),
  Telegram holds the rest, at most `WEBHOOK_MAX_CONNECTIONS` of them in flight here.
  Telegram re-sends an update whose answer takes too long: a second POST of an update still
  being handled waits for the first one's outcome, and one already handled is answered at
  once (`RECENT_UPDATES` are remembered), so nothing is handled twice.

What it does as `run_webhook` did: the secret token checked before anything else (403
otherwise), setWebhook with the URL, the secret, the allowed updates and
`WEBHOOK_MAX_CONNECTIONS`; the Application's lifecycle (initialize, post_init, start, stop,
post_stop, shutdown, post_shutdown) in ptb's order on a loop that runs until
`Application.stop_running()` or a stop signal.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from telegram import Update
from telegram.ext import Application

from pushbot.config import Settings

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's maximum (its default and ptb's is 40). Telegram sends one update at a time per
# connection and waits for the answer, so a webhook handles at most max_connections / (the
# round trip to Telegram + the handling) updates a second: at 50 ms, 40 connections cap it
# at 800/s, 100 at 2,000/s.
WEBHOOK_MAX_CONNECTIONS = 100
RECENT_UPDATES = 4096
# How long a stop waits for the updates being handled (their POSTs unanswered after that:
# Telegram sends them again).
SHUTDOWN_GRACE = 10.0

AnyApp = Application[Any, Any, Any, Any, Any, Any]


class WebhookServer:
    """Receives Telegram's POSTs for `app` on WEBHOOK_LISTEN:WEBHOOK_PORT/WEBHOOK_PATH."""

    def __init__(self, app: AnyApp, settings: Settings) -> None:
        if settings.webhook_url is None or settings.webhook_secret is None:
            raise ValueError("webhook mode needs WEBHOOK_URL and WEBHOOK_SECRET")
        self._app = app
        self._settings = settings
        self._secret = settings.webhook_secret.encode()
        self._in_flight: dict[int, asyncio.Future[None]] = {}
        self._handled: OrderedDict[int, None] = OrderedDict()
        self._path = "/" + settings.webhook_path
        self._runner: web.ServerRunner | None = None

    async def start(self, allowed_updates: Sequence[str]) -> None:
        """Listen, then tell Telegram where to send updates (failures raise, for
        `pushbot.startup.keep_trying` to retry the start)."""
        # aiohttp's low-level server: one path, one method, no router or middlewares to pay
        # for on every update.
        server = web.Server(self._receive, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.webhook_listen, self._settings.webhook_port)
        await site.start()
        assert self._settings.webhook_url is not None
        await self._app.bot.set_webhook(
            url=self._settings.webhook_url,
            secret_token=self._settings.webhook_secret,
            allowed_updates=list(allowed_updates),
            max_connections=WEBHOOK_MAX_CONNECTIONS,
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _receive(self, request: web.BaseRequest) -> web.Response:
        if request.path != self._path:
            return web.Response(status=404)
        if request.method != "POST":
            return web.Response(status=405)
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            return web.Response(status=403)
        try:
            # read() refuses bodies over aiohttp's client_max_size (1 MB): a 400 too.
            data = orjson.loads(await request.read())
            update = Update.de_json(data, self._app.bot)
        except Exception:  # no Update in it: Telegram never sends that, someone else might
            logger.warning("webhook: a POST that is no update was refused")
            return web.Response(status=400)
        await self._handle_once(update)
        return web.Response()

    async def _handle_once(self, update: Update) -> None:
        update_id = update.update_id
        if update_id in self._handled:
            return
        earlier = self._in_flight.get(update_id)
        if earlier is not None:
            await asyncio.shield(earlier)
            return
        done = asyncio.get_running_loop().create_future()
        self._in_flight[update_id] = done
        try:
            await self._app.update_processor.process_update(update, self._handled_by(update, done))
            await asyncio.shield(done)
        finally:
            del self._in_flight[update_id]
        self._handled[update_id] = None
        if len(self._handled) > RECENT_UPDATES:
            self._handled.popitem(last=False)

    async def _handled_by(self, update: Update, done: asyncio.Future[None]) -> None:
        """The Application's handling of `update` (errors go to its error handlers), then
        `done` is set: the update processor may run this long after `process_update`
        returned (behind the chat's earlier updates)."""
        try:
            await self._app.process_update(update)
        finally:
            if not done.done():
                done.set_result(None)


def run_webhook(
    app: AnyApp,
    settings: Settings,
    allowed_updates: Sequence[str],
    stop_signals: Sequence[int] | None,
) -> None:
    """Serve until stopped, as `Application.run_webhook` does (with `close_loop=False`)."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:  # no loop set on this thread: as ptb's run_* do
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    server = WebhookServer(app, settings)
    for sig in stop_signals or ():
        loop.add_signal_handler(sig, _raise_system_exit)
    try:
        loop.run_until_complete(app.initialize())
        if app.post_init is not None:
            loop.run_until_complete(app.post_init(app))
        loop.run_until_complete(server.start(allowed_updates))
        loop.run_until_complete(app.start())
        # Application.stop_running() stops this loop (it does so for ptb's own run_*).
        loop.run_forever()
    except (KeyboardInterrupt, SystemExit):
        logger.debug("stop signal received: shutting down")
    finally:
        for sig in stop_signals or ():
            loop.remove_signal_handler(sig)
        loop.run_until_complete(server.stop())
        if app.running:
            loop.run_until_complete(app.stop())
            if app.post_stop is not None:
                loop.run_until_complete(app.post_stop(app))
        loop.run_until_complete(app.shutdown())
        if app.post_shutdown is not None:
            loop.run_until_complete(app.post_shutdown(app))


def _raise_system_exit() -> None:
    raise SystemExit
