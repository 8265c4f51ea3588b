"""Settings: one typed object read from the environment (and `.env`).

Every problem is reported as a `ConfigError` naming the variable, so the CLI can print
one clear line instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_DATABASE_URL = "sqlite:///pushbot.sqlite3"
DEFAULT_TELEGRAM_BASE_URL = "https://api.telegram.org/bot"
# Telegram allows about 30 messages/s per bot; stay just under it so that a normal broadcast
# never sees a 429 even with progress edits and replies to users sharing the budget.
DEFAULT_BROADCAST_RATE = 29.8
PAID_BROADCAST_MAX_RATE = 1000.0
# str.isdigit() accepts '²' and int() accepts '1_0': only plain ASCII digits are ids here.
DIGITS = re.compile(r"[0-9]+")
TOKEN_PATTERN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")


class ConfigError(ValueError):
    """A setting is missing or malformed. `str()` is the one line shown to the operator."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    bot_token: str = field(repr=False)
    admin_ids: frozenset[int] = frozenset()
    database_url: str = DEFAULT_DATABASE_URL
    telegram_base_url: str = DEFAULT_TELEGRAM_BASE_URL
    broadcast_workers: int = 30
    broadcast_pool_size: int = 30
    broadcast_rate: float = DEFAULT_BROADCAST_RATE
    paid_broadcast: bool = False
    log_level: str = "INFO"
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    webhook_path: str = "telegram"
    webhook_secret: str | None = field(default=None, repr=False)
    update_concurrency: int = 64

    @property
    def uses_webhook(self) -> bool:
        return self.webhook_url is not None

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    require_token: bool = True,
) -> Settings:
    """Read settings; variables already set in the environment win over `.env`."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return _parse(values, require_token)


def _parse(values: Mapping[str, str], require_token: bool) -> Settings:
    def get(name: str) -> str | None:
        raw = values.get(name)
        return raw.strip() if raw is not None and raw.strip() != "" else None

    token = get("BOT_TOKEN")
    if token is None and require_token:
        raise ConfigError("BOT_TOKEN", "is required (the token @BotFather gave you)")
    if token is not None and not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError(
            "BOT_TOKEN", "is malformed: expected '<digits>:<secret>' as @BotFather gives"
        )

    paid = _boolean("PAID_BROADCAST", get("PAID_BROADCAST"), False)
    rate_limit = PAID_BROADCAST_MAX_RATE if paid else 30.0
    webhook_url = get("WEBHOOK_URL")
    webhook_secret = get("WEBHOOK_SECRET")
    if webhook_url is not None:
        if not webhook_url.startswith(("https://", "http://")):
            raise ConfigError("WEBHOOK_URL", f"must be an http(s) URL, got {webhook_url!r}")
        if webhook_secret is None:
            raise ConfigError("WEBHOOK_SECRET", "is required when WEBHOOK_URL is set")
    if webhook_secret is not None and not _is_valid_secret_token(webhook_secret):
        raise ConfigError("WEBHOOK_SECRET", "must be 1-256 characters of A-Z, a-z, 0-9, _ and -")

    return Settings(
        bot_token=token or "",
        admin_ids=_admin_ids(get("ADMIN_IDS")),
        database_url=_database_url(get("DATABASE_URL")),
        telegram_base_url=_base_url(get("TELEGRAM_BASE_URL")),
        broadcast_workers=_integer("BROADCAST_WORKERS", get("BROADCAST_WORKERS"), 30, 1, 256),
        broadcast_pool_size=_integer("BROADCAST_POOL_SIZE", get("BROADCAST_POOL_SIZE"), 30, 1, 256),
        broadcast_rate=_rate(get("BROADCAST_RATE"), rate_limit),
        paid_broadcast=paid,
        log_level=_log_level(get("LOG_LEVEL")),
        webhook_url=webhook_url,
        webhook_listen=get("WEBHOOK_LISTEN") or "127.0.0.1",
        webhook_port=_integer("WEBHOOK_PORT", get("WEBHOOK_PORT"), 8443, 1, 65535),
        webhook_path=(get("WEBHOOK_PATH") or "telegram").strip("/"),
        webhook_secret=webhook_secret,
        update_concurrency=_integer("UPDATE_CONCURRENCY", get("UPDATE_CONCURRENCY"), 64, 1, 4096),
    )


def _admin_ids(raw: str | None) -> frozenset[int]:
    if raw is None:
        return frozenset()
    ids: set[int] = set()
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        if not DIGITS.fullmatch(item):
            raise ConfigError(
                "ADMIN_IDS",
                f"{item!r} is not a numeric Telegram user id (usernames are not accepted)",
            )
        ids.add(int(item))
    return frozenset(ids)


def _database_url(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_DATABASE_URL
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    if raw.startswith("postgresql://"):
        return "postgresql+psycopg2://" + raw.removeprefix("postgresql://")
    if raw.startswith(("postgresql+psycopg2://", "sqlite://")):
        return raw
    raise ConfigError("DATABASE_URL", "must start with sqlite:// or postgresql://")


def _base_url(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_TELEGRAM_BASE_URL
    if not raw.startswith(("http://", "https://")):
        raise ConfigError("TELEGRAM_BASE_URL", f"must be an http(s) URL, got {raw!r}")
    return raw


def _integer(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not DIGITS.fullmatch(raw):
        raise ConfigError(name, f"must be a whole number, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _rate(raw: str | None, limit: float) -> float:
    if raw is None:
        return min(DEFAULT_BROADCAST_RATE, limit)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            "BROADCAST_RATE", f"must be a number of messages per second, got {raw!r}"
        ) from None
    if not 0 < value <= limit:
        raise ConfigError("BROADCAST_RATE", f"must be above 0 and at most {limit:g}, got {value:g}")
    return value


def _boolean(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def _log_level(raw: str | None) -> str:
    if raw is None:
        return "INFO"
    level = raw.upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError("LOG_LEVEL", f"must be one of DEBUG, INFO, WARNING, ERROR; got {raw!r}")
    return level


def _is_valid_secret_token(secret: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    return 1 <= len(secret) <= 256 and set(secret) <= allowed
