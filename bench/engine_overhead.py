"""Issue #9, benchmark 1 (issue #3's benchmark 2): what the Broadcaster costs over a bare ptb
loop on the same HTTP transport, and its memory.

Limits lifted, no latency, PostgreSQL (a throwaway server from tests/fixtures/postgres.py;
`--database sqlite`: an SQLite file), N subscribed chats. The Bot API server runs in a
process of its own: bench/minimal_botapi.py by default (canned answers at the least CPU per
call: the stand-in, a full Bot API simulation in Python, tops out below what the engine
sends), or the stand-in (`--server standin`, `--no-limits`). For each `--transport`
(aiohttp, httpx; default both):

(a) engine: `Broadcaster(settings, session_factory, pacer=Pacer(1e9)).start()` with
    TELEGRAM_TRANSPORT set to it, then `create_push` + `launch_push` + `wait` (the ledger, 30
    worker threads each waiting for its copy on the engine's loop, HTTP pool 30);
(b) bare: one `telegram.Bot` on `make_request(transport, pool_size=30)`, `copy_message` to
    the same N chats from 30 concurrent coroutines (asyncio.Semaphore(30)), no database;
    on the same event loop implementation (`--loop`: uvloop's, the engine's default, and
    asyncio's: EngineOptions.loop_factory);

and the anchor, (b) with ptb's default `HTTPXRequest()`. All in this process, the order
rotated every round, best of --rounds each. Rate = N / wall time (launch -> report for (a),
first request -> last answer for (b)); CPU per copy = this process's CPU time over the run /
N. Overhead = 1 - engine/bare on the same transport. When it misses the goal, a py-spy
profile (--gil) of one more engine run and bare run on the first transport is appended.

Peak memory: a --memory-recipients broadcast (engine only, the first transport) in a
subprocess of its own, which reports its VmHWM and ru_maxrss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from telegram import Bot
from telegram.request import BaseRequest, HTTPXRequest

from common import (
    ADMIN_ID,
    PYTHON,
    CpuMeter,
    MinimalBotApi,
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
from pushbot.broadcast.engine import Broadcaster, EngineOptions, JobReport
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.transport import LoopFactory
from pushbot.config import Settings, TelegramTransport
from pushbot.db import queries
from pushbot.db.session import create_db_engine, create_session_factory, upgrade_database
from pushbot.runtime import EXTRA_DB_CONNECTIONS
from pushbot.transport import make_request
from tgstandin.remote import RemoteStandIn

DATABASES = {"postgresql": ("PostgreSQL", postgres_database), "sqlite": ("SQLite", sqlite_database)}
SERVERS = ("minimal", "standin")
OVERHEAD_GOAL = 0.30
RATE_GOAL = 3000.0
MEMORY_GOAL_MB = 250.0
UNLIMITED_RATE = 1e9
BARE_CONCURRENCY = 30
MEMORY_MARK = "MEMORY_RESULT "
ANCHOR = "anchor"
LOOPS = ("uvloop", "asyncio")
# The minimal server keeps no chats: any ids will do, and any source message.
FIRST_CHAT = 10_000_001
SOURCE_MESSAGE_ID = 1
BENCH_TOKEN = "123456:BENCH-token-abcdefghijklmnopqrstuv"


@dataclass(frozen=True)
class Kind:
    """What one run measures: the engine or the bare loop, on which transport (or the
    anchor: bare ptb on HTTPXRequest()), on which event loop."""

    kind: str  # "engine" or "bare"
    transport: str  # a TelegramTransport value, or ANCHOR
    loop: str  # one of LOOPS

    @property
    def label(self) -> str:
        if self.transport == ANCHOR:
            return "bare ptb, HTTPXRequest() (ptb's default)"
        return f"{self.kind} on {self.transport}, {self.loop} loop"


@dataclass
class Run:
    kind: Kind
    sent: int
    seconds: float
    cpu: CpuMeter | None = None
    server_span: float = math.nan
    commits: Commits | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu.own / self.sent if self.cpu is not None else math.nan

    def describe(self) -> str:
        cpu = ""
        if self.cpu is not None:
            cpu = f"; {self.cpu_ms:.3f} ms of CPU per copy here; {self.cpu.describe()}"
        span = (
            f"; first→last copy at the stand-in {self.server_span:.2f} s"
            if not math.isnan(self.server_span)
            else ""
        )
        commits = f"; {self.commits.describe()}" if self.commits is not None else ""
        return (
            f"{self.kind.label}: {self.rate:,.0f} msg/s ({self.sent} in {self.seconds:.2f} s"
            f"{span}){cpu}{commits}"
        )


@dataclass
class Commits:
    """The ledger writer's group commits of one job, from its DEBUG line at the end."""

    outcomes: int
    count: int
    ms_each: float

    def describe(self) -> str:
        return (
            f"ledger: {self.count} commits of {self.outcomes / self.count:.0f} outcomes on "
            f"average, {self.ms_each:.1f} ms each"
        )


class CommitLog(logging.Filter):
    """Catches that line (pushbot.broadcast.ledger, DEBUG) while a run lasts, and lets
    through only what the logger's own level would have."""

    LEDGER = "pushbot.broadcast.ledger"

    def __init__(self) -> None:
        super().__init__()
        self.found: Commits | None = None
        self._level = logging.NOTSET  # what the logger let through before
        self._own_level = logging.NOTSET

    def filter(self, record: logging.LogRecord) -> bool:
        if "commits" in str(record.msg) and isinstance(record.args, tuple):
            _, outcomes, count, ms_each = (str(arg) for arg in record.args)
            self.found = Commits(int(outcomes), int(count), float(ms_each))
        return record.levelno >= self._level

    def __enter__(self) -> CommitLog:
        logger = logging.getLogger(self.LEDGER)
        self._level, self._own_level = logger.getEffectiveLevel(), logger.level
        logger.setLevel(logging.DEBUG)
        logger.addFilter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logger = logging.getLogger(self.LEDGER)
        logger.removeFilter(self)
        logger.setLevel(self._own_level)


def available_loops() -> list[str]:
    """uvloop's (the engine's) and asyncio's own."""
    return [name for name in LOOPS if name != "uvloop" or module_available("uvloop")]


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def loop_factory(name: str) -> LoopFactory:
    if name == "uvloop":
        import uvloop

        factory: LoopFactory = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


@dataclass
class Server:
    """Where the copies go: the minimal Bot API server or the stand-in, each in its own
    process."""

    base_url: str
    token: str
    pid: int
    tg: RemoteStandIn | None = None  # the stand-in's control, when it is the stand-in

    @property
    def name(self) -> str:
        return "minimal server" if self.tg is None else "stand-in"

    def meter(self) -> CpuMeter:
        return CpuMeter(self.pid, server_name=self.name).start()

    def reset(self) -> None:
        if self.tg is not None:
            self.tg.reset_calls()

    def copy_span(self) -> float:
        """First → last successful copy as the stand-in saw them (NaN for the minimal one)."""
        if self.tg is None:
            return math.nan
        ats = [c.at for c in self.tg.calls("copyMessage") if c.status == 200]
        return max(ats) - min(ats) if ats else math.nan

    def add_chats(self, count: int, first: int) -> list[int]:
        if self.tg is None:
            return list(range(first, first + count))
        return self.tg.add_users(count)


@contextlib.contextmanager
def bot_api_server(kind: str, seed: int) -> Iterator[tuple[Server, int]]:
    """The server, and the id of the message every copy is made from."""
    if kind == "minimal":
        with MinimalBotApi() as minimal:
            yield Server(minimal.base_url, BENCH_TOKEN, minimal.pid), SOURCE_MESSAGE_ID
        return
    with StandInProcess("--no-limits", "--seed", str(seed)) as standin:
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        source = int(tg.send_text(ADMIN_ID, "Engine benchmark: please ignore")["message_id"])
        yield Server(tg.base_url, tg.token, standin.pid, tg), source


# --- (a) the engine ------------------------------------------------------------------------------


def engine_settings(
    token: str,
    base_url: str,
    database_url: str,
    transport: str = TelegramTransport.AIOHTTP,
    workers: int = BARE_CONCURRENCY,
) -> Settings:
    return Settings(
        bot_token=token,
        admin_ids=frozenset({ADMIN_ID}),
        database_url=database_url,
        telegram_base_url=base_url,
        telegram_transport=TelegramTransport(transport),
        broadcast_rate=UNLIMITED_RATE,
        broadcast_workers=workers,
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
    server: Server | None = None,
    loop: str = LOOPS[0],
) -> Run:
    options = EngineOptions(loop_factory=loop_factory(loop))
    broadcaster = Broadcaster(settings, factory, pacer=Pacer(UNLIMITED_RATE), options=options)
    broadcaster.start()
    with CommitLog() as commit_log:
        report, elapsed, cpu = _launch_and_wait(
            broadcaster, factory, source_message_id, timeout, server
        )
    if report.sent != expected or report.failed:
        raise RuntimeError(f"engine run: {report.sent} sent, {report.failed} failed: {report}")
    kind = Kind("engine", settings.telegram_transport.value, loop)
    return Run(kind, report.sent, elapsed, cpu, commits=commit_log.found)


def _launch_and_wait(
    broadcaster: Broadcaster,
    factory: sessionmaker[Session],
    source_message_id: int,
    timeout: float,
    server: Server | None,
) -> tuple[JobReport, float, CpuMeter | None]:
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
        cpu = server.meter() if server is not None else None
        started = time.monotonic()
        report = broadcaster.launch_push(push.uuid).wait(timeout)
        elapsed = time.monotonic() - started
        if cpu is not None:
            cpu.stop()
    finally:
        broadcaster.shutdown()
    return report, elapsed, cpu


# --- (b) the bare ptb loop -----------------------------------------------------------------------


def bare_request(transport: str, concurrency: int) -> BaseRequest:
    if transport == ANCHOR:
        return HTTPXRequest()
    return make_request(TelegramTransport(transport), pool_size=concurrency)


async def _bare(
    token: str,
    base_url: str,
    source_message_id: int,
    chats: list[int],
    request: BaseRequest,
    concurrency: int,
) -> float:
    bot = Bot(token, base_url=base_url, request=request)
    async with bot:  # initialize (getMe) and shutdown, outside the timing
        semaphore = asyncio.Semaphore(concurrency)

        async def copy(chat_id: int) -> None:
            async with semaphore:
                await bot.copy_message(
                    chat_id=chat_id, from_chat_id=ADMIN_ID, message_id=source_message_id
                )

        started = time.monotonic()
        await asyncio.gather(*(copy(chat_id) for chat_id in chats))
        return time.monotonic() - started


def run_bare(
    server: Server,
    kind: Kind,
    source_message_id: int,
    chats: list[int],
    timeout: float,
    meter_server: bool = True,
    concurrency: int = BARE_CONCURRENCY,
) -> Run:
    cpu = server.meter() if meter_server else None

    async def bounded() -> float:
        request = bare_request(kind.transport, concurrency)
        bare = _bare(server.token, server.base_url, source_message_id, chats, request, concurrency)
        return await asyncio.wait_for(bare, timeout)

    with asyncio.Runner(loop_factory=loop_factory(kind.loop)) as runner:
        elapsed = runner.run(bounded())
    if cpu is not None:
        cpu.stop()
    return Run(kind, len(chats), elapsed, cpu)


# --- the memory child ----------------------------------------------------------------------------


def memory_child(config_json: str) -> int:
    """Runs in its own process: one engine broadcast; prints its memory high-water mark."""
    config = json.loads(config_json)
    settings = engine_settings(
        config["token"],
        config["base_url"],
        config["database_url"],
        config["transport"],
        config["workers"],
    )
    quiet_logging(settings)
    factory = session_factory_for(settings)
    rss_before = _status_kb("VmRSS")
    run = run_engine(
        settings,
        factory,
        config["source_message_id"],
        config["expected"],
        config["timeout"],
        loop=config["loop"],
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
    parser.add_argument(
        "--transport",
        nargs="+",
        choices=[t.value for t in TelegramTransport],
        default=[t.value for t in TelegramTransport],
        help="the engine's TELEGRAM_TRANSPORT and the bare loop's; default: both",
    )
    parser.add_argument(
        "--loop",
        nargs="+",
        choices=LOOPS,
        default=None,
        help="event loops of the aiohttp rows (httpx runs on the first); default: uvloop and "
        "asyncio",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="minimal",
        help="the Bot API server: bench/minimal_botapi.py (default) or the stand-in",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=BARE_CONCURRENCY,
        help="sends in flight: the engine's BROADCAST_WORKERS (threads and pool), the bare loop's "
        "coroutines and connections (the anchor keeps 30); default 30, the free tier's",
    )
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


def kinds_of(transports: list[str], loops: list[str]) -> list[Kind]:
    """Every run of a round: engine and bare per transport (aiohttp on every loop, httpx on
    the first), then the anchor (on asyncio's loop, as ptb runs by default)."""
    kinds = []
    for transport in transports:
        for loop in loops if transport == TelegramTransport.AIOHTTP else loops[:1]:
            kinds += [Kind("engine", transport, loop), Kind("bare", transport, loop)]
    return [*kinds, Kind("bare", ANCHOR, "asyncio")]


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
        raise SystemExit("--rounds must be at least 2 (best of N, rotated order)")
    command = command_line("engine_overhead.py", argv)
    _, database = DATABASES[args.database]
    transports: list[str] = list(dict.fromkeys(args.transport))
    loops: list[str] = list(dict.fromkeys(args.loop or available_loops()))
    kinds = kinds_of(transports, loops)
    pairs = [(k, Kind("bare", k.transport, k.loop)) for k in kinds if k.kind == "engine"]
    first = pairs[0][0]
    with (
        database() as database_url,
        bot_api_server(args.server, args.seed) as (server, source_id),
    ):
        upgrade_database(database_url)
        settings = {
            t: engine_settings(server.token, server.base_url, database_url, t, args.workers)
            for t in transports
        }
        quiet_logging(settings[transports[0]])
        factory = session_factory_for(settings[transports[0]])
        chats = server.add_chats(args.recipients, FIRST_CHAT)
        seed_audience(factory, chats, bulk=True)

        def measure(kind: Kind) -> Run:
            server.reset()
            if kind.kind == "engine":
                run = run_engine(
                    settings[kind.transport],
                    factory,
                    source_id,
                    len(chats),
                    args.timeout,
                    server,
                    loop=kind.loop,
                )
            else:
                concurrency = BARE_CONCURRENCY if kind.transport == ANCHOR else args.workers
                run = run_bare(server, kind, source_id, chats, args.timeout, True, concurrency)
            run.server_span = server.copy_span()
            print(f"  {run.describe()}", flush=True)
            return run

        runs: dict[Kind, list[Run]] = {k: [] for k in kinds}
        for round_index in range(args.rounds):
            shift = round_index % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                runs[kind].append(measure(kind))
        best = {k: max(found, key=lambda r: r.rate) for k, found in runs.items()}
        overheads = {engine: 1 - best[engine].rate / best[bare].rate for engine, bare in pairs}

        profile = None
        if args.profile == "always" or (
            args.profile == "auto" and overheads[first] > OVERHEAD_GOAL
        ):
            profile = profile_both(
                settings[first.transport], factory, server, source_id, chats, args.timeout, first
            )

        memory: dict[str, Any] | None = None
        if args.memory_recipients > 0:
            more = args.memory_recipients - len(chats)
            if more > 0:
                extra = server.add_chats(more, FIRST_CHAT + len(chats))
                seed_audience(factory, extra, bulk=True)
            server.reset()
            memory = run_memory_child(
                {
                    "token": server.token,
                    "base_url": server.base_url,
                    "database_url": database_url,
                    "transport": first.transport,
                    "loop": first.loop,
                    "workers": args.workers,
                    "source_message_id": source_id,
                    "expected": max(args.memory_recipients, len(chats)),
                    "timeout": args.timeout,
                },
                timeout=args.timeout + 60,
            )
            server.reset()
        factory.kw["bind"].dispose()

    result = describe(args, command, pairs, runs, best, overheads, memory, profile, first)
    emit(result, args.json)
    return 0


def profile_both(
    settings: Settings,
    factory: sessionmaker[Session],
    server: Server,
    source_id: int,
    chats: list[int],
    timeout: float,
    engine_kind: Kind,
) -> str:
    bare_kind = Kind("bare", engine_kind.transport, engine_kind.loop)

    def engine() -> Run:
        return run_engine(settings, factory, source_id, len(chats), timeout, loop=engine_kind.loop)

    def bare() -> Run:
        workers = settings.effective_broadcast_workers
        return run_bare(server, bare_kind, source_id, chats, timeout, False, workers)

    return "\n\n".join(
        [
            profiled(engine_kind.label, engine, len(chats)),
            profiled(bare_kind.label, bare, len(chats)),
        ]
    )


def profiled(what: str, work: Callable[[], Run], recipients: int) -> str:
    profiler = Profiler(gil=True).start()
    started = time.monotonic()
    try:
        run = work()
    finally:
        profiler.stop()
    wall = time.monotonic() - started
    return profiler.summary(
        f"{what}, {recipients} recipients, {run.rate:.0f} msg/s under the profiler "
        f"({wall:.1f} s sampled at {profiler.rate_hz} Hz, GIL holder only)"
    )


def describe(
    args: argparse.Namespace,
    command: str,
    pairs: list[tuple[Kind, Kind]],
    runs: dict[Kind, list[Run]],
    best: dict[Kind, Run],
    overheads: dict[Kind, float],
    memory: dict[str, Any] | None,
    profile: str | None,
    first: Kind,
) -> Result:
    n = args.recipients
    database, _ = DATABASES[args.database]
    server = "minimal Bot API server" if args.server == "minimal" else "the stand-in"
    anchor = best[Kind("bare", ANCHOR, "asyncio")]
    rows = []
    for engine_kind, bare_kind in pairs:
        engine, bare = best[engine_kind], best[bare_kind]
        overhead = overheads[engine_kind]
        rows.append(
            Row(
                f"engine vs bare ptb on {engine_kind.transport} ({engine_kind.loop} loop), "
                f"{n:,} recipients, {args.workers} in flight, {database}, limits lifted, "
                f"{server}",
                f"engine {engine.rate:,.0f} msg/s ({engine.cpu_ms:.3f} ms CPU per copy), bare "
                f"{bare.rate:,.0f} msg/s ({bare.cpu_ms:.3f} ms): overhead {overhead:.0%} "
                f"(best of {args.rounds}; engine {engine.rate / anchor.rate:.1f}× the anchor)",
                f"≥ {RATE_GOAL:,.0f} msg/s, overhead ≤ {OVERHEAD_GOAL:.0%}",
                overhead <= OVERHEAD_GOAL and engine.rate >= RATE_GOAL,
                command,
            )
        )
    rows.append(
        Row(
            f"anchor: bare ptb, HTTPXRequest() (ptb's default), {n:,} recipients, {server}",
            f"{anchor.rate:,.0f} msg/s ({anchor.cpu_ms:.3f} ms CPU per copy)",
            "reported",
            None,
            command,
        )
    )
    medians = {k: statistics.median(r.rate for r in found) for k, found in runs.items()}
    details = [
        f"- `{command}`: medians "
        + ", ".join(f"{k.label} {rate:,.0f} msg/s" for k, rate in medians.items())
        + "; every run, by kind (CPU: this process, the Bot API server's process, every "
        "other process on the machine, PostgreSQL included):"
    ]
    for found in runs.values():
        details += [f"  - {run.describe()}" for run in found]
    data: dict[str, Any] = {
        "overheads": {k.label: o for k, o in overheads.items()},
        "best": {k.label: {"rate": r.rate, "cpu_ms": r.cpu_ms} for k, r in best.items()},
        "rates": {k.label: [r.rate for r in found] for k, found in runs.items()},
    }
    if memory is not None:
        peak_mb = memory["vmhwm_kb"] / 1024
        rows.append(
            Row(
                f"engine peak RSS, {memory['sent']:,} recipients (own process, "
                f"{first.transport}, {first.loop} loop)",
                f"{peak_mb:.0f} MB peak; {memory['rate']:,.0f} msg/s, {memory['seconds']:.1f} s",
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
