"""docs/scaling.md's figures: the bot as one and as two webhook processes behind a proxy that
routes by chat (bench/chat_router.py), on one PostgreSQL, measured in one run.

Every process is its own: the stand-in, the proxy, each bot (bench/bot_process.py: the
real bot, `pushbot run`'s code path) and PostgreSQL, all on this machine's cores. Two
scenarios per shape:

- burst: the stand-in's limits lifted (and the bots' pace), N new users' /start held, then
  released at once (as bench/inbound.py does): updates/s from the first reply to the last,
  and each process's CPU per update it handled; every user's row checked in PostgreSQL,
  each user's replies counted;
- limits: Telegram's limits on (30/s per bot token), M new users' /start at once: the
  pace of the replies and the 429s Telegram answered. Each process paces itself at 29.8/s
  (its own gateway), so two processes together ask for twice what the token may send;
- shares: the same with each of the two processes given half the budget
  (BROADCAST_RATE=14.9, which is also the free budget's pace without paid broadcasts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from common import (
    ADMIN_ID,
    PYTHON,
    REPO_ROOT,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    command_line,
    cpu_seconds,
    emit,
    free_port,
    machine_busy_seconds,
    postgres_database,
    postgres_database_named,
    rate,
    wait_until,
)
from pushbot.db import queries
from tgstandin.remote import RemoteStandIn

BENCH = Path(__file__).resolve().parent
SECRET = "bench-secret_token"
SHARED_RATE = 29.8


@dataclass
class Shape:
    processes: int
    scenario: str
    users: int
    first: float
    last: float
    cpu: dict[str, float]  # process name -> CPU seconds over the window
    handled: dict[str, int]  # bot process -> updates it answered
    wall: float
    machine: float
    subscribed: int
    replies_per_user: Counter[int]
    too_many: int

    @property
    def rate(self) -> float:
        return rate(self.users, self.first, self.last)

    def describe(self) -> str:
        bots = ", ".join(
            f"{name} handled {self.handled[name]} at "
            f"{1000 * self.cpu[name] / max(1, self.handled[name]):.3f} ms CPU each "
            f"({self.cpu[name] / self.wall:.0%} of a core)"
            for name in self.handled
        )
        others = self.machine - sum(self.cpu.values())
        proxy, standin = self.cpu["proxy"] / self.wall, self.cpu["stand-in"] / self.wall
        return (
            f"{self.processes} process(es), {self.scenario}: {self.rate:,.1f} replies/s "
            f"({self.users} users in {self.last - self.first:.2f} s); {bots}; proxy "
            f"{proxy:.0%}, stand-in {standin:.0%}, "
            f"everything else (PostgreSQL, other work) {max(0.0, others) / self.wall:.0%} of a "
            f"core; {self.subscribed} subscribed; replies per user "
            f"{dict(sorted(self.replies_per_user.items()))}; {self.too_many} × 429"
        )


def start_ready(command: list[str], what: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"READY":
        process.kill()
        raise RuntimeError(f"{what} did not start")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def run_shape(
    processes: int, scenario: str, database_url: str, users_count: int, timeout: float
) -> Shape:
    limited = scenario in ("limits", "shares")
    standin_args = () if limited else ("--no-limits",)
    with StandInProcess(*standin_args) as standin:
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID)
        users = tg.add_users(users_count)
        tg.hold_updates(True)
        proxy_port = free_port()
        ports = [free_port() for _ in range(processes)]
        backends = [arg for port in ports for arg in ("--backend", f"http://127.0.0.1:{port}/hook")]
        proxy = start_ready(
            [PYTHON, str(BENCH / "chat_router.py"), "--port", str(proxy_port), *backends],
            "the proxy",
        )
        bots: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for index, port in enumerate(ports):
                settings = {
                    "bot_token": tg.token,
                    "telegram_base_url": tg.base_url,
                    "admin_ids": str(ADMIN_ID),
                    "database_url": database_url,
                    "log_level": "WARNING",
                    "webhook_url": f"http://127.0.0.1:{proxy_port}/hook",
                    "webhook_listen": "127.0.0.1",
                    "webhook_port": str(port),
                    "webhook_path": "hook",
                    "webhook_secret": SECRET,
                }
                if not limited:
                    settings["broadcast_rate"] = "1e9"
                elif scenario == "shares":
                    settings["broadcast_rate"] = str(SHARED_RATE / processes)
                arguments = [item for k, v in settings.items() for item in ("--set", f"{k}={v}")]
                # One after the other: each applies the migrations at its start.
                bots[f"bot {index + 1}"] = start_ready(
                    [PYTHON, str(BENCH / "bot_process.py"), *arguments], f"bot {index + 1}"
                )
            pids = {name: p.pid for name, p in bots.items()}
            pids |= {"proxy": proxy.pid, "stand-in": standin.pid}
            since = time.monotonic()
            queued = tg.send_texts(users, "/start")
            assert tg.pending_updates() == queued
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            machine_before, started = machine_busy_seconds(), time.monotonic()
            tg.hold_updates(False)
            wait_until(
                lambda: tg.count("sendMessage", 200) >= users_count,
                timeout,
                f"{users_count} replies",
                interval=0.1,
            )
            wall = time.monotonic() - started
            cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            machine = machine_busy_seconds() - machine_before
        finally:
            for process in bots.values():
                stop(process)
            stop(proxy)
        return measured(processes, scenario, tg, users, since, cpu, wall, machine, database_url)


def measured(
    processes: int,
    scenario: str,
    tg: RemoteStandIn,
    users: list[int],
    since: float,
    cpu: dict[str, float],
    wall: float,
    machine: float,
    database_url: str,
) -> Shape:
    wanted = set(users)
    calls = [c for c in tg.calls() if c.at >= since]
    replies = [c for c in calls if c.method == "sendMessage" and c.status == 200]
    answered = [c.chat_id for c in replies if isinstance(c.chat_id, int) and c.chat_id in wanted]
    per_user = Counter(answered)
    engine = create_engine(database_url)
    try:
        with sessionmaker(engine).begin() as session:
            subscribed = queries.audience_size(session)
    finally:
        engine.dispose()
    # Which process answered a chat follows from the proxy's rule (chat id mod N).
    handled = Counter(f"bot {chat_id % processes + 1}" for chat_id in answered)
    times = sorted(c.at for c in replies if c.chat_id in wanted)
    return Shape(
        processes,
        scenario,
        len(users),
        times[0],
        times[-1],
        cpu,
        {name: handled[name] for name in sorted(handled)},
        wall,
        machine,
        subscribed,
        Counter(per_user.get(u, 0) for u in users),
        sum(1 for c in calls if c.status == 429),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000, help="burst: new users")
    parser.add_argument("--limited-users", type=int, default=600, help="limits: new users")
    parser.add_argument("--timeout", type=float, default=300.0)
    add_common_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.limited_users = min(args.users, 600), min(args.limited_users, 150)
    command = command_line("scale_out.py", argv)
    shapes: list[Shape] = []
    with postgres_database() as server_url:
        shapes_to_run = [
            ("burst", args.users, 1),
            ("burst", args.users, 2),
            ("limits", args.limited_users, 1),
            ("limits", args.limited_users, 2),
            ("shares", args.limited_users, 2),
        ]
        for counter, (scenario, users, processes) in enumerate(shapes_to_run):
            database = postgres_database_named(server_url, f"scale_{counter}")
            shape = run_shape(processes, scenario, database, users, args.timeout)
            print(f"  {shape.describe()}", flush=True)
            shapes.append(shape)
    rows = [
        Row(
            f"{s.processes} webhook process(es) behind a chat-routing proxy, {s.scenario}, "
            f"{s.users:,} new users, one PostgreSQL",
            f"{s.rate:,.1f} replies/s; {s.too_many} × 429; {s.subscribed:,} subscribed",
            "reported",
            None,
            command,
        )
        for s in shapes
    ]
    details = [f"- `{command}` ({os.cpu_count()} cores):"] + [f"  - {s.describe()}" for s in shapes]
    emit(Result("scale_out", rows, details), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
