"""Settings: one typed, immutable `Settings` (pydantic-settings) read from the environment.

`load_settings` is the entry point: variables already in the environment win over `.env`.
Every problem is reported as a `ConfigError` naming the variable, so the CLI can print one
clear line instead of a traceback (pydantic's own error text shows the offending input, which
may be the token, so it is never passed on).

`Settings(...)` built directly (the demo, the tests, the benchmarks) holds exactly what it is
given: it reads neither the environment nor `.env`, and Telegram's rate ceilings are checked
by `load_settings` only, since the stand-in without limits may be driven faster.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_DATABASE_URL = "sqlite:///pushbot.sqlite3"
DEFAULT_TELEGRAM_BASE_URL = "https://api.telegram.org/bot"
# Telegram allows about 30 messages/s per bot; stay just under it so that a normal broadcast
# never sees a 429 even with progress edits and replies to users sharing the budget.
DEFAULT_BROADCAST_RATE = 29.8
FREE_BROADCAST_MAX_RATE = 30.0
PAID_BROADCAST_MAX_RATE = 1000.0
# Unset BROADCAST_WORKERS / BROADCAST_POOL_SIZE: the free budget needs no more than 30 sends
# in flight; the paid one needs rate × latency of them (~150 at 1,000/s over 100–150 ms).
FREE_IN_FLIGHT = 30
PAID_REQUEST_LATENCY = 0.15
MAX_DERIVED_IN_FLIGHT = 200
# Replies owed at once (pushbot.bot.outbox): about 5.6 minutes of Telegram's 30/s.
DEFAULT_REPLY_QUEUE_LIMIT = 10_000
# str.isdigit() accepts '²' and int() accepts '1_0': only plain ASCII digits are numbers here.
DIGITS = re.compile(r"[0-9]+")
TOKEN_PATTERN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
SECRET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class ConfigError(ValueError):
    """A setting is missing or malformed. `str()` is the one line shown to the operator."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class TelegramTransport(StrEnum):
    """The HTTP library under ptb's requests to Telegram."""

    AIOHTTP = "aiohttp"
    # ptb's own HTTPXRequest, for anyone who needs httpx's proxy support.
    HTTPX = "httpx"


# --- the rules of single values (pydantic calls them; a ValueError's text is the problem) --------


def _token(raw: str) -> str:
    if raw and not TOKEN_PATTERN.fullmatch(raw):
        # Never the value: a malformed token may still be most of a real one.
        raise ValueError("is malformed: expected '<digits>:<secret>' as @BotFather gives")
    return raw


def _admin_ids(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    ids: set[int] = set()
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        if not DIGITS.fullmatch(item):
            raise ValueError(
                f"{item!r} is not a numeric Telegram user id (usernames are not accepted)"
            )
        ids.add(int(item))
    return frozenset(ids)


def _database_url(raw: str) -> str:
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    if raw.startswith("postgresql://"):
        return "postgresql+psycopg2://" + raw.removeprefix("postgresql://")
    if raw.startswith(("postgresql+psycopg2://", "sqlite://")):
        return raw
    raise ValueError("must start with sqlite:// or postgresql://")


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {raw!r}")
    return raw


def _whole_number(raw: object) -> object:
    if isinstance(raw, str) and not DIGITS.fullmatch(raw):
        raise ValueError(f"must be a whole number, got {raw!r}")
    return raw


def _between(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return check


def _rate(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number of messages per second, got {raw!r}") from None


def _positive_finite(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a finite number above 0, got {value:g}")
    return value


def _boolean(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"must be one of DEBUG, INFO, WARNING, ERROR; got {raw!r}")
    return level


def _secret_token(raw: str) -> str:
    if not SECRET_TOKEN_PATTERN.fullmatch(raw):
        raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    return raw


def _transport(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return TelegramTransport(raw.lower())
    except ValueError:
        choices = " or ".join(transport.value for transport in TelegramTransport)
        raise ValueError(f"must be {choices}, got {raw!r}") from None


def _timezone(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: a key that is not a zone name at all, such as an absolute path.
        raise ValueError(
            f"must be an IANA time zone such as UTC or Europe/Berlin, got {raw!r}"
        ) from None


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


class Settings(BaseSettings):
    """Every setting of the bot; the variable of a field is its name in upper case."""

    model_config = SettingsConfigDict(
        frozen=True,
        # A misspelt keyword to Settings(...) is an error, not a silently unused value ...
        extra="forbid",
        # ... while variables of other programs in `.env` are none of ours: ignored.
        dotenv_filtering="only_existing",
    )

    bot_token: Annotated[str, AfterValidator(_token)] = Field(default="", repr=False)
    admin_ids: Annotated[frozenset[int], NoDecode, BeforeValidator(_admin_ids)] = frozenset()
    database_url: Annotated[str, AfterValidator(_database_url)] = DEFAULT_DATABASE_URL
    telegram_base_url: Annotated[str, AfterValidator(_http_url)] = DEFAULT_TELEGRAM_BASE_URL
    telegram_transport: Annotated[TelegramTransport, BeforeValidator(_transport)] = (
        TelegramTransport.AIOHTTP
    )
    # None: derived from the mode and the rate (effective_broadcast_workers / _pool_size).
    broadcast_workers: Annotated[WholeNumber, AfterValidator(_between(1, 256))] | None = None
    broadcast_pool_size: Annotated[WholeNumber, AfterValidator(_between(1, 256))] | None = None
    paid_broadcast: Annotated[bool, BeforeValidator(_boolean)] = False
    broadcast_rate: Annotated[float, BeforeValidator(_rate), AfterValidator(_positive_finite)] = (
        DEFAULT_BROADCAST_RATE
    )
    log_level: Annotated[str, AfterValidator(_log_level)] = "INFO"
    webhook_url: Annotated[str, AfterValidator(_http_url)] | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: Annotated[WholeNumber, AfterValidator(_between(1, 65535))] = 8443
    webhook_path: str = "telegram"
    webhook_secret: Annotated[str, AfterValidator(_secret_token)] | None = Field(
        default=None, repr=False
    )
    update_concurrency: Annotated[WholeNumber, AfterValidator(_between(1, 4096))] = 64
    # Replies owed to users at most (the outbox); beyond it, users' updates wait.
    reply_queue_limit: Annotated[WholeNumber, AfterValidator(_between(100, 1_000_000))] = (
        DEFAULT_REPLY_QUEUE_LIMIT
    )
    default_timezone: Annotated[ZoneInfo, BeforeValidator(_timezone)] = ZoneInfo("UTC")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Exactly the arguments: the environment and `.env` are read by load_settings alone,
        # which may be given a mapping instead of the process environment.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        return {
            name: value.strip() if isinstance(value, str) else value
            for name, value in values.items()
            if not (isinstance(value, str) and value.strip() == "")
        }

    @field_validator("webhook_path")
    @classmethod
    def _bare_path(cls, path: str) -> str:
        return path.strip("/")

    @model_validator(mode="after")
    def _a_webhook_needs_its_secret(self) -> Self:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ConfigError("WEBHOOK_SECRET", "is required when WEBHOOK_URL is set")
        return self

    @property
    def uses_webhook(self) -> bool:
        return self.webhook_url is not None

    @property
    def effective_broadcast_workers(self) -> int:
        """BROADCAST_WORKERS, or the sends in flight the mode and rate need when unset."""
        if self.broadcast_workers is not None:
            return self.broadcast_workers
        return self._needed_in_flight

    @property
    def effective_broadcast_pool_size(self) -> int:
        """BROADCAST_POOL_SIZE, or the sends in flight the mode and rate need when unset."""
        if self.broadcast_pool_size is not None:
            return self.broadcast_pool_size
        return self._needed_in_flight

    @property
    def _needed_in_flight(self) -> int:
        if not self.paid_broadcast:
            return FREE_IN_FLIGHT
        needed = math.ceil(self.broadcast_rate * PAID_REQUEST_LATENCY)
        return min(MAX_DERIVED_IN_FLIGHT, max(FREE_IN_FLIGHT, needed))

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    require_token: bool = True,
) -> Settings:
    """Read settings from `environ` (default: the process environment) over `env_file`."""
    source = os.environ if environ is None else environ
    given = {name: source[name.upper()] for name in Settings.model_fields if name.upper() in source}
    try:
        from_file = DotEnvSettingsSource(Settings, env_file=env_file)()
        settings = Settings.model_validate({**from_file, **given})
    except ValidationError as exc:
        raise _config_error(exc) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(str(env_file), f"cannot be read ({reason})") from None
    if require_token and not settings.bot_token:
        raise ConfigError("BOT_TOKEN", "is required (the token @BotFather gave you)")
    _check_telegram_ceiling(settings)
    return settings


def _check_telegram_ceiling(settings: Settings) -> None:
    limit = PAID_BROADCAST_MAX_RATE if settings.paid_broadcast else FREE_BROADCAST_MAX_RATE
    if settings.broadcast_rate > limit:
        raise ConfigError(
            "BROADCAST_RATE",
            f"must be above 0 and at most {limit:g}, got {settings.broadcast_rate:g}",
        )


def _config_error(exc: ValidationError) -> ConfigError:
    """pydantic's errors as one line: the first problem, naming any other variable at fault."""
    first, *others = (_one_error(error) for error in exc.errors(include_input=False))
    also = sorted({other.variable for other in others} - {first.variable})
    if not also:
        return first
    return ConfigError(first.variable, f"{first.problem} (also check {', '.join(also)})")


def _one_error(error: ErrorDetails) -> ConfigError:
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    variable = str(error["loc"][0]).upper() if error["loc"] else "settings"
    if isinstance(cause, ValueError):
        return ConfigError(variable, str(cause))
    # pydantic's own words (a wrong type given to Settings(...) directly), without the input.
    message = error["msg"]
    return ConfigError(variable, message[:1].lower() + message[1:])
