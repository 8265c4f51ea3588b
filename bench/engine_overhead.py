"""Issue #3, benchmark 2: what the Broadcaster costs over a bare ptb loop, and its memory.

Limits lifted (stand-in `--no-limits`, separate process, no latency), PostgreSQL (a
throwaway server from tests/fixtures/postgres.py; `--database sqlite`: an SQLite file), N
subscribed chats:

(a) engine: `Broadcaster(settings, session_factory, pacer=Pacer(1e9)).start()`, then
    `create_push` + `launch_push` + `wait` (the ledger, 30 worker threads, one event loop,
    HTTP pool 30): the source is a message the admin sent to the bot first;
(b) bare: one `telegram.Bot` with HTTPXRequest(connection_pool_size=30), `copy_message` to
    the same N chats from 30 concurrent coroutines (asyncio.Semaphore(30)), no database.

Both run in this process, alternating which goes first, best of --rounds each. Rate =
N / wall time (launch -> report for (a), first request -> last answer for (b)).
Overhead = 1 - engine/bare. When it is over the goal a py-spy profile (--gil) of one more
engine run and one bare run is appended.

Peak memory: a --memory-recipients broadcast (engine only) in a subprocess of its own, which
reports its VmHWM and ru_maxrss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from telegram import Bot
from telegram.request import HTTPXRequest

from common import (
    ADMIN_ID,
    PYTHON,
    CpuMeter,
    Profiler,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    command_line,
    emit,
    postgres_database,
    quiet_logging,
    seed_audience,
    sqlite_database,
)
from pushbot.broadcast.engine import Broadcaster
from pushbot.broadcast.pacing import Pacer
from pushbot.config import Settings
from pushbot.db import queries
from pushbot.db.session import create_db_engine, create_session_factory, upgrade_database
from pushbot.runtime import EXTRA_DB_CONNECTIONS
from tgstandin.remote import RemoteStandIn

DATABASES = {"postgresql": ("PostgreSQL", postgres_database), "sqlite": ("SQLite", sqlite_database)}
OVERHEAD_GOAL = 0.20
MEMORY_GOAL_MB = 250.0
UNLIMITED_RATE = 1e9
BARE_CONCURRENCY = 30
MEMORY_MARK = "MEMORY_RESULT "


@dataclass
class Run:
    kind: str
    sent: int
    seconds: float
    cpu: CpuMeter | None = None
    standin_span: float = math.nan

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    def describe(self) -> str:
        cpu = ""
        if self.cpu is not None:
            per_message = 1000 * self.cpu.own / self.sent
            cpu = f"; {per_message:.2f} ms of CPU per message here; {self.cpu.describe()}"
        return (
            f"{self.kind}: {self.rate:.0f} msg/s ({self.sent} in {self.seconds:.2f} s; "
            f"first→last copy at the stand-in {self.standin_span:.2f} s){cpu}"
        )


# --- (a) the engine ------------------------------------------------------------------------------


def engine_settings(token: str, base_url: str, database_url: str) -> Settings:
    return Settings(
        bot_token=token,
        admin_ids=frozenset({ADMIN_ID}),
        database_url=database_url,
        telegram_base_url=base_url,
        broadcast_rate=UNLIMITED_RATE,
        log_level="WARNING",
    )


def session_factory_for(settings: Settings) -> sessionmaker[Session]:
    # As Runtime.create sizes it: the broadcaster's connections plus a few.
    engine = create_db_engine(
        settings.database_url,
        pool_size=settings.effective_broadcast_pool_size + EXTRA_DB_CONNECTIONS,
    )
    return create_session_factory(engine)


def run_engine(
    settings: Settings,
    factory: sessionmaker[Session],
    source_message_id: int,
    expected: int,
    timeout: float,
    standin_pid: int | None = None,
) -> Run:
    broadcaster = Broadcaster(settings, factory, pacer=Pacer(UNLIMITED_RATE))
    broadcaster.start()
    try:
        with factory.begin() as session:
            push = queries.create_push(
                session,
                queries.PushDraft(
                    text="Engine benchmark: please ignore",
                    content_type="text",
                    source_chat_id=ADMIN_ID,
                    source_message_id=source_message_id,
                    admin_id=ADMIN_ID,
                ),
            )
        cpu = CpuMeter(standin_pid).start() if standin_pid is not None else None
        started = time.monotonic()
        report = broadcaster.launch_push(push.uuid).wait(timeout)
        elapsed = time.monotonic() - started
        if cpu is not None:
            cpu.stop()
    finally:
        broadcaster.shutdown()
    if report.sent != expected or report.failed:
        raise RuntimeError(f"engine run: {report.sent} sent, {report.failed} failed: {report}")
    return Run("engine", report.sent, elapsed, cpu)


# --- (b) the bare ptb loop -----------------------------------------------------------------------


async def _bare(token: str, base_url: str, source_message_id: int, chats: list[int]) -> float:
    bot = Bot(token, base_url=base_url, request=HTTPXRequest(connection_pool_size=30))
    async with bot:  # initialize (getMe) and shutdown, outside the timing
        semaphore = asyncio.Semaphore(BARE_CONCURRENCY)

        async def copy(chat_id: int) -> None:
            async with semaphore:
                await bot.copy_message(
                    chat_id=chat_id, from_chat_id=ADMIN_ID, message_id=source_message_id
                )

        started = time.monotonic()
        await asyncio.gather(*(copy(chat_id) for chat_id in chats))
        return time.monotonic() - started


def run_bare(
    tg: RemoteStandIn,
    source_message_id: int,
    chats: list[int],
    timeout: float,
    standin_pid: int | None = None,
) -> Run:
    cpu = CpuMeter(standin_pid).start() if standin_pid is not None else None

    async def bounded() -> float:
        return await asyncio.wait_for(
            _bare(tg.token, tg.base_url, source_message_id, chats), timeout
        )

    elapsed = asyncio.run(bounded())
    if cpu is not None:
        cpu.stop()
    return Run("bare", len(chats), elapsed, cpu)


# --- the memory child ----------------------------------------------------------------------------


def memory_child(config_json: str) -> int:
    """Runs in its own process: one engine broadcast; prints its memory high-water mark."""
    config = json.loads(config_json)
    settings = engine_settings(config["token"], config["base_url"], config["database_url"])
    quiet_logging(settings)
    factory = session_factory_for(settings)
    rss_before = _status_kb("VmRSS")
    run = run_engine(
        settings, factory, config["source_message_id"], config["expected"], config["timeout"]
    )
    result = {
        "sent": run.sent,
        "seconds": run.seconds,
        "rate": run.rate,
        "vmhwm_kb": _status_kb("VmHWM"),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_before_kb": rss_before,
    }
    print(MEMORY_MARK + json.dumps(result), flush=True)
    return 0


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def run_memory_child(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    completed = subprocess.run(
        [PYTHON, str(Path(__file__).resolve()), "--memory-child", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(MEMORY_MARK):
            result: dict[str, Any] = json.loads(line[len(MEMORY_MARK) :])
            return result
    raise RuntimeError(
        f"the memory run failed ({completed.returncode}): {completed.stderr[-3000:]}"
    )


# --- the benchmark -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=10_000, help="default 10,000")
    parser.add_argument("--rounds", type=int, default=5, help="best of N (N >= 2), default 5")
    parser.add_argument("--memory-recipients", type=int, default=100_000, help="0 skips it")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy profiles: auto = when the overhead misses the goal",
    )
    parser.add_argument(
        "--database", choices=sorted(DATABASES), default="postgresql", help="default postgresql"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--memory-child", metavar="CONFIG", help=argparse.SUPPRESS)
    add_common_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child)
    if args.quick:
        args.recipients = min(args.recipients, 1500)
        args.memory_recipients = min(args.memory_recipients, 5000)
        args.rounds = 2
    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2 (best of N, alternating order)")
    command = command_line("engine_overhead.py", argv)
    _, database = DATABASES[args.database]
    with (
        database() as database_url,
        StandInProcess("--no-limits", "--seed", str(args.seed)) as standin,
    ):
        tg = standin.tg
        assert tg is not None
        upgrade_database(database_url)
        settings = engine_settings(tg.token, tg.base_url, database_url)
        quiet_logging(settings)
        factory = session_factory_for(settings)
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        chats = tg.add_users(args.recipients)
        seed_audience(factory, chats, bulk=True)
        source_id = int(tg.send_text(ADMIN_ID, "Engine benchmark: please ignore")["message_id"])

        def measure(kind: str) -> Run:
            tg.reset_calls()
            if kind == "engine":
                run = run_engine(
                    settings, factory, source_id, len(chats), args.timeout, standin.pid
                )
            else:
                run = run_bare(tg, source_id, chats, args.timeout, standin.pid)
            ats = [c.at for c in tg.calls("copyMessage") if c.status == 200]
            run.standin_span = max(ats) - min(ats)
            print(f"  {run.describe()}", flush=True)
            return run

        runs: dict[str, list[Run]] = {"engine": [], "bare": []}
        for round_index in range(args.rounds):
            order = ("engine", "bare") if round_index % 2 == 0 else ("bare", "engine")
            for kind in order:
                runs[kind].append(measure(kind))
        best_engine = max(runs["engine"], key=lambda r: r.rate)
        best_bare = max(runs["bare"], key=lambda r: r.rate)
        overhead = 1 - best_engine.rate / best_bare.rate

        profile = None
        if args.profile == "always" or (args.profile == "auto" and overhead > OVERHEAD_GOAL):
            profile = profile_both(settings, factory, tg, source_id, chats, args.timeout)

        memory: dict[str, Any] | None = None
        if args.memory_recipients > 0:
            more = args.memory_recipients - len(chats)
            if more > 0:
                extra = tg.add_users(more)
                seed_audience(factory, extra, bulk=True)
            tg.reset_calls()
            memory = run_memory_child(
                {
                    "token": tg.token,
                    "base_url": tg.base_url,
                    "database_url": database_url,
                    "source_message_id": source_id,
                    "expected": max(args.memory_recipients, len(chats)),
                    "timeout": args.timeout,
                },
                timeout=args.timeout + 60,
            )
            tg.reset_calls()
        factory.kw["bind"].dispose()

    result = describe(args, command, runs, best_engine, best_bare, overhead, memory, profile)
    emit(result, args.json)
    return 0


def profile_both(
    settings: Settings,
    factory: sessionmaker[Session],
    tg: RemoteStandIn,
    source_id: int,
    chats: list[int],
    timeout: float,
) -> str:
    parts = []
    profiler = Profiler(gil=True).start()
    started = time.monotonic()
    try:
        run = run_engine(settings, factory, source_id, len(chats), timeout)
    finally:
        profiler.stop()
    wall = time.monotonic() - started
    parts.append(
        profiler.summary(
            f"engine, {len(chats)} recipients, {run.rate:.0f} msg/s under the profiler "
            f"({wall:.1f} s sampled at {profiler.rate_hz} Hz, GIL holder only)"
        )
    )
    profiler = Profiler(gil=True).start()
    started = time.monotonic()
    try:
        bare = run_bare(tg, source_id, chats, timeout)
    finally:
        profiler.stop()
    wall = time.monotonic() - started
    parts.append(
        profiler.summary(
            f"bare ptb loop, {len(chats)} recipients, {bare.rate:.0f} msg/s under the profiler "
            f"({wall:.1f} s sampled at {profiler.rate_hz} Hz, GIL holder only)"
        )
    )
    return "\n\n".join(parts)


def describe(
    args: argparse.Namespace,
    command: str,
    runs: dict[str, list[Run]],
    best_engine: Run,
    best_bare: Run,
    overhead: float,
    memory: dict[str, Any] | None,
    profile: str | None,
) -> Result:
    n = best_engine.sent
    database, _ = DATABASES[args.database]
    rows = [
        Row(
            f"engine vs bare ptb, {n:,} recipients, {database}, limits lifted",
            f"engine {best_engine.rate:.0f} msg/s, bare {best_bare.rate:.0f} msg/s: "
            f"overhead {overhead:.0%} (best of {args.rounds})",
            f"overhead ≤ {OVERHEAD_GOAL:.0%}",
            overhead <= OVERHEAD_GOAL,
            command,
        )
    ]
    median_engine = statistics.median(r.rate for r in runs["engine"])
    median_bare = statistics.median(r.rate for r in runs["bare"])
    details = [
        f"- `{command}`: medians engine {median_engine:.0f} msg/s, bare {median_bare:.0f} "
        f"msg/s (overhead of the medians {1 - median_engine / median_bare:.0%}); every run, "
        "by kind:"
    ]
    for kind in ("engine", "bare"):
        details += [f"  - {run.describe()}" for run in runs[kind]]
    data: dict[str, Any] = {
        "engine_rate": best_engine.rate,
        "bare_rate": best_bare.rate,
        "overhead": overhead,
        "engine_rates": [r.rate for r in runs["engine"]],
        "bare_rates": [r.rate for r in runs["bare"]],
    }
    if memory is not None:
        peak_mb = memory["vmhwm_kb"] / 1024
        rows.append(
            Row(
                f"engine peak RSS, {memory['sent']:,} recipients (own process)",
                f"{peak_mb:.0f} MB peak; {memory['rate']:.0f} msg/s, {memory['seconds']:.1f} s",
                f"< {MEMORY_GOAL_MB:.0f} MB",
                peak_mb < MEMORY_GOAL_MB,
                command,
            )
        )
        details.append(
            f"  - memory run: VmHWM {memory['vmhwm_kb'] / 1024:.1f} MB, ru_maxrss "
            f"{memory['ru_maxrss_kb'] / 1024:.1f} MB, RSS before the launch "
            f"{memory['rss_before_kb'] / 1024:.1f} MB (interpreter, ptb, SQLAlchemy, "
            f"the started Broadcaster)"
        )
        data["memory"] = memory
    return Result("engine_overhead", rows, details, profile, data)


if __name__ == "__main__":
    sys.exit(main())
