"""One broadcast at a time across real processes (`python -m pushbot run` and `pushbot push`).

The scene of issue 8 item 7: a push is `running` in the ledger (its bot died), and two bot
processes start at once (an overlapping restart, a second deployment). Both resume it; the
broadcast lease lets exactly one of them send, the other waits and ends without a word.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import PushStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import post_as_admin
from tests.fixtures.process import BotProcess, base_env
from tgstandin import StandIn, StandInConfig

ADMIN = helpers.ADMIN_ID
RECIPIENTS = 300
WORKERS = 8
# At the bot's default 29.8 requests/s, 300 copies take about ten seconds: both processes
# are up long before the broadcast could end.
FINISH_TIMEOUT = 90.0


def _copies(tg: StandIn) -> Counter[int]:
    """Copies delivered per chat (the admin's own chat left out)."""
    return Counter(
        c.chat_id
        for c in tg.calls("copyMessage")
        if c.status == 200 and isinstance(c.chat_id, int) and c.chat_id != ADMIN
    )


def _running_push(tg: StandIn, factory: sessionmaker[Session]) -> tuple[list[int], UUID]:
    """300 subscribers and a push `running` in the ledger, as a killed bot leaves it."""
    source = post_as_admin(tg, ADMIN, "Once, and only once.")
    users = tg.add_users(RECIPIENTS)
    helpers.subscribe(factory, users)
    push_uuid = helpers.create_push(factory, ADMIN, source)
    with factory.begin() as session:
        queries.set_push_message_ids(session, push_uuid, report_chat_id=ADMIN)
    return users, push_uuid


def _bot_env(tg: StandIn, db_url: str) -> dict[str, str]:
    return {
        "BOT_TOKEN": tg.token,
        "TELEGRAM_BASE_URL": tg.base_url,
        "ADMIN_IDS": str(ADMIN),
        "DATABASE_URL": db_url,
        "BROADCAST_WORKERS": str(WORKERS),
        "LOG_LEVEL": "INFO",
    }


def _reports(tg: StandIn) -> list[str]:
    return [m["text"] for m in tg.inbox(ADMIN) if "Broadcast finished" in m.get("text", "")]


def _ended(proc: BotProcess, push_uuid: UUID) -> Callable[[], list[str]]:
    """The end-of-job log lines of this push, from every bot process so far."""

    def lines() -> list[str]:
        marker = f"push job of push {push_uuid} ended "
        return [line for line in proc.output().splitlines() if marker in line]

    return lines


def test_two_bot_processes_resuming_one_push_send_every_copy_once_and_report_once(
    standin_factory: Callable[..., StandIn],
    bot_process: BotProcess,
    db_url: str,
    session_factory: sessionmaker[Session],
) -> None:
    tg = standin_factory(StandInConfig(limits_enabled=False, latency=(0.01, 0.03)))
    tg.add_user(ADMIN)
    users, push_uuid = _running_push(tg, session_factory)
    bot_process.env.update(_bot_env(tg, db_url))

    bot_process.start()
    bot_process.start()  # at once: both find the push running and resume it

    tg.wait_for(lambda: len(_copies(tg)) >= RECIPIENTS, timeout=FINISH_TIMEOUT)
    tg.wait_for_message(ADMIN, lambda m: "Broadcast finished" in m.get("text", ""), timeout=30)
    ended = _ended(bot_process, push_uuid)
    tg.wait_for(lambda: len(ended()) == 2, timeout=30)
    bot_process.stop()  # lets any report still on its way out go

    copies = _copies(tg)
    assert set(copies) == set(users), "every recipient got the message"
    assert max(copies.values()) == 1, f"{sum(n - 1 for n in copies.values())} duplicates"
    assert len(_reports(tg)) == 1, "one report, from the process that sent"
    states = sorted(line.rsplit(" ended ", 1)[1].split(":", 1)[0] for line in ended())
    assert states == ["done", "handled_elsewhere"]
    output = bot_process.output()
    assert "waits: another process holds the broadcast lease" in output
    assert "stopped by itself" not in " ".join(m.get("text", "") for m in tg.inbox(ADMIN))
    assert helpers.status(session_factory, push_uuid) == PushStatus.DONE
    assert helpers.counts(session_factory, push_uuid).sent == RECIPIENTS


def test_pushbot_push_is_refused_while_a_bot_process_is_sending(
    standin_factory: Callable[..., StandIn],
    bot_process: BotProcess,
    db_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    tg = standin_factory(StandInConfig(limits_enabled=False, latency=(0.01, 0.03)))
    tg.add_user(ADMIN)
    users, push_uuid = _running_push(tg, session_factory)
    env = _bot_env(tg, db_url)
    bot_process.env.update(env)
    bot_process.start()
    tg.wait_for(lambda: len(_copies(tg)) >= 30, timeout=60)  # the bot is sending now

    admin_messages = len(tg.inbox(ADMIN))
    refused = subprocess.run(
        [sys.executable, "-m", "pushbot", "push", "Me too, right now"],
        env=base_env(**{**env, "LOG_LEVEL": "WARNING"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 3, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert lines == [f"pushbot: broadcast {push_uuid} is still running; one at a time."]
    assert len(_copies(tg)) < RECIPIENTS, "the refusal came while the bot was sending"
    # Refused before anything happened: no source message, no second push in the ledger.
    assert not any("Me too" in m.get("text", "") for m in tg.inbox(ADMIN)[admin_messages:])
    with session_factory.begin() as session:
        assert [row.push.uuid for row in queries.recent_pushes(session, 5)] == [push_uuid]

    tg.wait_for_message(
        ADMIN, lambda m: "Broadcast finished" in m.get("text", ""), timeout=FINISH_TIMEOUT
    )
    copies = _copies(tg)
    assert set(copies) == set(users) and max(copies.values()) == 1
