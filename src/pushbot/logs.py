"""Logging set-up that can never leak the bot token.

The token is part of every Bot API URL, and httpx logs request URLs at INFO. We keep
httpx/httpcore at WARNING and, as a second line of defence, redact every secret from the
final formatted text (message, arguments and traceback alike).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

REDACTED = "<redacted>"
NOISY_LOGGERS = ("httpx", "httpcore", "apscheduler", "tornado.access")


class RedactingFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def token_secrets(token: str) -> list[str]:
    """The token, and its secret half alone, which can show up without the bot id."""
    if not token:
        return []
    secret_half = token.split(":", 1)[-1]
    return [token, secret_half] if len(secret_half) >= 8 else [token]


def configure_logging(level: str, secrets: Iterable[str], stream: object = None) -> None:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(
        RedactingFormatter(secrets, "%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
