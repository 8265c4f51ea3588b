"""How pushbot's `telegram.Bot`s talk HTTP to the Bot API: ptb's HTTPXRequest or ours on aiohttp.

`AiohttpRequest` is a `telegram.request.BaseRequest`, the public way to give ptb another
HTTP library. It exists for speed: in bench/transport.py a ptb Bot on it makes about twelve
times the calls per second of ptb's default HTTPXRequest for a twelfth of the CPU per call
(0.1 ms instead of 1.2 ms; httpcore's connection pool does bookkeeping proportional to
connections × waiting requests on every request). Towards ptb it behaves as HTTPXRequest
does: the same arguments and defaults, TimedOut for timeouts (a full pool included),
NetworkError for connection and other transport failures, and every HTTP answer handed to
ptb as (status, body), so that ptb's own code raises BadRequest, Forbidden, RetryAfter…
from Telegram's JSON. HTTPX stays selectable (`make_request("httpx", ...)`) for proxies:
this one has no proxy option and ignores HTTP(S)_PROXY.

Bodies: a request without files is JSON (`RequestData.parameters` with orjson, the Bot
API's documented `application/json`; HTTPXRequest sends the same values form-encoded, which
costs ~10% more CPU per call here); one with files is multipart/form-data as HTTPXRequest
sends it (`json_parameters` as fields, `multipart_data` as files). Answers are parsed with
orjson through ptb's `parse_json_payload` hook (another ~5%). One difference in uploads: a
file handle given as `InputFile(f, read_file_handle=False)` is closed by aiohttp once sent
(httpx leaves it open, at its end); with ptb's default, the bytes read up front, nothing
differs. pushbot itself uploads nothing.

ptb's four timeouts on aiohttp, per call (BaseRequest.DEFAULT_NONE: the constructor's value;
None: no limit):

- pool_timeout: the wait for one of the `connection_pool_size` connections. aiohttp folds
  that wait into its `connect` timeout, so it happens on a semaphore of ours first; running
  out gives TimedOut saying the pool was full and nothing was sent (HTTPX's PoolTimeout).
- connect_timeout → `ClientTimeout.connect`: DNS, TCP and TLS of a new connection (nothing
  else is left in it, the pool wait being behind us).
- read_timeout → `ClientTimeout.sock_read`: the longest silence while the answer is read,
  counted from the end of the upload; httpx's read timeout too is per read.
- write_timeout: aiohttp cannot time one write. A request without files is a few KB that
  the kernel's socket buffer takes at once, so it never waits on a write and gets no write
  bound (a total timer would cost ~5% CPU per call for nothing). A request with files (whose
  default is `media_write_timeout`, as with HTTPX) is bounded as a whole instead:
  `ClientTimeout.total` = connect + write + read, so a big file on a slow link needs a
  longer media_write_timeout than httpx, which bounds each write, would.

The bot token is part of every Bot API URL. Nothing here logs a URL; aiohttp's messages
that hold it (an invalid URL, a failed body write) lose the URL's path but for the method
before they become a ptb error, and aiohttp's exception is not chained (a traceback would
print its text), but for a connection failure's socket error, which names no URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import IO, Any, Final, Literal, TypeAlias

import aiohttp
import orjson
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from pushbot.config import TelegramTransport

TransportName: TypeAlias = Literal["aiohttp", "httpx"]
TRANSPORTS: Final[tuple[TransportName, ...]] = ("aiohttp", "httpx")

# HTTPXRequest's defaults, so that both transports behave the same when nothing is said.
DEFAULT_READ_TIMEOUT: Final = 5.0
DEFAULT_WRITE_TIMEOUT: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_POOL_TIMEOUT: Final = 1.0
DEFAULT_MEDIA_WRITE_TIMEOUT: Final = 20.0

POOL_TIMEOUT_MESSAGE: Final = (
    "Pool timeout: All connections in the connection pool are occupied. Request was *not* "
    "sent to Telegram. Consider adjusting the connection pool size or the pool timeout."
)
_JSON_HEADERS: Final = {"Content-Type": "application/json"}

# ptb's RequestData.multipart_data values: (file name, content, MIME type).
_FilePart: TypeAlias = tuple[str, bytes | IO[bytes], str]
_Timeout: TypeAlias = float | None


class AiohttpRequest(BaseRequest):
    """A `telegram.request.BaseRequest` on one `aiohttp.ClientSession` (HTTP/1.1, keep-alive).

    The arguments mean what they mean for `telegram.request.HTTPXRequest`, with the same
    defaults; the module docstring says how each timeout maps onto aiohttp. The session is
    made by `initialize()` on the running loop and closed by `shutdown()`; an instance can be
    initialized again after a shutdown.
    """

    __slots__ = (
        "_connect_timeout",
        "_media_write_timeout",
        "_pool_size",
        "_pool_timeout",
        "_read_timeout",
        "_session",
        "_slots",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: _Timeout = DEFAULT_READ_TIMEOUT,
        write_timeout: _Timeout = DEFAULT_WRITE_TIMEOUT,
        connect_timeout: _Timeout = DEFAULT_CONNECT_TIMEOUT,
        pool_timeout: _Timeout = DEFAULT_POOL_TIMEOUT,
        media_write_timeout: _Timeout = DEFAULT_MEDIA_WRITE_TIMEOUT,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError(f"connection_pool_size must be at least 1, not {connection_pool_size}")
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        del write_timeout  # accepted as HTTPXRequest takes it; see the module docstring
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def read_timeout(self) -> float | None:
        """The read timeout used when a call passes none (ptb adds a long poll's wait to it)."""
        return self._read_timeout

    @property
    def connection_pool_size(self) -> int:
        return self._pool_size

    async def initialize(self) -> None:
        if self._session is not None and not self._session.closed:
            return
        connector = aiohttp.TCPConnector(limit=self._pool_size)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.USER_AGENT},
            # The Bot API sets no cookies; the jar would only cost time on every answer.
            cookie_jar=aiohttp.DummyCookieJar(),
            # The per-call timeouts below replace aiohttp's default 5-minute total.
            timeout=aiohttp.ClientTimeout(),
        )
        self._slots = asyncio.Semaphore(self._pool_size)

    async def shutdown(self) -> None:
        session, self._session, self._slots = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: _Timeout | object = BaseRequest.DEFAULT_NONE,
        write_timeout: _Timeout | object = BaseRequest.DEFAULT_NONE,
        connect_timeout: _Timeout | object = BaseRequest.DEFAULT_NONE,
        pool_timeout: _Timeout | object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session, slots = self._session, self._slots
        if session is None or slots is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        has_files = request_data is not None and request_data.contains_files
        timeout = self._client_timeout(
            read=_chosen(read_timeout, self._read_timeout),
            connect=_chosen(connect_timeout, self._connect_timeout),
            write=_chosen(write_timeout, self._media_write_timeout) if has_files else None,
        )
        await self._wait_for_connection(slots, _chosen(pool_timeout, self._pool_timeout))
        try:
            return await self._send(session, url, method, request_data, timeout)
        except TimeoutError:
            # aiohttp's timeouts (ServerTimeoutError is a TimeoutError too); as HTTPXRequest.
            raise TimedOut() from None
        except aiohttp.ClientConnectorError as exc:
            # Chained to the socket's error alone (refused, DNS…), which names no URL.
            raise NetworkError(_describe(exc, url)) from exc.os_error
        except Exception as exc:
            # Not chained: aiohttp's exception may hold the URL, and a traceback would print
            # it. (ptb would wrap what we let through as a NetworkError too, text and all.)
            raise NetworkError(_describe(exc, url)) from None
        finally:
            slots.release()

    @staticmethod
    def _client_timeout(
        read: _Timeout, connect: _Timeout, write: _Timeout
    ) -> aiohttp.ClientTimeout:
        total = None
        if write is not None and read is not None and connect is not None:
            total = connect + write + read
        return aiohttp.ClientTimeout(total=total, connect=connect, sock_read=read)

    @staticmethod
    async def _wait_for_connection(slots: asyncio.Semaphore, pool_timeout: _Timeout) -> None:
        if not slots.locked():
            await slots.acquire()  # free: taken at once, no timer needed
            return
        try:
            async with asyncio.timeout(pool_timeout):
                await slots.acquire()
        except TimeoutError:
            raise TimedOut(POOL_TIMEOUT_MESSAGE) from None

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        method: str,
        request_data: RequestData | None,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, bytes]:
        body: bytes | aiohttp.FormData | None = None
        headers = None
        if request_data is not None and request_data.contains_files:
            body = _multipart(request_data)
        elif request_data is not None and (parameters := request_data.parameters):
            body, headers = self.encode_parameters(parameters), _JSON_HEADERS
        async with session.request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=timeout,
            # As httpx: a redirect is an answer for ptb to judge, not one to follow.
            allow_redirects=False,
        ) as response:
            return response.status, await response.read()

    @staticmethod
    def encode_parameters(parameters: Mapping[str, object]) -> bytes:
        """The JSON body of a request without files: ptb's RequestData.parameters (plain
        values, already converted from ptb's objects) with orjson, and with the standard
        library for anything orjson refuses (integers beyond 64 bits, say)."""
        try:
            return orjson.dumps(parameters)
        except TypeError:
            return json.dumps(parameters).encode()

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        """ptb's hook for reading an answer: orjson, and ptb's own parser for anything orjson
        refuses (it replaces bad UTF-8, and raises and logs ptb's error for what is no JSON)."""
        try:
            parsed: dict[str, Any] = orjson.loads(payload)
        except ValueError:
            return BaseRequest.parse_json_payload(payload)
        return parsed


def _chosen(value: _Timeout | object, default: _Timeout) -> _Timeout:
    """A per-call timeout: seconds or None as given; BaseRequest.DEFAULT_NONE (or any other
    of ptb's placeholders, as HTTPXRequest reads them) means the instance's default."""
    if value is None or isinstance(value, int | float):
        return value
    return default


def _multipart(request_data: RequestData) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    files: dict[str, _FilePart] = request_data.multipart_data
    for name, (file_name, content, mime_type) in files.items():
        form.add_field(name, content, filename=file_name, content_type=mime_type)
    return form


def _describe(exc: Exception, url: str) -> str:
    """What went wrong, named as HTTPXRequest names httpx's errors ("aiohttp.ClientOSError: …"),
    without the token."""
    kind = type(exc)
    module = "aiohttp" if kind.__module__.startswith("aiohttp") else kind.__module__
    name = kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"
    return f"{name}: {_without_url_path(str(exc), url)}"


def _without_url_path(text: str, url: str) -> str:
    """`text` without the path of `url` but its last segment (the method): aiohttp puts the
    URL, and with it the token, into some messages (an invalid URL, a failed body write)."""
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3 if scheme_end >= 0 else 0)
    if path_start < 0:
        return text
    *directories, method = url[path_start:].split("/")
    text = text.replace(url, f"{url[:path_start]}/…/{method}")
    for directory in directories:
        # The token's segment ("bot123:ABC…"), also where aiohttp shows the URL normalised;
        # short segments ("bot") are no secret and stay readable.
        if len(directory) >= 8:
            text = text.replace(directory, "…")
    return text


def make_request(
    transport: TransportName | TelegramTransport,
    *,
    pool_size: int,
    read_timeout: _Timeout = DEFAULT_READ_TIMEOUT,
    write_timeout: _Timeout = DEFAULT_WRITE_TIMEOUT,
    connect_timeout: _Timeout = DEFAULT_CONNECT_TIMEOUT,
    pool_timeout: _Timeout = DEFAULT_POOL_TIMEOUT,
    media_write_timeout: _Timeout = DEFAULT_MEDIA_WRITE_TIMEOUT,
) -> BaseRequest:
    """The request object for a `telegram.Bot` / ApplicationBuilder on the chosen transport
    ("aiohttp": ours, "httpx": ptb's HTTPXRequest; TELEGRAM_TRANSPORT's values), given the
    same arguments."""
    if transport == "aiohttp":
        return AiohttpRequest(
            connection_pool_size=pool_size,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            media_write_timeout=media_write_timeout,
        )
    if transport == "httpx":
        return HTTPXRequest(
            connection_pool_size=pool_size,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            media_write_timeout=media_write_timeout,
        )
    raise ValueError(f"unknown transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
