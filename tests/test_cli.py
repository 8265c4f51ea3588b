"""`pushbot run` start-up: bad settings give one clear line; good ones serve the stand-in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from tests.fixtures.process import BotProcess, base_env
from tgstandin.server import StandIn


def _run(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushbot", "run"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "BOT_TOKEN"),
        ({"BOT_TOKEN": "not-a-token"}, "BOT_TOKEN"),
        ({"BOT_TOKEN": "1:abcdefgh", "ADMIN_IDS": "@ada"}, "ADMIN_IDS"),
        ({"BOT_TOKEN": "1:abcdefgh", "BROADCAST_WORKERS": "many"}, "BROADCAST_WORKERS"),
        ({"BOT_TOKEN": "1:abcdefgh", "BROADCAST_RATE": "45"}, "BROADCAST_RATE"),
        ({"BOT_TOKEN": "1:abcdefgh", "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"BOT_TOKEN": "1:abcdefgh", "WEBHOOK_URL": "https://example.org/hook"}, "WEBHOOK_SECRET"),
    ],
)
def test_bad_settings_stop_start_up_with_one_line(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    result = _run(base_env(**env), tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and "Traceback" not in result.stderr


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BOT_TOKEN=1:abcdefgh\nADMIN_IDS=oops\n")
    result = _run(base_env(), tmp_path)
    assert result.returncode == 2 and "ADMIN_IDS" in result.stderr
    result = _run(base_env(ADMIN_IDS="42", BOT_TOKEN="bad"), tmp_path)
    assert result.returncode == 2 and "BOT_TOKEN" in result.stderr


def test_run_polls_the_standin_and_answers_start(
    standin: StandIn, bot_process: BotProcess, tmp_path: Path
) -> None:
    bot_process.env.update(
        BOT_TOKEN=standin.token,
        TELEGRAM_BASE_URL=standin.base_url,
        ADMIN_IDS="1000",
        LOG_LEVEL="DEBUG",
    )
    bot_process.start()
    user = standin.add_user(first_name="Alice")
    standin.send_text(user, "/start")
    reply = standin.wait_for_message(user, timeout=30)
    assert "Welcome" in reply["text"]
    assert (tmp_path / "pushbot.sqlite3").exists(), "the embedded SQLite default is used"
    bot_process.stop()
    output = bot_process.output()
    # The token never appears in the logs, at any level, in any form.
    secret = standin.token.split(":", 1)[1]
    assert secret not in output and standin.token not in output
    # ... while the log was at its most verbose: every request the bot made is in it.
    assert "Calling Bot API endpoint `getUpdates`" in output
    assert "Calling Bot API endpoint `sendMessage`" in output


def _cli(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushbot", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_push_history_and_undo(
    standin: StandIn, db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    standin.set_limits(enabled=False)
    standin.add_user(1000)
    users = standin.add_users(25)
    with session_factory.begin() as session:
        for user in users:
            queries.subscribe_chat(session, queries.ChatInfo(id=user, type="private"))
    env = base_env(
        BOT_TOKEN=standin.token,
        TELEGRAM_BASE_URL=standin.base_url,
        ADMIN_IDS="1000",
        DATABASE_URL=db_url,
    )

    pushed = _cli(["push"], env, tmp_path, stdin="From the terminal\n")
    assert pushed.returncode == 0, pushed.stderr
    assert "Delivered: 25" in pushed.stdout
    assert all(standin.inbox(u)[-1]["text"] == "From the terminal" for u in users)
    report = standin.inbox(1000)[-1]
    assert "Reply /undo" in report["text"], "the report reaches the admin's chat too"

    history = _cli(["history"], env, tmp_path)
    assert history.returncode == 0 and "done" in history.stdout and "25" in history.stdout
    (row,) = _recent(session_factory)
    assert row.push.report_message_id == report["message_id"]

    undone = _cli(["undo", str(row.push.uuid)], env, tmp_path)
    assert undone.returncode == 0, undone.stderr
    assert "Removed: 25" in undone.stdout
    assert all(not any(m.get("copied_from") for m in standin.inbox(u)) for u in users)
    history = _cli(["history"], env, tmp_path)
    assert "retracted" in history.stdout
    again = _cli(["undo", str(row.push.uuid)], env, tmp_path)
    assert "already retracted" in again.stdout


def test_cli_edit_corrects_every_copy_and_history_says_so(
    standin: StandIn, db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    standin.set_limits(enabled=False)
    standin.add_user(1000)
    users = standin.add_users(10)
    with session_factory.begin() as session:
        for user in users:
            queries.subscribe_chat(session, queries.ChatInfo(id=user, type="private"))
    env = base_env(
        BOT_TOKEN=standin.token,
        TELEGRAM_BASE_URL=standin.base_url,
        ADMIN_IDS="1000",
        DATABASE_URL=db_url,
    )
    assert _cli(["push", "Helo from the terminal"], env, tmp_path).returncode == 0
    (row,) = _recent(session_factory)
    uuid = str(row.push.uuid)

    edited = _cli(["edit", uuid], env, tmp_path, stdin="Hello from the terminal\n")

    assert edited.returncode == 0, edited.stderr
    assert "Now: “Hello from the terminal”" in edited.stdout
    assert "Edited 10 · Unchanged 0 · Could not edit 0" in edited.stdout
    assert all(standin.inbox(u)[-1]["text"] == "Hello from the terminal" for u in users)
    history = _cli(["history"], env, tmp_path)
    [line] = [line for line in history.stdout.splitlines() if uuid in line]
    assert "Hello from the terminal" in line and "Helo" not in line
    assert re.search(r"\(Edited \d{4}-\d\d-\d\d \d\d:\d\d UTC\)$", line), line

    again = _cli(["edit", uuid, "Hello from the terminal"], env, tmp_path)
    assert "Edited 0 · Unchanged 10 (already had this text: 10)" in again.stdout
    for args, code, problem in [
        (["edit", uuid, "  "], 2, "configuration error: text: the corrected text is empty"),
        (["edit", str(uuid4()), "Hi"], 3, "pushbot: no broadcast"),
        (["edit", "not-a-uuid", "Hi"], 2, "invalid UUID value"),
    ]:
        refused = _cli(args, env, tmp_path)
        assert refused.returncode == code, refused.stderr
        assert problem in refused.stderr.strip().splitlines()[-1]
        assert "Traceback" not in refused.stderr
    assert _cli(["undo", uuid], env, tmp_path).returncode == 0
    gone = _cli(["edit", uuid, "Too late"], env, tmp_path)
    assert gone.returncode == 3
    assert gone.stderr.strip().splitlines()[-1] == (
        f"pushbot: broadcast {uuid}: it is retracted: nothing left to edit"
    )


def test_cli_stats_prints_the_numbers_and_writes_the_chart(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory.begin() as session:
        for user in range(1, 8):
            queries.subscribe_chat(session, queries.ChatInfo(id=user, type="private"))
        queries.unsubscribe_chat(session, 1)
        queries.purge_chats(session, {2: "blocked", 3: "deactivated"})
    env = base_env(DATABASE_URL=db_url)  # no token needed: it only reads the database
    chart = tmp_path / "audience.png"

    result = _cli(["stats", "--chart", str(chart)], env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Subscribers now: 4 (unsubscribed 1, purged 2)" in result.stdout
    assert (
        "Last 7 days: joined 7, returned 0, left 1, purged 2 (blocked: 1, deactivated: 1)"
        in result.stdout
    )
    assert "No broadcasts yet." in result.stdout
    assert f"Chart: {chart}" in result.stdout
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_stats_names_a_chart_file_it_cannot_write(db_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "chart.png"

    result = _cli(["stats", "--chart", str(missing)], base_env(DATABASE_URL=db_url), tmp_path)

    assert result.returncode == 2
    # Start-up logs (the migration check) may come first; the problem is one line at the end.
    assert result.stderr.strip().splitlines()[-1] == (
        f"pushbot: cannot write the chart to {missing}: No such file or directory"
    )
    assert "Traceback" not in result.stderr


def test_cli_push_needs_an_admin_chat(tmp_path: Path) -> None:
    result = _cli(["push", "hello"], base_env(BOT_TOKEN="1:abcdefgh"), tmp_path)
    assert result.returncode == 2 and "ADMIN_IDS" in result.stderr


def _recent(factory: sessionmaker[Session]) -> list[queries.PushHistoryRow]:
    with factory.begin() as session:
        return queries.recent_pushes(session, 5)


def test_cli_push_to_a_segment_silent_and_protected(
    standin: StandIn, db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    standin.set_limits(enabled=False)
    standin.add_user(1000)
    users = standin.add_users(4)
    group = standin.add_group("Club")
    with session_factory.begin() as session:
        for user in users:
            queries.subscribe_chat(session, queries.ChatInfo(id=user, type="private"))
        queries.subscribe_chat(session, queries.ChatInfo(id=group, type="group", title="Club"))
    env = base_env(
        BOT_TOKEN=standin.token,
        TELEGRAM_BASE_URL=standin.base_url,
        ADMIN_IDS="1000",
        DATABASE_URL=db_url,
    )

    pushed = _cli(
        ["push", "Quietly", "--segment", "private", "--silent", "--protected"], env, tmp_path
    )

    assert pushed.returncode == 0, pushed.stderr
    assert "to private chats · silent, protected" in pushed.stdout
    assert "Audience: private chats · silent, protected" in pushed.stdout
    assert "Delivered: 4" in pushed.stdout
    for user in users:
        (copy,) = [m for m in standin.inbox(user) if m.get("copied_from")]
        assert copy["send_options"]["disable_notification"] is True
        assert copy["send_options"]["protect_content"] is True
    assert not any(m.get("copied_from") for m in standin.inbox(group))
    history = _cli(["history"], env, tmp_path)
    assert "private chats · silent, protected" in history.stdout


def test_cli_push_at_stores_a_scheduled_push_for_the_bot(
    standin: StandIn, db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    standin.set_limits(enabled=False)
    standin.add_user(1000)
    user = standin.add_user()
    with session_factory.begin() as session:
        queries.subscribe_chat(session, queries.ChatInfo(id=user, type="private"))
    env = base_env(
        BOT_TOKEN=standin.token,
        TELEGRAM_BASE_URL=standin.base_url,
        ADMIN_IDS="1000",
        DATABASE_URL=db_url,
        DEFAULT_TIMEZONE="Europe/Berlin",
    )

    scheduled = _cli(["push", "Later", "--at", "in 2h", "--segment", "language:de"], env, tmp_path)

    assert scheduled.returncode == 0, scheduled.stderr
    assert "(Europe/Berlin) to language de" in scheduled.stdout
    (row,) = _recent(session_factory)
    assert row.push.status == "scheduled" and str(row.push.segment) == "language:de"
    assert row.push.scheduled_at is not None
    # In the admin's chat: the source, then the scheduled message with Cancel and Send now.
    shown = standin.inbox(1000)[-1]
    assert shown["text"].startswith("🗓 Scheduled for") and "Send now" in str(shown)
    assert row.push.status_message_id == shown["message_id"]
    assert not any(m.get("copied_from") for m in standin.inbox(user)), "nothing sent yet"
    history = _cli(["history"], env, tmp_path)
    assert "scheduled" in history.stdout and "language de · due" in history.stdout


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--segment", "nobody"], "pushbot: --segment: unknown audience 'nobody'"),
        (["--at", "soonish"], "pushbot: --at: I can't read 'soonish' as a time"),
        (["--at", "2020-01-01 10:00"], "pushbot: --at: Wed 1 Jan 2020 10:00 (UTC) has passed"),
    ],
)
def test_cli_push_refuses_a_bad_segment_or_time_in_one_line(
    args: list[str], problem: str, db_url: str, tmp_path: Path
) -> None:
    env = base_env(BOT_TOKEN="1:abcdefgh", ADMIN_IDS="1000", DATABASE_URL=db_url)
    result = _cli(["push", "hello", *args], env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(problem), result.stderr
