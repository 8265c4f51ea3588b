"""What `pushbot run` checks before it serves, so broken surroundings give one line, not a
traceback.

- The database must answer (`check_database`); otherwise `DatabaseUnavailable` names
  DATABASE_URL and the driver's reason (wrong password, unknown host, refused…).
- Telegram must take the token: a 401/404 on getMe ends start-up (`TokenRejected`, naming
  BOT_TOKEN; the token itself is never printed).
- Telegram being unreachable (refused, DNS, timeout, 5xx, 429) is not a reason to give up:
  a bot started by systemd or docker before the network is up should simply come up when it
  is. `keep_trying` repeats the start with exponential back-off (1 s, 2 s, 4 s … at most
  60 s, plus jitter), logging one line per attempt. SIGTERM (and Ctrl-C) during a wait ends
  the process quietly.

The back-off is tenacity's: its `Retrying` gives the retry predicate, the capped exponential
wait with jitter and a `before_sleep` hook for the log line, and takes our own `sleep` so a
SIGTERM can interrupt the wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TypeVar
from urllib.parse import urlsplit

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from telegram import Bot, User
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random

from pushbot.config import ConfigError, Settings
from pushbot.db.errors import database_errors
from pushbot.logs import redact, token_secrets
from pushbot.transport import make_request

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# Added to every wait, so that bots restarted together (a host reboot) do not hit the Bot API
# in lockstep; small enough that the first retries stay about 1 s, 2 s, 4 s.
BACKOFF_JITTER_SECONDS = 0.5
# libpq waits for a silent host as long as the OS does (minutes); the start-up probe gives up
# sooner and says so.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
# getMe is tiny: a server that has not answered in this time counts as unreachable.
GET_ME_TIMEOUT_SECONDS = 10.0
MAX_ERROR_TEXT = 120
HTTP_LIBRARY_PREFIXES = ("httpx.", "aiohttp.")
# ptb's own start-up loops (initialize's getMe, deleteWebhook/setWebhook) log their final
# failure with a traceback before raising it; `keep_trying` reports the same failure in one
# line, so those records are dropped (see `quiet_ptb_noise`).
PTB_RETRY_LOOP_LOGGER = "telegram.ext"
PTB_RETRY_LOOP_PREFIX = "Network Retry Loop"
PTB_REQUEST_LOGGER = "telegram.request.BaseRequest"
PTB_INVALID_JSON_MESSAGE = "Can not load invalid JSON data"
# At a stop, ptb's Updater calls getUpdates once more to confirm the updates handled; during
# an outage that fails, and ptb logs it with a traceback.
PTB_UPDATER_LOGGER = "telegram.ext.Updater"
PTB_LAST_POLL_MESSAGE = "Error while calling `get_updates` one more time"


class TokenRejected(ConfigError):
    """Telegram answered getMe with 401 (or 404): the token is wrong or revoked."""

    def __init__(self, status: str) -> None:
        super().__init__("BOT_TOKEN", f"Telegram rejected the token ({status})")


class StartupStopped(Exception):
    """SIGTERM arrived while waiting for Telegram: nothing runs yet, so just stop."""


# -- database -------------------------------------------------------------------------------


def check_database(settings: Settings) -> None:
    """Connect once; `DatabaseUnavailable` (one line naming DATABASE_URL) if that fails."""
    url = settings.database_url
    with database_errors(url):
        engine = create_engine(url, poolclass=NullPool, connect_args=_probe_connect_args(url))
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()


def _probe_connect_args(url: str) -> dict[str, object]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        return {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
    return {}


# -- Telegram -------------------------------------------------------------------------------


def fetch_bot_user(settings: Settings) -> User:
    """One getMe through a throwaway Bot (shut down afterwards).

    Transient failures (NetworkError, TimedOut, RetryAfter) are raised as they are; a
    rejected token as TokenRejected; any other refusal as a ConfigError naming
    TELEGRAM_BASE_URL (whatever answers there is no Bot API server we can use).
    """
    with _sigterm_stops():
        try:
            return asyncio.run(_get_me(settings))
        except InvalidToken as exc:
            raise _rejection(exc) from None
        except (NetworkError, RetryAfter):
            raise
        except TelegramError as exc:
            problem = f"getMe was refused: {describe_telegram_error(exc, settings)}"
            raise ConfigError("TELEGRAM_BASE_URL", problem) from None


async def _get_me(settings: Settings) -> User:
    # Own request objects: Bot.shutdown() only closes them after a successful initialize(),
    # and a failed getMe is exactly the case here.
    requests = [
        make_request(
            settings.telegram_transport,
            pool_size=1,
            connect_timeout=GET_ME_TIMEOUT_SECONDS,
            read_timeout=GET_ME_TIMEOUT_SECONDS,
        )
        for _ in range(2)
    ]
    bot = Bot(
        settings.bot_token,
        base_url=settings.telegram_base_url,
        request=requests[0],
        get_updates_request=requests[1],
    )
    try:
        for request in requests:
            await request.initialize()
        return await bot.get_me()
    finally:
        for request in requests:
            await request.shutdown()


def keep_trying(settings: Settings, start: Callable[[], T]) -> T:
    """Call `start` until it does not fail with a transient Telegram error, waiting 1 s,
    2 s, 4 s … (at most 60 s, plus jitter) in between and logging one line per failure.

    A rejected token (from `start`, also as ptb's InvalidToken) ends as TokenRejected.
    """

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "Telegram is unreachable at %s (%s); retrying in %s (attempt %d)",
            _telegram_host(settings),
            describe_telegram_error(exc, settings) if exc is not None else "no answer",
            _seconds(wait),
            state.attempt_number,
        )

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=_RetryAfterAware(
            wait_exponential(multiplier=BACKOFF_FIRST_SECONDS, max=BACKOFF_MAX_SECONDS)
            + wait_random(0, BACKOFF_JITTER_SECONDS)
        ),
        before_sleep=log_retry,
        sleep=_interruptible_sleep,
        reraise=True,
    )
    try:
        return retrying(start)
    except InvalidToken as exc:
        # The token was fine at getMe and is refused now (revoked meanwhile).
        raise _rejection(exc) from None


def is_transient(exc: BaseException) -> bool:
    """Worth another try: Telegram (or the way to it) failed, not the request.

    ptb raises NetworkError for connection errors and 5xx, TimedOut (a NetworkError) for
    timeouts, RetryAfter for 429; InvalidToken and other TelegramErrors are answers.
    """
    return isinstance(exc, NetworkError | RetryAfter)


class _RetryAfterAware:
    """The back-off, but never shorter than a 429's retry_after."""

    def __init__(self, backoff: Callable[[RetryCallState], float]) -> None:
        self._backoff = backoff

    def __call__(self, state: RetryCallState) -> float:
        wait = self._backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryAfter):
            value: object = exc.retry_after
            seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)  # type: ignore[arg-type]
            wait = max(wait, seconds)
        return wait


def describe_telegram_error(exc: BaseException, settings: Settings) -> str:
    """A few words on why a Bot API call failed, without the token."""
    text = _describe(exc)
    text = redact(" ".join(text.split()), token_secrets(settings.bot_token))
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimedOut):
        return "no answer in time"
    if isinstance(exc, RetryAfter):
        return "flood control: Telegram asked to wait"
    # Both transports keep the socket's error in the chain, behind their own words (httpx:
    # "All connection attempts failed"; aiohttp: "Cannot connect to host …").
    for cause in _chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            # socket.gaierror (DNS), ENETUNREACH, EHOSTUNREACH…; aiohttp's resolver (aiodns)
            # says "Domain name not found" in an OSError without an errno.
            return str(cause.strerror)
    text = str(exc)
    # Errors from the HTTP layer start with the library's class name ("httpx.ConnectError: …"
    # from ptb, "aiohttp.ServerDisconnectedError: …" from AiohttpRequest).
    if text.startswith(HTTP_LIBRARY_PREFIXES) and ": " in text:
        text = text.split(": ", 1)[1]
    return text or type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _rejection(exc: InvalidToken) -> ConfigError:
    """The one line for a 401/404: the token, or a base URL that is no Bot API server."""
    # ptb raises InvalidToken for both 401 and 404 and keeps Telegram's description
    # ("Unauthorized" / "Not Found") at the bottom of the chain; its own message at the top
    # may contain the token, so only these known words are ever looked at.
    chain = list(_chain(exc))
    descriptions = {str(cause).strip().lower() for cause in chain}
    if any(isinstance(cause, ValueError) for cause in chain):
        # The body was not JSON: no Bot API server answered (a proxy, a web server).
        return ConfigError(
            "TELEGRAM_BASE_URL",
            "the server answered getMe with 401/404 but no Bot API reply; is it a Bot API server?",
        )
    if "not found" in descriptions:
        return TokenRejected("404 Not Found; or TELEGRAM_BASE_URL is not a Bot API server")
    return TokenRejected("401 Unauthorized")


def _telegram_host(settings: Settings) -> str:
    # Host and port only: a base URL could carry credentials in its user-info part.
    parts = urlsplit(settings.telegram_base_url)
    host = parts.hostname or settings.telegram_base_url
    return f"{host}:{parts.port}" if parts.port else host


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


# -- stopping while waiting -----------------------------------------------------------------


def _interruptible_sleep(seconds: float) -> None:
    import time

    with _sigterm_stops():
        time.sleep(seconds)


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While waiting, SIGTERM raises StartupStopped (Ctrl-C raises KeyboardInterrupt anyway).

    Installed around each wait rather than once: ptb's run installs its own handlers and
    the loop that owned them resets SIGTERM to the default (die silently with 143) when
    it closes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed by the main thread
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise StartupStopped("stopped while waiting for Telegram")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- ptb's start-up and stop logging ---------------------------------------------------------


class _DropHandledBootstrapFailures(logging.Filter):
    """Drops ptb's traceback for a start-up step that failed with an error `keep_trying`
    handles (and logs in one line); everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or not isinstance(record.args, tuple) or not record.args:
            return True
        exc = record.exc_info[1]
        handled = exc is not None and (is_transient(exc) or isinstance(exc, InvalidToken))
        return not (str(record.args[0]).startswith(PTB_RETRY_LOOP_PREFIX) and handled)


class _DropInvalidJsonTraceback(logging.Filter):
    """ptb logs a traceback (and the whole body) when a server answers with something that
    is not JSON, e.g. a proxy's HTML error page; it then raises an error quoting that body,
    which is reported in one line (`keep_trying`, or the bot's error handler). The record
    adds nothing but noise, once per attempt."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(PTB_INVALID_JSON_MESSAGE)


class _OneLineForALastPollThatFailed(logging.Filter):
    """A stop while Telegram is down: ptb's line already says what it means (the updates
    of the last poll may be fetched again at the next start); the traceback of a 5xx or a
    timeout adds nothing, so the record keeps its line and the error's one-line text."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (
            exc is not None
            and is_transient(exc)
            and str(record.msg).startswith(PTB_LAST_POLL_MESSAGE)
        ):
            record.msg = f"{record.msg} ({type(exc).__name__}: {exc})"
            record.exc_info = record.exc_text = None
            # Telegram's bad day, not ours: as the other outage lines.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_FILTERS = {
    PTB_RETRY_LOOP_LOGGER: _DropHandledBootstrapFailures(),
    PTB_REQUEST_LOGGER: _DropInvalidJsonTraceback(),
    PTB_UPDATER_LOGGER: _OneLineForALastPollThatFailed(),
}


def quiet_ptb_noise() -> None:
    """Install the filters above on ptb's loggers (idempotent: addFilter ignores repeats)."""
    for name, log_filter in _FILTERS.items():
        logging.getLogger(name).addFilter(log_filter)
