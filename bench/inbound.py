"""Issue #5: updates handled per second when many NEW users send /start at once.

For each mode (webhook, polling) and round: a fresh stand-in process with its send limit
lifted (otherwise the bot's replies are capped at Telegram's 30/s), a fresh PostgreSQL
database, N users who have never written to the bot. All N /start updates are queued at
the stand-in before the bot starts, so injection is never the limit: the bot finds a burst
of N pending updates (webhook: the stand-in POSTs them, up to max_connections=40 at a time;
polling: getUpdates batches of 100). The real bot (Runtime + BotThread) runs with
broadcast_rate lifted so that the shared pacer does not cap its replies.

Handled = the bot's reply to that user, as recorded by the stand-in (sendMessage 200).
Rate = N / (last reply - first reply). Afterwards every user must have a subscribed row in
PostgreSQL (checked). A py-spy profile (GIL holder) of one more webhook run is appended
when the webhook rate misses the goal.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from dataclasses import dataclass

from common import (
    ADMIN_ID,
    BotRun,
    CpuMeter,
    Profiler,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    bot_settings,
    command_line,
    emit,
    postgres_database,
    postgres_database_named,
    rate,
    statuses,
    wait_until,
)
from pushbot.db import queries
from tgstandin.remote import RemoteStandIn

WEBHOOK_GOAL = 1500.0
UNLIMITED_RATE = 1e9
SECRET = "bench-secret_token"


@dataclass
class Inbound:
    mode: str
    users: int
    first: float
    last: float
    subscribed: int
    cpu: CpuMeter
    calls_summary: dict[str, int]

    @property
    def rate(self) -> float:
        return rate(self.users, self.first, self.last)

    def describe(self) -> str:
        return (
            f"{self.mode}: {self.rate:.0f} updates/s ({self.users} in "
            f"{self.last - self.first:.2f} s; {self.subscribed} rows subscribed); "
            f"{1000 * self.cpu.own / self.users:.2f} ms of bot-process CPU per update "
            f"(start-up included); {self.cpu.describe()}"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def queue_starts(control_url: str, users: list[int], threads: int) -> None:
    """Every user sends /start (bounded: one call each), from a few control connections."""

    def send(chunk: list[int]) -> None:
        with RemoteStandIn(control_url) as tg:
            for user in chunk:
                tg.send_text(user, "/start")

    chunks = [users[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=send, args=(c,), daemon=True) for c in chunks if c]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)


def run_once(
    mode: str,
    server_url: str,
    database_name: str,
    users_count: int,
    seed: int,
    timeout: float,
    threads: int,
    profiler: Profiler | None = None,
) -> Inbound:
    database_url = postgres_database_named(server_url, database_name)
    with StandInProcess("--no-limits", "--seed", str(seed)) as standin:
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        users = tg.add_users(users_count)
        queue_starts(tg.control_url, users, threads)
        pending = tg.pending_updates()
        if pending != users_count:
            raise RuntimeError(f"{pending} updates pending, expected {users_count}")
        overrides: dict[str, object] = {"broadcast_rate": UNLIMITED_RATE}
        if mode == "webhook":
            port = free_port()
            overrides.update(
                webhook_url=f"http://127.0.0.1:{port}/hook",
                webhook_listen="127.0.0.1",
                webhook_port=port,
                webhook_path="hook",
                webhook_secret=SECRET,
            )
        settings = bot_settings(tg, database_url, **overrides)
        bot = BotRun(tg, settings)
        cpu = CpuMeter(standin.pid)
        if profiler is not None:
            profiler.start()
        try:
            cpu.start()
            with bot:
                wait_until(
                    lambda: tg.count("sendMessage", 200) >= users_count,
                    timeout,
                    f"{users_count} replies",
                    interval=0.2,
                )
                cpu.stop()
                if profiler is not None:
                    profiler.stop()
                with bot.factory.begin() as session:
                    subscribed = queries.audience_size(session)
        finally:
            if profiler is not None:
                profiler.stop()
        wanted = set(users)
        calls = tg.calls("sendMessage")
        replies = sorted(c.at for c in calls if c.status == 200 and c.chat_id in wanted)
        if len(replies) != users_count:
            raise RuntimeError(f"{len(replies)} replies for {users_count} users")
        summary = statuses(tg.calls())
    return Inbound(mode, users_count, replies[0], replies[-1], subscribed, cpu, summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5000, help="new users (default 5000)")
    parser.add_argument(
        "--modes", nargs="+", choices=("webhook", "polling"), default=["webhook", "polling"]
    )
    parser.add_argument("--rounds", type=int, default=2, help="best of N per mode (default 2)")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy profile of one more webhook run: auto = when it misses the goal",
    )
    parser.add_argument("--inject-threads", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    add_common_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        args.users = min(args.users, 600)
        args.rounds = 1
    command = command_line("inbound.py", argv)
    runs: dict[str, list[Inbound]] = {mode: [] for mode in args.modes}
    profile = None
    with postgres_database() as server_url:
        counter = 0
        for round_index in range(args.rounds):
            for mode in args.modes:
                counter += 1
                run = run_once(
                    mode,
                    server_url,
                    f"inbound_{counter}",
                    args.users,
                    args.seed + counter,
                    args.timeout,
                    args.inject_threads,
                )
                print(f"  round {round_index + 1}: {run.describe()}", flush=True)
                runs[mode].append(run)
        best_webhook = max((r.rate for r in runs.get("webhook", [])), default=None)
        if args.profile == "always" or (
            args.profile == "auto" and best_webhook is not None and best_webhook < WEBHOOK_GOAL
        ):
            profiler = Profiler(gil=True)
            counter += 1
            run = run_once(
                "webhook",
                server_url,
                f"inbound_{counter}",
                args.users,
                args.seed + counter,
                args.timeout,
                args.inject_threads,
                profiler,
            )
            profile = profiler.summary(
                f"webhook mode, {args.users} new users, {run.rate:.0f} updates/s under the "
                f"profiler (bot process, GIL holder only, {profiler.rate_hz} Hz)"
            )
    emit(describe(args, command, runs, profile), args.json)
    return 0


def describe(
    args: argparse.Namespace, command: str, runs: dict[str, list[Inbound]], profile: str | None
) -> Result:
    rows: list[Row] = []
    details = [f"- `{command}` (every run):"]
    data: dict[str, object] = {}
    for mode, mode_runs in runs.items():
        best = max(mode_runs, key=lambda r: r.rate)
        goal = f"≥ {WEBHOOK_GOAL:,.0f} updates/s" if mode == "webhook" else "reported"
        met = best.rate >= WEBHOOK_GOAL if mode == "webhook" else None
        rows.append(
            Row(
                f"inbound /start burst, {args.users:,} new users, {mode}, PostgreSQL",
                f"{best.rate:,.0f} updates/s (best of {len(mode_runs)})",
                goal,
                met,
                command,
            )
        )
        details += [f"  - {run.describe()}" for run in mode_runs]
        data[mode] = [run.rate for run in mode_runs]
        if any(run.subscribed != args.users for run in mode_runs):
            details.append(f"  - {mode}: some users were not recorded in the database!")
    last = next(iter(runs.values()))[-1]
    details.append(f"  - calls seen by the stand-in in the last run: {last.calls_summary}")
    return Result("inbound", rows, details, profile, data)


if __name__ == "__main__":
    sys.exit(main())
