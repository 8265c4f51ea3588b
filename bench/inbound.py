"""Issue 9, benchmark 3: updates handled per second when many NEW users send /start at once,
and the bot's CPU per update, beside minimal ptb bots measured in the same run.

Every run: a fresh stand-in process (`python -m tgstandin --no-limits`: otherwise replies
are capped at Telegram's 30/s) with N users who never wrote to the bot; its updates are
held (`hold_updates`) while the bot starts, then the N /start are queued in one control call
and released at once, so the bot meets a burst and neither start-up nor injection is
measured. Webhook: the stand-in POSTs them over up to 40 connections; polling: getUpdates
batches of 100.

- pushbot: the real bot (Runtime + BotThread, the code path of `pushbot run`) on a fresh
  PostgreSQL database, BROADCAST_RATE lifted so that the shared pacer does not cap its
  replies; every user's row is checked in the database afterwards, and the writes per group
  commit are reported;
- anchors (webhook only): bench/minimal_bot.py in a process of its own: ptb's defaults
  (HTTPXRequest, one update at a time), ptb with 64 concurrent updates on HTTPXRequest(16)
  (pushbot's shape before issue 9) and on pushbot's AiohttpRequest; no database.

Handled = the bot's reply to that user, as recorded by the stand-in (sendMessage 200).
Rate = N / (last reply - first reply). CPU per update = the bot process's CPU time (user +
system, all threads; for pushbot this process's threads but the main one, the driver's)
from the release to the last reply, / N. The stand-in's and everything else's CPU over the
same window are given too, to show which side was saturated. Rounds alternate the rows; the
best round of each row is reported. A py-spy profile (GIL holder) of one more pushbot
webhook run is appended when the goal is missed (or with --profile always).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    ADMIN_ID,
    CLOCK_TICKS,
    PYTHON,
    REPO_ROOT,
    BotRun,
    Profiler,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    bot_settings,
    command_line,
    cpu_seconds,
    emit,
    free_port,
    machine_busy_seconds,
    postgres_database,
    postgres_database_named,
    rate,
    statuses,
    wait_until,
)
from pushbot.db import queries
from tgstandin.remote import RemoteStandIn

WEBHOOK_GOAL = 1500.0
CPU_GOAL_MS = 0.66
UNLIMITED_RATE = 1e9
SECRET = "bench-secret_token"
ANCHORS = {
    "ptb-defaults": "minimal ptb bot, ptb's defaults (HTTPXRequest, one update at a time)",
    "ptb-64-httpx": "minimal ptb bot, 64 concurrent updates + HTTPXRequest(16)",
    "ptb-64-aiohttp": "minimal ptb bot, 64 concurrent updates + pushbot's AiohttpRequest",
}
MINIMAL_BOT = Path(__file__).resolve().parent / "minimal_bot.py"


def bot_threads_cpu(pid: int | None) -> float:
    """CPU seconds of process `pid`, or, for None, of this process but its main thread: the
    bot runs on threads of its own (BotThread, its writer...) while the main thread is this
    benchmark's driver, whose polls of the stand-in are no cost of the bot's."""
    if pid is not None:
        return cpu_seconds(pid)
    main = Path(f"/proc/self/task/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return cpu_seconds() - (int(main[11]) + int(main[12])) / CLOCK_TICKS


@dataclass
class Window:
    """CPU seconds of the bot, the stand-in and the rest of the machine over a window."""

    bot_pid: int | None  # None: this process's threads but the main one
    standin_pid: int
    bot: float = 0.0
    standin: float = 0.0
    machine: float = 0.0
    wall: float = 0.0
    _start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def start(self) -> Window:
        self._start = (
            time.monotonic(),
            bot_threads_cpu(self.bot_pid),
            cpu_seconds(self.standin_pid),
            machine_busy_seconds(),
        )
        return self

    def stop(self) -> Window:
        wall, bot, standin, machine = self._start
        self.wall = time.monotonic() - wall
        self.bot = bot_threads_cpu(self.bot_pid) - bot
        self.standin = cpu_seconds(self.standin_pid) - standin
        self.machine = machine_busy_seconds() - machine
        return self

    @property
    def others(self) -> float:
        return max(0.0, self.machine - self.bot - self.standin)

    def share(self, seconds: float) -> str:
        return f"{seconds / self.wall:.0%}" if self.wall > 0 else "n/a"


@dataclass
class Inbound:
    row: str  # "pushbot-webhook", "pushbot-polling" or an anchor's shape
    users: int
    first: float
    last: float
    window: Window
    subscribed: int | None = None
    commits: int | None = None
    calls_summary: dict[str, int] | None = None

    @property
    def rate(self) -> float:
        return rate(self.users, self.first, self.last)

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.window.bot / self.users

    def describe(self) -> str:
        w = self.window
        db = ""
        if self.subscribed is not None:
            per_commit = ""
            if self.commits:
                per_commit = f", {self.users / self.commits:.1f} writes per commit"
            db = f"; {self.subscribed} rows subscribed{per_commit}"
        return (
            f"{self.row}: {self.rate:,.0f} updates/s ({self.users} in "
            f"{self.last - self.first:.2f} s){db}; {self.cpu_ms:.3f} ms of bot CPU per update; "
            f"CPU over the {w.wall:.2f} s: bot {w.share(w.bot)} of a core, stand-in "
            f"{w.share(w.standin)} ({1000 * w.standin / self.users:.3f} ms per update), "
            f"everything else {w.share(w.others)} (2 cores = 200%)"
        )


def webhook_overrides(port: int) -> dict[str, object]:
    return {
        "webhook_url": f"http://127.0.0.1:{port}/hook",
        "webhook_listen": "127.0.0.1",
        "webhook_port": port,
        "webhook_path": "hook",
        "webhook_secret": SECRET,
    }


def release_burst(tg: RemoteStandIn, users: list[int], window: Window, timeout: float) -> None:
    """Queue every user's /start (held), release them, wait for every reply."""
    queued = tg.send_texts(users, "/start")
    if tg.pending_updates() != queued:
        raise RuntimeError(f"{tg.pending_updates()} updates pending, expected {queued}")
    window.start()
    tg.hold_updates(False)
    wait_until(
        lambda: tg.count("sendMessage", 200) >= len(users),
        timeout,
        f"{len(users)} replies",
        interval=0.05,
    )
    window.stop()


def reply_span(tg: RemoteStandIn, users: list[int]) -> tuple[float, float]:
    wanted = set(users)
    replies = sorted(
        c.at for c in tg.calls("sendMessage") if c.status == 200 and c.chat_id in wanted
    )
    if len(replies) != len(users):
        raise RuntimeError(f"{len(replies)} replies for {len(users)} users")
    return replies[0], replies[-1]


def run_pushbot(
    mode: str,
    database_url: str,
    users_count: int,
    seed: int,
    timeout: float,
    profiler: Profiler | None = None,
) -> Inbound:
    with StandInProcess("--no-limits", "--seed", str(seed)) as standin:
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        users = tg.add_users(users_count)
        tg.hold_updates(True)
        overrides: dict[str, object] = {"broadcast_rate": UNLIMITED_RATE}
        if mode == "webhook":
            overrides.update(webhook_overrides(free_port()))
        bot = BotRun(tg, bot_settings(tg, database_url, **overrides))
        window = Window(None, standin.pid)
        with bot:
            if profiler is not None:
                profiler.start()
            try:
                release_burst(tg, users, window, timeout)
            finally:
                if profiler is not None:
                    profiler.stop()
            commits = bot.runtime.store.writer.commits
            with bot.factory.begin() as session:
                subscribed = queries.audience_size(session)
        first, last = reply_span(tg, users)
        summary = statuses(tg.calls())
    return Inbound(
        f"pushbot-{mode}", users_count, first, last, window, subscribed, commits, summary
    )


def run_anchor(shape: str, users_count: int, seed: int, timeout: float) -> Inbound:
    with StandInProcess("--no-limits", "--seed", str(seed)) as standin:
        tg = standin.tg
        assert tg is not None
        users = tg.add_users(users_count)
        tg.hold_updates(True)
        command = [PYTHON, str(MINIMAL_BOT), "--shape", shape, "--token", tg.token]
        command += ["--base-url", tg.base_url, "--port", str(free_port())]
        bot = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            assert bot.stdout is not None
            if bot.stdout.readline().strip() != b"READY":
                raise RuntimeError(f"{shape} did not start")
            wait_until(lambda: bool(tg.webhook_url), 30, "the webhook to be set")
            window = Window(bot.pid, standin.pid)
            release_burst(tg, users, window, timeout)
        finally:
            bot.terminate()
            bot.wait(30)
        first, last = reply_span(tg, users)
    return Inbound(shape, users_count, first, last, window)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5000, help="new users (default 5000)")
    parser.add_argument(
        "--modes", nargs="+", choices=("webhook", "polling"), default=["webhook", "polling"]
    )
    parser.add_argument(
        "--anchors", nargs="*", choices=tuple(ANCHORS), default=list(ANCHORS), help="(webhook)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="best of N per row (default 2)")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy profile of one more pushbot webhook run: auto = when it misses the goal",
    )
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
    rows = [f"pushbot-{mode}" for mode in args.modes] + list(args.anchors)
    runs: dict[str, list[Inbound]] = {row: [] for row in rows}
    profile = None
    counter = 0
    with postgres_database() as server_url:

        def database() -> str:
            return postgres_database_named(server_url, f"inbound_{counter}")

        for round_index in range(args.rounds):
            # Alternate the order, so that no row always runs first (or last) on the machine.
            ordered = rows if round_index % 2 == 0 else rows[::-1]
            for row in ordered:
                counter += 1
                seed = args.seed + counter
                if row.startswith("pushbot-"):
                    mode = row.removeprefix("pushbot-")
                    run = run_pushbot(mode, database(), args.users, seed, args.timeout)
                else:
                    run = run_anchor(row, args.users, seed, args.timeout)
                print(f"  round {round_index + 1}: {run.describe()}", flush=True)
                runs[row].append(run)
        webhook = runs.get("pushbot-webhook", [])
        missed = webhook and not any(goal_met(run) for run in webhook)
        if args.profile == "always" or (args.profile == "auto" and missed):
            profiler = Profiler(gil=True)
            counter += 1
            run = run_pushbot(
                "webhook", database(), args.users, args.seed + counter, args.timeout, profiler
            )
            profile = profiler.summary(
                f"pushbot webhook, {args.users} new users, {run.rate:,.0f} updates/s under the "
                f"profiler (bot process, GIL holder only, {profiler.rate_hz} Hz)"
            )
    emit(describe(args, command, runs, profile), args.json)
    return 0


def goal_met(run: Inbound) -> bool:
    return run.rate >= WEBHOOK_GOAL and run.cpu_ms <= CPU_GOAL_MS and run.subscribed == run.users


def best(runs: list[Inbound]) -> Inbound:
    return max(runs, key=lambda r: (r.rate, -r.cpu_ms))


def describe(
    args: argparse.Namespace, command: str, runs: dict[str, list[Inbound]], profile: str | None
) -> Result:
    result_rows: list[Row] = []
    details = [f"- `{command}` (every run; the machine had {os.cpu_count()} cores):"]
    data: dict[str, object] = {}
    reference = runs.get("ptb-defaults")
    anchor = best(reference) if reference else None
    for row, row_runs in runs.items():
        top = best(row_runs)
        versus = ""
        if anchor is not None and row != "ptb-defaults":
            versus = (
                f"; {top.rate / anchor.rate:.1f}× the updates/s, {top.cpu_ms / anchor.cpu_ms:.2f}× "
                "the CPU per update of ptb's defaults"
            )
        figure = (
            f"{top.rate:,.0f} updates/s, {top.cpu_ms:.3f} ms of bot CPU per update "
            f"(stand-in {top.window.share(top.window.standin)} of a core){versus}"
        )
        if row == "pushbot-webhook":
            label = f"inbound /start burst, {args.users:,} new users, webhook, PostgreSQL"
            goal = f"≥ {WEBHOOK_GOAL:,.0f} updates/s, ≤ {CPU_GOAL_MS} ms CPU per update"
            met: bool | None = goal_met(top)
            figure += f", {top.subscribed:,}/{args.users:,} subscribed"
        elif row == "pushbot-polling":
            label = f"inbound /start burst, {args.users:,} new users, polling, PostgreSQL"
            goal, met = "reported", None
            figure += f", {top.subscribed:,}/{args.users:,} subscribed"
        else:
            label = f"anchor: {ANCHORS[row]}, webhook, {args.users:,} new users, no database"
            goal, met = "reported", None
        result_rows.append(Row(label, figure + f" (best of {len(row_runs)})", goal, met, command))
        details += [f"  - {run.describe()}" for run in row_runs]
        data[row] = [{"rate": run.rate, "cpu_ms": run.cpu_ms} for run in row_runs]
        if any(run.subscribed is not None and run.subscribed != args.users for run in row_runs):
            details.append(f"  - {row}: some users were not recorded in the database!")
    last = next((r[-1] for r in runs.values() if r and r[-1].calls_summary), None)
    if last is not None:
        details.append(
            f"  - calls seen by the stand-in in the last pushbot run: {last.calls_summary}"
        )
    return Result("inbound", result_rows, details, profile, data)


if __name__ == "__main__":
    sys.exit(main())
