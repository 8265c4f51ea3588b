"""The Bot API transports of pushbot.transport: ours on aiohttp, and ptb's HTTPXRequest beside it.

Every test drives the real ptb `Bot` over loopback, most of them once per transport to show
that the two behave alike: against the stand-in or, where it cannot show something (the
exact bytes of an upload or a download, answers that are no Bot API JSON), against a small
aiohttp.web server of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    InputMediaPhoto,
    MessageEntity,
)
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest, RequestData

from pushbot.logs import NOISY_LOGGERS, token_secrets
from pushbot.transport import (
    POOL_TIMEOUT_MESSAGE,
    TRANSPORTS,
    AiohttpRequest,
    TransportName,
    make_request,
)
from tests.fixtures.standin import StandInFactory
from tgstandin import StandIn, StandInConfig

T = TypeVar("T")
TOKEN = StandInConfig().token
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40 + b"\x00\r\n--boundary-like\r\n"
KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Open", callback_data="open:1")]])


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 30)

    return asyncio.run(bounded())


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> TransportName:
    name: TransportName = request.param
    return name


@pytest.fixture
def tg(standin_factory: StandInFactory) -> StandIn:
    """The stand-in without flood limits: these tests send to the same chat often."""
    return standin_factory(StandInConfig(limits_enabled=False))


def make_bot(
    transport: TransportName,
    base_url: str,
    pool_size: int = 4,
    **timeouts: float | None,
) -> Bot:
    return Bot(
        TOKEN,
        base_url=base_url,
        request=make_request(transport, pool_size=pool_size, **timeouts),
        get_updates_request=make_request(transport, pool_size=1, **timeouts),
    )


def seconds(value: object) -> float:
    """RetryAfter.retry_after: a timedelta (PTB_TIMEDELTA, set by pushbot) or int seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls a condition about the stand-in (which lives on another thread) from the loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, so connecting hangs
    until the client's connect timeout (the one way to see it on loopback)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def local_server(handler: Handler) -> AsyncIterator[str]:
    """An aiohttp.web server on 127.0.0.1 answering every path with `handler`; yields the
    base_url for ptb (".../bot")."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/bot"
    finally:
        await runner.cleanup()


def ok(result: object) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def sent_message(chat_id: int, message_id: int = 1, **content: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "date": 1_700_000_000,
        "chat": {"id": chat_id, "type": "private", "first_name": "B"},
        **content,
    }


# --- calls that work -----------------------------------------------------------------------------


def test_calls_succeed_and_arrive(tg: StandIn, transport: TransportName) -> None:
    user = tg.add_user()

    async def scenario() -> None:
        async with make_bot(transport, tg.base_url) as bot:
            assert (await bot.get_me()).username == "pushbot_test_bot"
            sent = await bot.send_message(
                user,
                "Hello, wörld",
                entities=[MessageEntity(MessageEntity.BOLD, 0, 5)],
                reply_markup=KEYBOARD,
            )
            assert sent.text == "Hello, wörld"
            assert sent.entities == (MessageEntity(MessageEntity.BOLD, 0, 5),)
            copied = await bot.copy_message(user, user, sent.message_id)
            assert copied.message_id > sent.message_id

    run(scenario())
    first, second = tg.inbox(user)
    assert first["text"] == second["text"] == "Hello, wörld"
    assert first["reply_markup"] == KEYBOARD.to_dict()
    assert [(c.method, c.status) for c in tg.calls()] == [
        ("getMe", 200),  # Bot.initialize
        ("getMe", 200),
        ("sendMessage", 200),
        ("copyMessage", 200),
    ]


def test_a_bot_can_be_started_again_after_a_shutdown(tg: StandIn, transport: TransportName) -> None:
    user = tg.add_user()
    bot = make_bot(transport, tg.base_url)

    async def scenario() -> None:
        for text in ("first life", "second life"):
            async with bot:
                await bot.send_message(user, text)

    run(scenario())
    assert [m["text"] for m in tg.inbox(user)] == ["first life", "second life"]


def test_long_polls_wait_beyond_the_read_timeout(tg: StandIn, transport: TransportName) -> None:
    async def scenario() -> float:
        async with make_bot(transport, tg.base_url, read_timeout=0.3) as bot:
            started = time.monotonic()
            assert await bot.get_updates(timeout=1) == ()
            return time.monotonic() - started

    # ptb adds the poll's wait to the request's read_timeout: no TimedOut after 0.3 s.
    assert run(scenario()) >= 0.9


# --- Telegram's refusals -------------------------------------------------------------------------


def test_telegram_errors_become_ptb_exceptions(standin: StandIn, transport: TransportName) -> None:
    user, blocked = standin.add_user(), standin.add_user()
    standin.set_user_state(blocked, "blocked")
    standin.set_limits(per_chat_rate=1.0, per_chat_burst=1, retry_after_penalty=4)

    async def scenario() -> RetryAfter:
        async with make_bot(transport, standin.base_url) as bot:
            with pytest.raises(Forbidden, match="blocked by the user"):
                await bot.send_message(blocked, "x")
            with pytest.raises(BadRequest, match=r"(?i)chat not found"):
                await bot.send_message(999, "x")
            await bot.send_message(user, "one")
            with pytest.raises(RetryAfter) as flood:
                await bot.send_message(user, "two, too soon")
            standin.inject_faults(kind="502", next_calls=1, methods={"sendMessage"})
            with pytest.raises(NetworkError, match="Bad Gateway") as bad_gateway:
                await bot.send_message(999, "x")
            assert not isinstance(bad_gateway.value, TimedOut)
            return flood.value

    flood = run(scenario())
    assert seconds(flood.retry_after) == 1 + 4  # the stand-in's wait plus the penalty
    assert standin.count("sendMessage", 429) == 1
    assert standin.count("sendMessage", 403) == 1
    assert standin.count("sendMessage", 400) == 1
    assert standin.count("sendMessage", 502) == 1


def test_answers_that_are_no_bot_api_json(transport: TransportName) -> None:
    redirected_to: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        method = request.path.rsplit("/", 1)[-1]
        if method == "getMe":  # a proxy's error page
            return web.Response(
                status=502, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        if method == "getChat":  # not JSON at all, with a 200
            return web.Response(text="hello", content_type="text/plain")
        if method == "sendMessage":  # JSON, but not UTF-8: ptb replaces the bad byte
            body = b'{"ok":false,"error_code":400,"description":"Bad Request: caf\xe9 closed"}'
            return web.Response(status=400, body=body, content_type="application/json")
        if method == "redirected":
            redirected_to.append(request.path)
            return ok(True)
        raise web.HTTPFound(location=str(request.url.with_path("/redirected")))

    async def scenario() -> None:
        async with local_server(handler) as base_url:
            bot = make_bot(transport, base_url)
            async with bot.request:
                with pytest.raises(NetworkError, match=r"Bad Gateway \(502\)"):
                    await bot.get_me()
                with pytest.raises(TelegramError, match="Invalid server response"):
                    await bot.get_chat(1)
                with pytest.raises(BadRequest, match="af\ufffd closed"):  # "Caf…": ptb capitalises
                    await bot.send_message(1, "x")
                with pytest.raises(NetworkError, match=r"Found \(302\)"):
                    await bot.close()  # any method: the server redirects it

    run(scenario())
    assert redirected_to == []  # a redirect is ptb's to judge, never followed


# --- timeouts ------------------------------------------------------------------------------------


def test_a_read_timeout_becomes_timed_out(tg: StandIn, transport: TransportName) -> None:
    user = tg.add_user()
    tg.inject_faults(kind="timeout", next_calls=1, hold=3.0, methods={"sendMessage"})

    async def scenario() -> float:
        async with make_bot(transport, tg.base_url, read_timeout=0.3) as bot:
            started = time.monotonic()
            with pytest.raises(TimedOut):
                await bot.send_message(user, "lost")
            waited = time.monotonic() - started
            await bot.send_message(user, "after")
            return waited

    assert 0.25 <= run(scenario()) < 2.0
    assert [m["text"] for m in tg.inbox(user)] == ["after"]


def test_per_call_timeouts_override_the_defaults(tg: StandIn, transport: TransportName) -> None:
    user = tg.add_user()

    async def scenario() -> None:
        async with make_bot(transport, tg.base_url, read_timeout=5.0) as patient:
            tg.inject_faults(kind="timeout", next_calls=1, hold=3.0, methods={"sendMessage"})
            started = time.monotonic()
            with pytest.raises(TimedOut):
                await patient.send_message(user, "held", read_timeout=0.3)
            assert time.monotonic() - started < 2.0
        async with make_bot(transport, tg.base_url, read_timeout=0.2) as hasty:
            tg.set_latency(0.6, 0.6)
            with pytest.raises(TimedOut):
                await hasty.send_message(user, "too slow for the default")
            await hasty.send_message(user, "a longer read timeout", read_timeout=3.0)
            await hasty.send_message(user, "no read timeout", read_timeout=None)

    run(scenario())
    tg.wait_for(lambda: len(tg.inbox(user)) == 3)  # the timed-out one was still carried out
    assert [m["text"] for m in tg.inbox(user)][1:] == ["a longer read timeout", "no read timeout"]


def test_a_connect_timeout_becomes_timed_out(transport: TransportName) -> None:
    async def scenario(port: int) -> list[float]:
        waited = []
        base_url = f"http://127.0.0.1:{port}/bot"
        default_short = make_bot(transport, base_url, connect_timeout=0.3)
        default_long = make_bot(transport, base_url, connect_timeout=30.0)
        for bot, call in (
            (default_short, default_short.get_me()),
            (default_long, default_long.get_me(connect_timeout=0.3)),
        ):
            async with bot.request:
                started = time.monotonic()
                with pytest.raises(TimedOut):
                    await call
                waited.append(time.monotonic() - started)
        return waited

    with unanswered_port() as port:
        waited = run(scenario(port))
    assert all(0.25 <= seconds < 2.0 for seconds in waited), waited


def test_connection_refused_is_a_network_error(transport: TransportName) -> None:
    async def scenario() -> NetworkError:
        bot = make_bot(transport, f"http://127.0.0.1:{free_port()}/bot")
        async with bot.request:
            with pytest.raises(NetworkError) as refused:
                await bot.get_me()
        return refused.value

    error = run(scenario())
    assert not isinstance(error, TimedOut)
    # pushbot.startup names the first socket error in the chain ("connection refused").
    assert isinstance(first_socket_error(error), ConnectionRefusedError)


def first_socket_error(error: BaseException) -> OSError | None:
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


def test_a_full_pool_gives_timed_out_and_sends_nothing(
    tg: StandIn, transport: TransportName
) -> None:
    user = tg.add_user()
    tg.inject_faults(kind="timeout", next_calls=1, hold=1.0, methods={"sendMessage"})

    async def scenario() -> BaseException:
        async with make_bot(transport, tg.base_url, pool_size=1, read_timeout=5.0) as bot:
            held = asyncio.ensure_future(bot.send_message(user, "holds the only connection"))
            await wait_until(lambda: tg.count("sendMessage") == 1)
            with pytest.raises(TimedOut, match="Pool timeout") as full:
                await bot.send_message(user, "no connection free", pool_timeout=0.2)
            assert str(full.value) == POOL_TIMEOUT_MESSAGE
            assert tg.count("sendMessage") == 1  # the second was never sent
            # The held call is dropped by the stand-in (no answer) after its hold; a call
            # that may wait for a connection (pool_timeout=None) goes out once it is free.
            waiting = asyncio.ensure_future(
                bot.send_message(user, "waits for the connection", pool_timeout=None)
            )
            outcome = (await asyncio.gather(held, return_exceptions=True))[0]
            await waiting
            assert isinstance(outcome, BaseException)
            return outcome

    dropped = run(scenario())
    assert isinstance(dropped, NetworkError) and not isinstance(dropped, TimedOut)
    assert [m["text"] for m in tg.inbox(user)] == ["waits for the connection"]


# --- uploads -------------------------------------------------------------------------------------


def test_an_upload_arrives_at_the_stand_in(tg: StandIn, transport: TransportName) -> None:
    user = tg.add_user()

    async def scenario() -> None:
        async with make_bot(transport, tg.base_url) as bot:
            sent = await bot.send_photo(user, photo=PNG, caption="A photo", reply_markup=KEYBOARD)
            assert sent.caption == "A photo" and sent.photo

    run(scenario())
    [call] = tg.calls("sendPhoto")
    assert call.status == 200
    assert call.params["photo"].size == len(PNG)
    assert tg.inbox(user)[0]["reply_markup"] == KEYBOARD.to_dict()


def test_uploads_arrive_intact(transport: TransportName, tmp_path: Path) -> None:
    photo_file = tmp_path / "sunset.png"
    photo_file.write_bytes(PNG)
    document = b"%PDF-1.4\n" + bytes(range(256)) * 100
    received: dict[str, dict[str, Any]] = {}

    async def handler(request: web.Request) -> web.Response:
        method = request.path.rsplit("/", 1)[-1]
        form = await request.post()
        fields: dict[str, Any] = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                fields[name] = (value.filename, value.content_type, value.file.read())
            else:
                fields[name] = value
        received[method] = fields
        if method == "sendMediaGroup":
            return ok([sent_message(1, 10), sent_message(1, 11)])
        return ok(sent_message(1))

    async def scenario() -> None:
        async with local_server(handler) as base_url:
            bot = make_bot(transport, base_url)
            async with bot.request:
                with photo_file.open("rb") as photo:
                    await bot.send_photo(1, photo=photo, caption="Ünïcode ✓", reply_markup=KEYBOARD)
                await bot.send_document(1, document=InputFile(document, filename="report.pdf"))
                await bot.send_media_group(
                    1, [InputMediaPhoto(PNG, caption="one"), InputMediaPhoto(PNG[::-1])]
                )

    run(scenario())
    photo = received["sendPhoto"]
    assert photo["chat_id"] == "1"
    assert photo["caption"] == "Ünïcode ✓"
    assert json.loads(photo["reply_markup"]) == KEYBOARD.to_dict()
    assert photo["photo"] == ("sunset.png", "image/png", PNG)
    assert received["sendDocument"]["document"] == ("report.pdf", "application/pdf", document)
    group = received["sendMediaGroup"]
    media = json.loads(group["media"])
    assert [m["caption"] for m in media if "caption" in m] == ["one"]
    attached = [m["media"].removeprefix("attach://") for m in media]
    assert [group[name][2] for name in attached] == [PNG, PNG[::-1]]


def test_a_file_download_arrives_intact(transport: TransportName) -> None:
    content = bytes(range(256)) * 64
    downloads: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/getFile"):
            file = {"file_id": "F", "file_unique_id": "U", "file_path": "photos/file_1.jpg"}
            return ok(file | {"file_size": len(content)})
        downloads.append((request.method, request.path))
        return web.Response(body=content, content_type="image/jpeg")

    async def scenario() -> bytearray:
        async with local_server(handler) as base_url:
            origin = base_url.removesuffix("/bot")
            bot = Bot(
                TOKEN,
                base_url=base_url,
                base_file_url=f"{origin}/file/bot",
                request=make_request(transport, pool_size=2),
            )
            async with bot.request:
                file = await bot.get_file("F")
                return await file.download_as_bytearray()

    assert run(scenario()) == content
    assert downloads == [("GET", f"/file/bot{TOKEN}/photos/file_1.jpg")]


# --- the token -----------------------------------------------------------------------------------


def test_the_token_is_in_no_error_text_and_no_log_record(
    tg: StandIn, transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    user, blocked = tg.add_user(), tg.add_user()
    tg.set_user_state(blocked, "blocked")
    errors: list[BaseException] = []

    async def expect_error(call: Awaitable[object]) -> None:
        try:
            await call
        except TelegramError as exc:
            errors.append(exc)
        else:
            raise AssertionError("the call was expected to fail")

    async def scenario(bot: Bot, broken_bots: list[Bot]) -> None:
        async with bot:
            await bot.send_message(user, "fine")
            await expect_error(bot.send_message(blocked, "403"))
            tg.inject_faults(kind="500", next_calls=1, methods={"sendMessage"})
            await expect_error(bot.send_message(user, "500"))
            tg.inject_faults(kind="timeout", next_calls=1, hold=3.0, methods={"sendMessage"})
            await expect_error(bot.send_message(user, "read timeout", read_timeout=0.3))
            tg.inject_faults(kind="timeout", next_calls=1, hold=0.5, methods={"sendMessage"})
            held = asyncio.ensure_future(bot.send_message(user, "dropped"))
            await wait_until(lambda: tg.count("sendMessage", 0) == 2)
            await expect_error(bot.send_message(user, "pool timeout", pool_timeout=0.1))
            await expect_error(held)
        for broken in broken_bots:
            async with broken.request:
                await expect_error(broken.get_me())

    with unanswered_port() as port:
        # Built before the log level goes down: ptb's Bot logs its URL once at DEBUG when
        # constructed (pushbot.logs redacts that line); everything after must be clean.
        bot = make_bot(transport, tg.base_url, pool_size=1)
        broken_bots = [
            make_bot(transport, f"http://127.0.0.1:{free_port()}/bot"),  # refused
            make_bot(transport, "ftp://127.0.0.1:1/bot"),
            make_bot(transport, "http://127.0.0.1:port/bot"),
            make_bot(transport, "http://[::1/bot"),
            make_bot(transport, f"http://127.0.0.1:{port}/bot", connect_timeout=0.2),
        ]
        for name in NOISY_LOGGERS:  # as pushbot.logs runs it: httpx logs every URL at INFO
            caplog.set_level(logging.WARNING, logger=name)
        caplog.set_level(logging.DEBUG)  # last: each call also sets the capturing handler's
        run(scenario(bot, broken_bots))
    assert len(errors) == 10
    texts = ["".join(traceback.format_exception(error)) for error in errors]
    texts += [record.getMessage() for record in caplog.records]
    texts += [record.exc_text or "" for record in caplog.records]
    assert any("sendMessage" in record.getMessage() for record in caplog.records)  # ptb's DEBUG
    for secret in token_secrets(TOKEN):
        assert not [text for text in texts if secret in text]


# --- our request's own contract ------------------------------------------------------------------


def test_make_request_builds_either_transport_with_the_same_arguments() -> None:
    ours = make_request("aiohttp", pool_size=7, read_timeout=12.5)
    theirs = make_request("httpx", pool_size=7, read_timeout=12.5)
    assert isinstance(ours, AiohttpRequest) and ours.connection_pool_size == 7
    assert isinstance(theirs, HTTPXRequest)
    assert ours.read_timeout == theirs.read_timeout == 12.5
    assert make_request("aiohttp", pool_size=1, read_timeout=None).read_timeout is None
    with pytest.raises(ValueError, match="unknown transport 'curl'"):
        make_request("curl", pool_size=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connection_pool_size"):
        AiohttpRequest(connection_pool_size=0)


def test_a_request_needs_initialize_and_survives_a_double_shutdown(tg: StandIn) -> None:
    request = AiohttpRequest(connection_pool_size=1)
    url = f"{tg.base_url}{tg.token}/getMe"

    async def scenario() -> None:
        with pytest.raises(NetworkError, match="AiohttpRequest is not initialized"):
            await request.post(url, RequestData())
        async with request:
            me = await request.post(url, RequestData())
            assert isinstance(me, dict) and me["username"] == "pushbot_test_bot"
        await request.shutdown()
        with pytest.raises(NetworkError, match="AiohttpRequest is not initialized"):
            await request.post(url, RequestData())

    run(scenario())
