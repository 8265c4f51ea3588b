"""The engine's transport: its own event loop and `telegram.Bot`, driven from worker threads.

ptb 22 has no synchronous API, and the engine's workers are threads. So the engine owns one
private asyncio loop, in a thread of its own, with one `Bot` on it; a worker builds a request
(`transport.bot.copy_message(...)`, a coroutine) and `call`s it: the coroutine runs on that
loop and the worker waits for its answer, at most `REQUEST_DEADLINE_FACTOR` times the HTTP
timeout. The Application's own loop never waits on a broadcast, nor the other way round.

It owns: the loop thread, the ptb request object (made by a `RequestFactory`: by default
TELEGRAM_TRANSPORT's, pushbot.transport.make_request with BROADCAST_POOL_SIZE connections;
any `telegram.request.BaseRequest` may be plugged in), the `Bot`, and the `getMe`
probe the gateway asks while Telegram seems down. It does not pace, retry or classify
anything: that is the gateway's (pushbot.broadcast.gateway) and the delivery policy's
(pushbot.broadcast.delivery).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from telegram import Bot
from telegram.error import TelegramError, TimedOut
from telegram.request import BaseRequest

from pushbot.broadcast.gateway import answered_at_all
from pushbot.config import Settings
from pushbot.transport import make_request

T = TypeVar("T")

RequestFactory = Callable[[], BaseRequest]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# A worker gives up on a request after this many HTTP timeouts (connect, write, pool wait
# and read may each take one).
REQUEST_DEADLINE_FACTOR = 4


def default_request_factory(settings: Settings, timeout: float) -> RequestFactory:
    """The request object of TELEGRAM_TRANSPORT with BROADCAST_POOL_SIZE connections and
    `timeout` for every phase."""

    def make() -> BaseRequest:
        return make_request(
            settings.telegram_transport,
            pool_size=settings.effective_broadcast_pool_size,
            read_timeout=timeout,
            write_timeout=timeout,
            connect_timeout=timeout,
            # Sends in flight may outnumber connections: waiting for one is not an error.
            pool_timeout=timeout,
        )

    return make


class Transport:
    """Start once, `call` from any thread, close once."""

    def __init__(
        self,
        settings: Settings,
        request_timeout: float,
        request_factory: RequestFactory | None = None,
        loop_factory: LoopFactory = asyncio.new_event_loop,
    ) -> None:
        self._settings = settings
        self._new_loop = loop_factory
        self._deadline = REQUEST_DEADLINE_FACTOR * request_timeout
        self._make_request = request_factory or default_request_factory(settings, request_timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._request: BaseRequest | None = None
        self._bot: Bot | None = None

    @property
    def bot(self) -> Bot:
        """The engine's Bot; its methods make the coroutines `call` runs."""
        if self._bot is None:
            raise RuntimeError("the Broadcaster is not started")
        return self._bot

    def start(self) -> None:
        loop = self._new_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(
            target=_run_loop_forever, args=(loop,), name="pushbot-broadcast-loop", daemon=True
        )
        self._loop_thread.start()
        self._request = self._make_request()
        # Not Bot.initialize(): it calls getMe (a request at every start) and would put the
        # token into the InvalidToken message it raises.
        self._bot = Bot(
            self._settings.bot_token,
            base_url=self._settings.telegram_base_url,
            request=self._request,
        )
        asyncio.run_coroutine_threadsafe(self._request.initialize(), loop).result()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a request on the engine's loop and wait for its answer (or its error).
        TimedOut if no answer came within the deadline; the request is then cancelled."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=self._deadline)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimedOut("the engine gave up waiting for the request") from None

    def telegram_answers(self) -> bool:
        """The outage probe: does Telegram answer getMe (whatever it says)?"""
        try:
            self.call(self.bot.get_me())
        except TelegramError as exc:
            return answered_at_all(exc)
        return True

    def close(self) -> None:
        """Shut the request object down and stop the loop (after the workers are gone)."""
        loop = self._loop
        if loop is None or self._request is None:
            return
        asyncio.run_coroutine_threadsafe(self._request.shutdown(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join()
        loop.close()


def _run_loop_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()
