"""The HTTP side: tornado's bare HTTPServer with one request callback, on the stand-in's loop.

Requests that need no waiting (the vast majority) are answered synchronously inside the
callback; only latency, injected timeouts, long polls and webhook deliveries become tasks.
That keeps the per-request cost to parsing, one short lock and one json.dumps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

from tgstandin.errors import NOT_FOUND, UNAUTHORIZED, ApiError, bad_request
from tgstandin.methods import BotApi
from tgstandin.spec import Spec, Upload, raise_if_unsupported
from tgstandin.updates import POLL_CONFLICT, QueuedUpdate
from tgstandin.world import FaultPlan, World, unix_now

log = logging.getLogger(__name__)

BOT_PREFIX = "/bot"
CONTROL_PREFIX = "/_standin/"
ControlCall = Callable[[str, dict[str, Any]], Any]

_FAULT_ERRORS = {
    "500": ApiError(500, "Internal Server Error"),
    "502": ApiError(502, "Bad Gateway"),
}
_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
_TIMEOUT_DESCRIPTION = "timeout: request dropped without a response"


@dataclass(slots=True, eq=False)
class _Poll:
    """A getUpdates request waiting for updates."""

    future: asyncio.Future[None]
    conflict: bool = False


def respond(request: httputil.HTTPServerRequest, status: int, body: bytes) -> None:
    connection = request.connection
    if connection is None:
        return
    headers = httputil.HTTPHeaders(
        {"Content-Type": "application/json", "Content-Length": str(len(body))}
    )
    start_line = httputil.ResponseStartLine("HTTP/1.1", status, _reason(status))
    try:
        connection.write_headers(start_line, headers, body)
        connection.finish()
    except (StreamClosedError, OSError):
        pass  # the client gave up (e.g. its read timeout fired during a long poll)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def drop_connection(request: httputil.HTTPServerRequest) -> None:
    connection = request.connection
    close = getattr(connection, "close", None)
    if callable(close):
        close()


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("strings must be encoded in UTF-8") from None


def raw_params(request: httputil.HTTPServerRequest) -> tuple[dict[str, Any], dict[str, Upload]]:
    """Query string + form/multipart/JSON body, as Telegram accepts all of them."""
    raw: dict[str, Any] = {k: _decode(v[-1]) for k, v in request.query_arguments.items()}
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            raise bad_request("can't parse JSON request body") from None
        if not isinstance(body, dict):
            raise bad_request("JSON request body must be an object")
        raw.update(body)
    else:
        raw.update((k, _decode(v[-1])) for k, v in request.body_arguments.items())
    uploads = {
        name: Upload(files[0].filename, files[0].content_type, len(files[0].body))
        for name, files in request.files.items()
        if files
    }
    return raw, uploads


class HttpServer:
    def __init__(
        self, world: World, api: BotApi, spec: Spec, control: ControlCall | None = None
    ) -> None:
        self.world = world
        self.api = api
        self.spec = spec
        self.control = control
        self.token = world.config.token
        self._tasks: set[asyncio.Task[None]] = set()
        self._polls: set[_Poll] = set()
        self._http: HTTPServer | None = None
        self._client: aiohttp.ClientSession | None = None
        self._stopping = False

    # -- lifecycle (on the loop) --------------------------------------------------------------

    async def listen(self, sockets: list[socket.socket]) -> None:
        self._http = HTTPServer(self.handle_request, max_body_size=64 * 1024 * 1024)
        self._http.add_sockets(sockets)

    async def shutdown(self) -> None:
        self._stopping = True
        if self._http is not None:
            self._http.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
        if self._http is not None:
            await self._http.close_all_connections()

    def _spawn(
        self,
        coroutine: Coroutine[Any, Any, None],
        request: httputil.HTTPServerRequest | None = None,
    ) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, request))

    def _task_done(
        self, task: asyncio.Task[None], request: httputil.HTTPServerRequest | None
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("stand-in task failed", exc_info=task.exception())
        if request is not None:
            # A stand-in bug: answer rather than leave the client hanging until its timeout.
            respond(request, 500, _FAULT_ERRORS["500"].body())

    # -- routing ----------------------------------------------------------------------------

    def handle_request(self, request: httputil.HTTPServerRequest) -> None:
        try:
            self._route(request)
        except Exception:  # a stand-in bug: answer rather than let tornado drop the connection
            log.exception("stand-in failed on %s", request.path)
            respond(request, 500, _FAULT_ERRORS["500"].body())

    def _route(self, request: httputil.HTTPServerRequest) -> None:
        path = request.path
        if path.startswith(BOT_PREFIX):
            delay = self.world.draw_latency()
            # The latency is the network's: a request reaches "Telegram" `delay` after it
            # came in, and that moment, not when this process gets round to it, is what the
            # flood limits count and the call record says. (After a pause of this process,
            # a garbage collection say, every request whose latency ran out meanwhile is
            # handled at once; counted then, they would look like a burst the bot never sent.)
            reached_at = time.monotonic() + delay
            if delay > 0.0:
                self._spawn(self._after(delay, request, path, reached_at), request)
            else:
                self._bot_request(request, path, reached_at)
        elif path.startswith(CONTROL_PREFIX) and self.control is not None:
            self._control_request(request, path[len(CONTROL_PREFIX) :])
        else:
            respond(request, 404, NOT_FOUND.body())

    async def _after(
        self, delay: float, request: httputil.HTTPServerRequest, path: str, reached_at: float
    ) -> None:
        await asyncio.sleep(delay)
        self._bot_request(request, path, reached_at)

    def _reject(
        self,
        request: httputil.HTTPServerRequest,
        method: str,
        params: dict[str, Any],
        err: ApiError,
    ) -> None:
        with self.world.lock:
            self.world.record(method, params, err.code, err.description, time.monotonic())
        respond(request, err.code, err.body())

    def _bot_request(
        self, request: httputil.HTTPServerRequest, path: str, reached_at: float
    ) -> None:
        token, _, name = path[len(BOT_PREFIX) :].partition("/")
        if token != self.token:
            # Telegram: 401 for a well-formed but wrong token, 404 for a malformed one.
            self._reject(request, name, {}, UNAUTHORIZED if _TOKEN.fullmatch(token) else NOT_FOUND)
            return
        method = self.spec.canonical_method(name)
        if method is None:
            self._reject(request, name, {}, NOT_FOUND)
            return
        params: dict[str, Any] = {}
        try:
            raise_if_unsupported(self.spec, method)
            raw, uploads = raw_params(request)
            params = raw
            params = self.spec.parse_params(method, raw, uploads)
        except ApiError as err:
            self._reject(request, method, params, err)
            return
        with self.world.lock:
            fault = self.world.draw_fault(method, params.get("chat_id"))
        if fault is not None:
            self._apply_fault(request, method, params, fault)
        elif method == "getUpdates":
            self._spawn(self._get_updates(request, params), request)
        else:
            status, body = self.api.execute(method, params, reached_at)
            respond(request, status, body)

    # -- faults -----------------------------------------------------------------------------

    def _apply_fault(
        self,
        request: httputil.HTTPServerRequest,
        method: str,
        params: dict[str, Any],
        fault: FaultPlan,
    ) -> None:
        error = _FAULT_ERRORS.get(fault.kind)
        if error is not None:
            self._reject(request, method, params, error)
            return
        if fault.kind == "lost_response":
            self.api.execute(method, params)  # applied, but the client never hears of it
        else:
            with self.world.lock:
                self.world.record(method, params, 0, _TIMEOUT_DESCRIPTION, time.monotonic())
        hold = fault.hold if fault.hold is not None else self.world.config.timeout_hold
        self._spawn(self._hold_then_drop(request, hold))

    async def _hold_then_drop(self, request: httputil.HTTPServerRequest, hold: float) -> None:
        try:
            await asyncio.sleep(hold)
        finally:
            drop_connection(request)

    # -- getUpdates -------------------------------------------------------------------------

    async def _get_updates(
        self, request: httputil.HTTPServerRequest, params: dict[str, Any]
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, params.get("timeout", 0))
        # Telegram ends an older long poll when a newer one arrives.
        for other in self._polls:
            other.conflict = True
            _wake(other)
        poll = _Poll(loop.create_future())
        self._polls.add(poll)
        try:
            batch = await self._wait_for_batch(poll, params, deadline)
        except ApiError as err:
            self._reject(request, "getUpdates", params, err)
            return
        finally:
            self._polls.discard(poll)
        body = b'{"ok":true,"result":[' + ",".join(u.body for u in batch).encode() + b"]}"
        with self.world.lock:
            self.world.record("getUpdates", params, 200, None, time.monotonic())
        respond(request, 200, body)

    async def _wait_for_batch(
        self, poll: _Poll, params: dict[str, Any], deadline: float
    ) -> list[QueuedUpdate]:
        loop = asyncio.get_running_loop()
        while True:
            with self.world.lock:
                batch = self.api.take_updates(params)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            poll.future = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poll.future, remaining)
            if poll.conflict:
                raise POLL_CONFLICT

    def on_updates_changed(self) -> None:
        """Runs on the loop whenever updates were queued or their routing changed."""
        if self._stopping:
            return
        for poll in self._polls:
            _wake(poll)
        self._pump_webhook()

    # -- webhook delivery -------------------------------------------------------------------

    def _pump_webhook(self) -> None:
        queue = self.world.updates
        with self.world.lock:
            webhook = queue.webhook
            if webhook is None:
                return
            generation = webhook.generation
            chats = []
            while (chat_key := queue.claim_ready_chat(generation)) is not None:
                chats.append(chat_key)
        for chat_key in chats:
            self._spawn(self._webhook_worker(generation, chat_key))

    async def _webhook_worker(self, generation: int, first_chat: int) -> None:
        """Delivers one chat's updates in order, then moves on to the next waiting chat, so
        at most max_connections chats are in flight."""
        queue = self.world.updates
        chat_key: int | None = first_chat
        while chat_key is not None:
            while True:
                with self.world.lock:
                    update = queue.next_for_chat(generation, chat_key)
                    webhook = queue.webhook
                if update is None or webhook is None:
                    break
                await self._deliver(generation, update, webhook.url, webhook.secret_token)
                with self.world.lock:
                    queue.delivered(generation, update)
            with self.world.lock:
                chat_key = queue.claim_ready_chat(generation)

    async def _deliver(
        self, generation: int, update: QueuedUpdate, url: str, secret: str | None
    ) -> None:
        config = self.world.config
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        body = update.body.encode()
        backoff = config.webhook_backoff
        for _attempt in range(max(1, config.webhook_max_attempts)):
            if self._stopping or not self._still_current(generation):
                return
            error = await self._post(url, body, headers)
            if error is None:
                return
            with self.world.lock:
                self.world.updates.record_webhook_error(generation, unix_now(), error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, config.webhook_max_backoff)
        log.warning("stand-in gave up delivering update %s to %s", update.update_id, url)

    def _still_current(self, generation: int) -> bool:
        with self.world.lock:
            webhook = self.world.updates.webhook
            return webhook is not None and webhook.generation == generation

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        # aiohttp, not httpx: httpcore's pool bookkeeping grows with connections × waiting
        # requests, and at a few hundred deliveries a second over 40 connections it used
        # two thirds of the stand-in's CPU (py-spy), making the stand-in the bottleneck of
        # the inbound benchmark.
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ssl=False),
                timeout=aiohttp.ClientTimeout(total=self.world.config.webhook_timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        try:
            async with self._client.post(url, data=body, headers=headers) as response:
                await response.read()
                status, reason = response.status, response.reason
        except TimeoutError:
            return "Read timeout expired"
        except aiohttp.ClientConnectorError:
            return "Connection refused"
        except aiohttp.ClientError as err:
            return f"Connection error: {err.__class__.__name__}"
        if 200 <= status < 300:
            return None
        return f"Wrong response from the webhook: {status} {reason}"

    # -- control endpoint (process mode) -----------------------------------------------------

    def _control_request(self, request: httputil.HTTPServerRequest, name: str) -> None:
        assert self.control is not None
        try:
            kwargs = json.loads(request.body) if request.body.strip() else {}
            if not isinstance(kwargs, dict):
                raise TypeError("the control body must be a JSON object of keyword arguments")
            result = self.control(name, kwargs)
        except Exception as err:  # reported to the remote caller, who re-raises it
            body = json.dumps({"error": str(err), "type": type(err).__name__}).encode()
            respond(request, 400, body)
            return
        respond(request, 200, json.dumps({"result": result}).encode())


def _wake(poll: _Poll) -> None:
    if not poll.future.done():
        poll.future.set_result(None)
