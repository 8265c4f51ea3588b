"""Issue 9, benchmark 4: the storm. 3,000 new users send /start within a second (a QR code
shown at an event) with Telegram's limits in force, and an admin asks for /help meanwhile.

The stand-in runs as a separate process with Telegram's limits on (30/s per bot, burst 10;
~1/s per chat; 429 with retry_after) and 30-120 ms latency on every Bot API call. The real
bot (Runtime + BotThread, default settings: BROADCAST_RATE 29.8, UPDATE_CONCURRENCY 64) runs
on a fresh PostgreSQL database, in webhook mode (the stand-in POSTs updates over up to 100
connections) and, beside it, in polling mode.

The rush: the users' /start arrive in ten slices of 300, one every 0.1 s; the admin's
/help comes after the fifth slice. Measured:

- recorded: from the first /start to the moment every user's row is in PostgreSQL
  (the database polled every 0.05 s by the driver);
- the admin's answer: from sending /help to the stand-in receiving the bot's reply;
- replies: N / (last reply - first reply) to the users, as the stand-in recorded them;
  each user must get exactly one;
- 429s over every method, from the rush on.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from common import (
    ADMIN_ID,
    BotRun,
    CpuMeter,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    bot_settings,
    command_line,
    emit,
    free_port,
    postgres_database,
    postgres_database_named,
    rate,
    statuses,
    wait_until,
)
from pushbot.db import queries
from tgstandin.remote import RemoteStandIn

USERS = 3000
SLICES = 10
SLICE_EVERY = 0.1
ADMIN_AFTER_SLICE = 5
LATENCY = (0.03, 0.12)
SECRET = "bench-secret_token"
RECORDED_GOAL = 5.0
ADMIN_GOAL = 2.0
PACE_GOAL = 29.0


@dataclass
class Storm:
    mode: str
    users: int
    recorded_after: float
    admin_answer: float
    first_reply: float
    last_reply: float
    too_many: int
    replies_per_user: dict[int, int]
    cpu: CpuMeter
    calls_summary: dict[str, int]

    @property
    def pace(self) -> float:
        return rate(self.users, self.first_reply, self.last_reply)

    @property
    def everyone_once(self) -> bool:
        return set(self.replies_per_user.values()) == {1}

    def met(self) -> bool:
        return (
            self.recorded_after <= RECORDED_GOAL
            and self.admin_answer <= ADMIN_GOAL
            and self.pace >= PACE_GOAL
            and self.too_many == 0
            and self.everyone_once
        )

    def describe(self) -> str:
        counts = sorted(set(self.replies_per_user.values()))
        span = self.last_reply - self.first_reply
        return (
            f"{self.mode}: every subscription recorded {self.recorded_after:.2f} s after the "
            f"first /start; the admin's /help answered in {self.admin_answer:.2f} s; "
            f"{self.users} replies at {self.pace:.2f}/s (the last {span:.1f} s after the "
            f"first), replies per user {counts}; {self.too_many} × 429; "
            f"{self.cpu.describe()}"
        )


def rush(tg: RemoteStandIn, users: list[int]) -> tuple[float, float]:
    """The slices, and the admin's /help among them: (first /start, the admin's /help)."""
    size = len(users) // SLICES
    started = time.monotonic()
    asked = started
    for index in range(SLICES):
        due = started + index * SLICE_EVERY
        time.sleep(max(0.0, due - time.monotonic()))
        tg.send_texts(users[index * size : (index + 1) * size], "/start")
        if index + 1 == ADMIN_AFTER_SLICE:
            asked = time.monotonic()
            tg.send_text(ADMIN_ID, "/help")
    return started, asked


def run_once(mode: str, database_url: str, users_count: int, seed: int, timeout: float) -> Storm:
    latency = [str(value) for value in LATENCY]
    with StandInProcess("--latency", *latency, "--seed", str(seed)) as standin:
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        users = tg.add_users(users_count)
        overrides: dict[str, object] = {}
        if mode == "webhook":
            port = free_port()
            overrides.update(
                webhook_url=f"http://127.0.0.1:{port}/hook",
                webhook_listen="127.0.0.1",
                webhook_port=port,
                webhook_path="hook",
                webhook_secret=SECRET,
            )
        bot = BotRun(tg, bot_settings(tg, database_url, **overrides))
        cpu = CpuMeter(standin.pid)
        with bot:
            tg.reset_limits()  # start-up's calls spent nothing of the rush's budget
            since = time.monotonic()
            cpu.start()
            first, asked = rush(tg, users)

            def audience() -> int:
                with bot.factory.begin() as session:
                    return queries.audience_size(session)

            wait_until(lambda: audience() >= users_count, timeout, "every subscription", 0.05)
            recorded = time.monotonic()
            wait_until(
                lambda: tg.count("sendMessage", 200) >= users_count + 1,
                timeout,
                "every reply",
                interval=0.5,
            )
            cpu.stop()
        calls = tg.calls()
        wanted = set(users)
        replies = sorted(
            c.at
            for c in calls
            if c.method == "sendMessage" and c.status == 200 and c.chat_id in wanted
        )
        admin = [
            c.at
            for c in calls
            if c.method == "sendMessage"
            and c.status == 200
            and c.chat_id == ADMIN_ID
            and c.at > asked
        ]
        per_user = dict.fromkeys(users, 0)
        for c in calls:
            if c.method == "sendMessage" and c.status == 200 and c.chat_id in wanted:
                per_user[c.chat_id] += 1
        too_many = sum(1 for c in calls if c.status == 429 and c.at >= since)
        summary = statuses(calls, since)
    return Storm(
        mode,
        users_count,
        recorded - first,
        (admin[0] - asked) if admin else float("inf"),
        replies[0],
        replies[-1],
        too_many,
        per_user,
        cpu,
        summary,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=USERS, help=f"new users (default {USERS})")
    parser.add_argument(
        "--modes", nargs="+", choices=("webhook", "polling"), default=["webhook", "polling"]
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    add_common_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        args.users = min(args.users, 300)
    command = command_line("storm.py", argv)
    runs = []
    with postgres_database() as server_url:
        for index, mode in enumerate(args.modes):
            database = postgres_database_named(server_url, f"storm_{index}")
            run = run_once(mode, database, args.users, args.seed + index, args.timeout)
            print(f"  {run.describe()}", flush=True)
            runs.append(run)
    emit(describe(args, command, runs), args.json)
    return 0


def describe(args: argparse.Namespace, command: str, runs: list[Storm]) -> Result:
    rows = []
    details = [
        f"- `{command}`: stand-in at Telegram's limits (30/s, burst 10; 1/s per chat), latency "
        f"{LATENCY[0]}-{LATENCY[1]} s; {args.users:,} /start in {SLICES} slices "
        f"{SLICE_EVERY} s apart, the admin's /help after slice {ADMIN_AFTER_SLICE}; PostgreSQL."
    ]
    data: dict[str, object] = {}
    for run in runs:
        rows.append(
            Row(
                f"storm: {args.users:,} /start within a second, Telegram's limits, {run.mode}, "
                "PostgreSQL",
                f"all recorded in {run.recorded_after:.2f} s; admin answered in "
                f"{run.admin_answer:.2f} s; replies {run.pace:.2f}/s, "
                f"{'each user once' if run.everyone_once else 'NOT each user once'}; "
                f"{run.too_many} × 429",
                f"recorded ≤ {RECORDED_GOAL:g} s, admin ≤ {ADMIN_GOAL:g} s, replies ≥ "
                f"{PACE_GOAL:g}/s, 0 × 429"
                if run.mode == "webhook"
                else "reported",
                run.met() if run.mode == "webhook" else None,
                command,
            )
        )
        details.append(f"  - {run.describe()}")
        details.append(f"  - {run.mode}: calls from the rush on: {run.calls_summary}")
        data[run.mode] = {
            "recorded_after": run.recorded_after,
            "admin_answer": run.admin_answer,
            "pace": run.pace,
            "too_many": run.too_many,
        }
    return Result("storm", rows, details, None, data)


if __name__ == "__main__":
    sys.exit(main())
