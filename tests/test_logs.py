"""The token never reaches a log line, whichever logger writes it and however."""

from __future__ import annotations

import io
import logging

from pushbot.logs import configure_logging, token_secrets

TOKEN = "123456:SECRET-part-of-the-token"


def test_token_is_redacted_from_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", token_secrets(TOKEN), stream=stream)
    try:
        url = f"https://api.telegram.org/bot{TOKEN}/getMe"
        logging.getLogger("httpx").warning("HTTP Request: POST %s", url)
        logging.getLogger("pushbot").error("secret half alone: %s", TOKEN.split(":")[1])
        try:
            raise RuntimeError(f"failed calling {url}")
        except RuntimeError:
            logging.getLogger("pushbot").exception("boom")
    finally:
        configure_logging("WARNING", [])
    output = stream.getvalue()
    assert "SECRET-part-of-the-token" not in output
    assert output.count("<redacted>") >= 3  # the URL, the secret half, the exception text


def test_httpx_request_lines_are_silenced_even_at_debug() -> None:
    configure_logging("DEBUG", token_secrets(TOKEN))
    try:
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
    finally:
        configure_logging("WARNING", [])
