"""`pushbot run` against broken surroundings: one line and exit code 2 for what the operator
must fix (token, database), patience for a Telegram that does not answer yet.

Every case runs the real command as a subprocess; Telegram is the stand-in on loopback.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from pushbot import startup
from pushbot.config import Settings, TelegramTransport
from tests.fixtures.postgres import EXTERNAL_URL_VARIABLE
from tests.fixtures.process import BotProcess, base_env
from tests.fixtures.standin import StandInFactory
from tgstandin import StandInConfig
from tgstandin.server import StandIn

TOKEN = StandInConfig().token
WRONG_TOKEN = "123456:WRONG-token-zyxwvutsrqponm"
RETRY_LINE = re.compile(r"Telegram is unreachable at .*; retrying in [\d.]+ s \(attempt \d+\)")


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushbot", *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit code 2 and exactly one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _closed_telegram() -> str:
    """A TELEGRAM_BASE_URL nobody listens on."""
    return f"http://127.0.0.1:{_free_port()}/bot"


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# -- the token ------------------------------------------------------------------------------


def test_a_rejected_token_is_one_line_naming_bot_token(standin: StandIn, tmp_path: Path) -> None:
    env = base_env(BOT_TOKEN=WRONG_TOKEN, TELEGRAM_BASE_URL=standin.base_url)
    line = _one_line(_run(["run"], env, tmp_path))
    assert line == (
        "pushbot: configuration error: BOT_TOKEN: Telegram rejected the token (401 Unauthorized)"
    )
    # Not even at DEBUG, where ptb logs every request, does any form of the token show.
    result = _run(["run"], {**env, "LOG_LEVEL": "DEBUG"}, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == line
    secret = WRONG_TOKEN.split(":", 1)[1]
    assert secret not in result.stderr + result.stdout


# -- the database ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["history"], ["push", "hello"]], ids=" ".join)
def test_a_database_refusing_connections_is_one_line(command: list[str], tmp_path: Path) -> None:
    url = f"postgresql://pushbot:s3cret-pw@127.0.0.1:{_free_port()}/pushbot"
    env = base_env(
        BOT_TOKEN=TOKEN,
        ADMIN_IDS="1000",
        DATABASE_URL=url,
        # Nobody listens here either: the database is checked before Telegram is waited for.
        TELEGRAM_BASE_URL=_closed_telegram(),
    )
    line = _one_line(_run(command, env, tmp_path))
    assert "DATABASE_URL" in line and "connection refused" in line, line
    assert "s3cret-pw" not in line and "pushbot:***@127.0.0.1" in line


def test_an_unknown_database_host_is_one_line(tmp_path: Path) -> None:
    env = base_env(
        BOT_TOKEN=TOKEN, DATABASE_URL="postgresql://u:pw@no-such-host.invalid:5432/pushbot"
    )
    line = _one_line(_run(["run"], env, tmp_path))
    assert "DATABASE_URL" in line and 'unknown host "no-such-host.invalid"' in line, line


def test_sqlite_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    env = base_env(BOT_TOKEN=TOKEN, DATABASE_URL=f"sqlite:///{missing / 'pushbot.sqlite3'}")
    line = _one_line(_run(["run"], env, tmp_path))
    assert "DATABASE_URL" in line and f"directory {missing} does not exist" in line, line
    assert not missing.exists()


@pytest.fixture
def password_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role on the test server whose password is actually checked: (name, password).

    The throwaway server trusts every loopback connection, so for this one role a
    scram-sha-256 rule is put first in its pg_hba.conf, and taken out again afterwards.
    """
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"pushbot_pw_{uuid.uuid4().hex[:12]}"
    password = f"right-{uuid.uuid4().hex[:12]}"
    hba_file: Path | None = None
    original = ""
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
            hba_file = Path(connection.execute(text("SHOW hba_file")).scalar_one())
        wrong = make_url(postgres_url).set(username=name, password="wrong-password")
        if not _password_checked(wrong):
            if os.environ.get(EXTERNAL_URL_VARIABLE) or not os.access(hba_file, os.W_OK):
                pytest.skip("the PostgreSQL server does not check passwords for this role")
            original = hba_file.read_text()
            rules = "".join(
                f"host all {name} {net} scram-sha-256\n" for net in ("127.0.0.1/32", "::1/128")
            )
            hba_file.write_text(rules + original)
            with admin.connect() as connection:
                connection.execute(text("SELECT pg_reload_conf()"))
            _wait_until(lambda: _password_checked(wrong), 10, "pg_hba.conf to be reloaded")
        yield name, password
    finally:
        if original and hba_file is not None:
            hba_file.write_text(original)
        with admin.connect() as connection:
            if original:
                connection.execute(text("SELECT pg_reload_conf()"))
            connection.execute(text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


def _password_checked(url: object) -> bool:
    engine = create_engine(url, poolclass=NullPool)  # type: ignore[call-overload]
    try:
        with engine.connect():
            return False
    except OperationalError as exc:
        return "password authentication failed" in str(exc)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_wrong_database_password_is_one_line_without_the_password(
    postgres_url: str, password_role: tuple[str, str], tmp_path: Path
) -> None:
    name, right_password = password_role
    url = make_url(postgres_url).set(username=name, password="Wr0ng-Pa55word")
    env = base_env(BOT_TOKEN=TOKEN, DATABASE_URL=url.render_as_string(hide_password=False))
    line = _one_line(_run(["run"], env, tmp_path))
    assert "DATABASE_URL" in line and "password authentication failed" in line, line
    assert f'for user "{name}"' in line
    assert "Wr0ng-Pa55word" not in line and right_password not in line


# -- Telegram unreachable -------------------------------------------------------------------


def _retry_lines(proc: BotProcess) -> list[str]:
    return [line for line in proc.output().splitlines() if RETRY_LINE.search(line)]


def test_an_unreachable_telegram_is_waited_for_then_the_bot_starts(
    bot_process: BotProcess, standin_factory: StandInFactory
) -> None:
    port = _free_port()
    bot_process.env.update(
        BOT_TOKEN=TOKEN,
        TELEGRAM_BASE_URL=f"http://127.0.0.1:{port}/bot",
        ADMIN_IDS="1000",
        LOG_LEVEL="INFO",
    )
    process = bot_process.start()
    # Waits of 1 s then 2 s (plus jitter): two lines arrive within about 1.5 s.
    _wait_until(lambda: len(_retry_lines(bot_process)) >= 2, 20, "two retry lines")
    assert process.poll() is None, "the bot must keep waiting, not exit"
    first, second = _retry_lines(bot_process)[:2]
    assert "connection refused" in first and "(attempt 1)" in first
    assert "(attempt 2)" in second

    # Telegram comes up on that very address: the bot starts and answers.
    standin = standin_factory(StandInConfig(port=port, limits_enabled=False))
    user = standin.add_user(first_name="Alice")
    standin.send_text(user, "/start")
    reply = standin.wait_for_message(user, timeout=30)
    assert "Welcome" in reply["text"]

    bot_process.stop()
    assert process.returncode == 0
    output = bot_process.output()
    assert "Traceback" not in output
    assert TOKEN not in output and TOKEN.split(":", 1)[1] not in output


@pytest.fixture
def silent_telegram() -> Iterator[str]:
    """A TELEGRAM_BASE_URL whose server takes connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/bot"


@pytest.mark.parametrize("transport", list(TelegramTransport))
@pytest.mark.parametrize("failure", ["refused", "dns", "timeout"])
def test_why_telegram_is_unreachable_is_one_clean_line_on_either_transport(
    transport: TelegramTransport,
    failure: str,
    silent_telegram: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The retry line `pushbot run` logs names the reason in a few words, whichever HTTP
    library failed: no library class name, no raw message of the library, no token."""
    base_url = {
        "refused": _closed_telegram(),
        "dns": "http://no-such-host.invalid/bot",
        "timeout": silent_telegram,
    }[failure]
    monkeypatch.setattr(startup, "GET_ME_TIMEOUT_SECONDS", 0.5)
    settings = Settings(bot_token=TOKEN, telegram_base_url=base_url, telegram_transport=transport)
    attempts: list[int] = []

    def start() -> object:
        # The check `pushbot run` makes, once; the second attempt stands for Telegram back.
        attempts.append(len(attempts) + 1)
        return startup.fetch_bot_user(settings) if len(attempts) == 1 else None

    with caplog.at_level(logging.WARNING, logger=startup.__name__):
        startup.keep_trying(settings, start)
    assert attempts == [1, 2]
    (line,) = [r.getMessage() for r in caplog.records if RETRY_LINE.search(r.getMessage())]
    found = re.search(r"\((.*)\); retrying in", line)
    assert found is not None, line
    reason = found.group(1)
    if failure == "refused":
        assert reason == "connection refused", line
    elif failure == "timeout":
        assert reason == "no answer in time", line
    else:
        # The resolver's own words (they differ between resolvers), nothing around them.
        assert reason and len(reason) < 60, line
        assert "no-such-host" not in reason and "Cannot connect" not in reason, line
    assert not reason.startswith(("aiohttp", "httpx")), line
    assert "\n" not in line and TOKEN.split(":", 1)[1] not in line


def test_a_token_rejected_once_telegram_answers_still_ends_start_up(
    bot_process: BotProcess, standin_factory: StandInFactory
) -> None:
    port = _free_port()
    bot_process.env.update(BOT_TOKEN=WRONG_TOKEN, TELEGRAM_BASE_URL=f"http://127.0.0.1:{port}/bot")
    process = bot_process.start()
    _wait_until(lambda: len(_retry_lines(bot_process)) >= 1, 20, "a retry line")
    standin_factory(StandInConfig(port=port))  # knows TOKEN, not WRONG_TOKEN: 401
    assert process.wait(30) == 2
    output = bot_process.output()
    assert output.strip().splitlines()[-1] == (
        "pushbot: configuration error: BOT_TOKEN: Telegram rejected the token (401 Unauthorized)"
    )
    assert "Traceback" not in output and WRONG_TOKEN.split(":", 1)[1] not in output


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_stopping_while_waiting_for_telegram_exits_cleanly(
    stop: signal.Signals, code: int, bot_process: BotProcess
) -> None:
    bot_process.env.update(BOT_TOKEN=TOKEN, TELEGRAM_BASE_URL=_closed_telegram())
    process = bot_process.start()
    _wait_until(lambda: len(_retry_lines(bot_process)) >= 1, 20, "a retry line")
    process.send_signal(stop)
    assert process.wait(15) == code
    assert "Traceback" not in bot_process.output()


def test_stopping_while_telegram_is_down_exits_cleanly_in_one_line(
    bot_process: BotProcess, standin: StandIn
) -> None:
    """ptb's Updater confirms the handled updates with one more getUpdates at a stop, and
    logs that call's failure with a traceback; ours is one line."""
    bot_process.env.update(BOT_TOKEN=TOKEN, TELEGRAM_BASE_URL=standin.base_url, LOG_LEVEL="INFO")
    process = bot_process.start()
    user = standin.add_user()
    standin.send_text(user, "/start")
    standin.wait_for_message(user, timeout=30)
    standin.start_outage(60.0, kind="502")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    output = bot_process.output()
    [last_poll] = [line for line in output.splitlines() if "one more time" in line]
    assert "WARNING" in last_poll and "(NetworkError: Bad Gateway)" in last_poll
    assert "Traceback" not in output


def test_a_failure_after_getme_goes_back_to_waiting(
    bot_process: BotProcess, standin: StandIn
) -> None:
    """Telegram fails between our getMe and polling (ptb's deleteWebhook gets a 502): the
    start is retried, in one line, instead of ending in ptb's traceback."""
    standin.inject_faults(kind="502", next_calls=1, methods=["deleteWebhook"])
    bot_process.env.update(
        BOT_TOKEN=TOKEN, TELEGRAM_BASE_URL=standin.base_url, ADMIN_IDS="1000", LOG_LEVEL="INFO"
    )
    bot_process.start()
    user = standin.add_user(first_name="Bob")
    standin.send_text(user, "/start")
    assert "Welcome" in standin.wait_for_message(user, timeout=30)["text"]
    assert standin.count("deleteWebhook", 502) == 1
    bot_process.stop()
    output = bot_process.output()
    (retry,) = _retry_lines(bot_process)
    assert "(attempt 1)" in retry, retry
    assert "Traceback" not in output
