"""Shared plumbing of the benchmarks in bench/ (not a benchmark itself).

- `StandInProcess`: the Telegram stand-in as a separate OS process (`python -m
  tgstandin`), driven through `RemoteStandIn`, so that it does not share the bot's GIL.
- `postgres_database`: a throwaway PostgreSQL server (tests/fixtures/postgres.py, reused).
- `seed_audience`: subscribed chats straight into the database.
- `BotRun`: the real bot (Runtime + BotThread, the code path of `pushbot run`) and the
  admin's /push and /undo flows, played through the stand-in as the tests do.
- `Result` / `emit`: what each benchmark prints, and the JSON `run_all.py` collects.
- `Profiler`: py-spy sampling of this very process (optional; `pip install py-spy`).

Clocks: the stand-in records every call with `time.monotonic()` (`Call.at`). On Linux that
is CLOCK_MONOTONIC, one system-wide clock, so stand-in timestamps and this process's
`time.monotonic()` can be compared directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # `tests.fixtures.postgres` lives in the repository, not in the installed package.
    sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from pushbot.config import Settings  # noqa: E402
from pushbot.db import queries  # noqa: E402
from pushbot.logs import configure_logging, token_secrets  # noqa: E402
from pushbot.runtime import BotThread, Runtime  # noqa: E402
from tgstandin.methods import LIMITED_METHODS  # noqa: E402
from tgstandin.remote import RemoteStandIn  # noqa: E402
from tgstandin.world import Call, JsonDict  # noqa: E402

ADMIN_ID = 1000
PYTHON = sys.executable
# Calls that spend Telegram's per-bot budget, as the stand-in counts them.
PACED_METHODS = LIMITED_METHODS


# --- results -------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table in docs/benchmarks.md."""

    benchmark: str
    figure: str
    goal: str
    met: bool | None  # None: no goal, reported only
    command: str


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines for the notes
    profile: str | None = None  # preformatted text
    data: dict[str, Any] = field(default_factory=dict)


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run (the --json option is run_all's plumbing)."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--json":
            skip = True
            continue
        if arg.startswith("--json="):
            continue
        shown.append(arg)
    return shlex.join([".venv/bin/python", f"bench/{script}", *shown])


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    parser.add_argument("--seed", type=int, default=1, help="stand-in random seed (latency)")


def emit(result: Result, json_path: str | None) -> None:
    print()
    print(f"## {result.name}")
    print()
    print("| benchmark | figure | goal | met? |")
    print("| --- | --- | --- | --- |")
    for row in result.rows:
        print(f"| {row.benchmark} | {row.figure} | {row.goal} | {met_mark(row.met)} |")
    print()
    for line in result.details:
        print(line)
    if result.profile:
        print()
        print(result.profile)
    if json_path:
        Path(json_path).write_text(json.dumps(asdict(result), indent=2, default=str))


def met_mark(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


# --- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples it is an observed value)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def rate(count: int, first: float, last: float) -> float:
    """count / (last - first): the benchmarks' pace definition (issue #3)."""
    span = last - first
    return count / span if span > 0 else math.inf


def count_status(calls: Sequence[Call], status: int, since: float = -math.inf) -> int:
    return sum(1 for c in calls if c.status == status and c.at >= since)


def statuses(calls: Sequence[Call], since: float = -math.inf) -> dict[str, int]:
    counter: Counter[str] = Counter(f"{c.method} {c.status}" for c in calls if c.at >= since)
    return dict(sorted(counter.items()))


# --- CPU accounting ------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    path = f"/proc/{'self' if pid is None else pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds (summed over all cores) the whole machine spent busy since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU seconds used by this process, the stand-in and everything else on the machine
    (PostgreSQL included) between start() and stop()."""

    standin_pid: int | None
    # What that other process is, for describe(): the stand-in, or the minimal server.
    server_name: str = "stand-in"
    own: float = 0.0
    standin: float = 0.0
    machine: float = 0.0
    wall: float = 0.0
    _t0: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _standin_cpu(self) -> float:
        return cpu_seconds(self.standin_pid) if self.standin_pid is not None else 0.0

    def start(self) -> CpuMeter:
        self._t0 = (time.monotonic(), cpu_seconds(), self._standin_cpu(), machine_busy_seconds())
        return self

    def stop(self) -> CpuMeter:
        wall0, own0, standin0, machine0 = self._t0
        self.wall = time.monotonic() - wall0
        self.own = cpu_seconds() - own0
        self.standin = self._standin_cpu() - standin0
        self.machine = machine_busy_seconds() - machine0
        return self

    @property
    def others(self) -> float:
        return max(0.0, self.machine - self.own - self.standin)

    def describe(self) -> str:
        if self.wall <= 0:
            return "n/a"
        cores = os.cpu_count() or 1
        standin = (
            f", {self.server_name} process {self.standin / self.wall:.0%}"
            if self.standin_pid is not None
            else ""
        )
        return (
            f"CPU: this process {self.own / self.wall:.0%} of a core{standin}, all other "
            f"processes {self.others / self.wall:.0%} (machine {cores} cores = {cores:.0%}; "
            f"over {self.wall:.1f} s)"
        )


def wait_for_quiet(max_seconds: float = 120.0, threshold: float = 0.25, window: float = 2.0) -> str:
    """Wait (bounded) until the rest of the machine uses under `threshold` of a core;
    returns what was seen, for the notes."""
    deadline = time.monotonic() + max_seconds
    while True:
        meter = CpuMeter(None).start()
        time.sleep(window)
        meter.stop()
        load = meter.others / meter.wall
        if load < threshold:
            return f"machine quiet before the start ({load:.0%} of a core used by others)"
        if time.monotonic() >= deadline:
            return (
                f"machine still busy after waiting {max_seconds:g} s: other processes used "
                f"{load:.0%} of a core at the start"
            )


# --- the stand-in as a process -------------------------------------------------------------------


class StandInProcess:
    """`python -m tgstandin ARGS` on a free loopback port, and a RemoteStandIn on it."""

    def __init__(self, *args: str, startup_timeout: float = 30.0) -> None:
        self.args = [*args]
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.tg: RemoteStandIn | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="pushbot-standin-", suffix=".log")  # noqa: SIM115

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> RemoteStandIn:
        command = [PYTHON, "-m", "tgstandin", "--port", "0", *self.args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO_ROOT
        )
        line = self._first_line()
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.tg = RemoteStandIn(fields["control_url"], timeout=120.0)
        return self.tg

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.startup_timeout
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the stand-in did not start: {self.log_text()}")
            if selector.select(remaining):
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    continue
                buffer += chunk
        selector.close()
        line = buffer.split(b"\n", 1)[0].decode()
        if not line.startswith("STANDIN "):
            raise RuntimeError(f"unexpected stand-in output {line!r}")
        return line

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.tg is not None:
            self.tg.close()
            self.tg = None
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._log.close()

    def __enter__(self) -> StandInProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class MinimalBotApi:
    """bench/minimal_botapi.py on a free loopback port: canned answers at the least CPU per
    call, for the benchmarks where the stand-in itself would be the bottleneck."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve().parent / "minimal_botapi.py"), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "MINIMAL_BOTAPI":
            self.stop()
            raise RuntimeError(f"the minimal Bot API server did not start: {line!r}")
        self.base_url = dict(part.split("=", 1) for part in line[1:])["base_url"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> MinimalBotApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- databases -----------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(name: str = "pushbot_bench") -> Iterator[str]:
    """A throwaway PostgreSQL server (fsync off: tests/fixtures/postgres.py) with one fresh
    database; yields its URL. Honours PUSHBOT_TEST_POSTGRES_URL (an existing server: a new
    database is created there and dropped afterwards)."""
    from tests.fixtures.postgres import (
        EXTERNAL_URL_VARIABLE,
        TemporaryServer,
        find_server_binaries,
        psycopg2_url,
    )

    external = os.environ.get(EXTERNAL_URL_VARIABLE, "").strip()
    if external:
        yield from _database_on_external_server(psycopg2_url(external), name)
        return
    bin_dir = find_server_binaries()
    if bin_dir is None:
        raise SystemExit(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the "
            f"PostgreSQL server package or set {EXTERNAL_URL_VARIABLE}"
        )
    server = TemporaryServer(bin_dir)
    server.start()
    try:
        server.create_database(name)
        yield server.url(name)
    finally:
        server.stop()


def _database_on_external_server(url: str, name: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    unique = f"{name}_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{unique}" TEMPLATE template0'))
        yield make_url(url).set(database=unique).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{unique}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_database_named(server_url: str, name: str) -> str:
    """Another database on the same server as `server_url`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="pushbot-bench-")
    try:
        yield f"sqlite:///{Path(directory) / 'pushbot.sqlite3'}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def seed_audience(
    factory: sessionmaker[Session], chat_ids: Sequence[int], bulk: bool = False
) -> float:
    """Subscribed private chats, as /start would leave them; returns the seconds it took.

    bulk=False goes through `queries.subscribe_chat` (the bot's own statement, one per chat);
    bulk=True inserts the same rows with one executemany per 10,000 (for 100,000 chats).
    """
    started = time.monotonic()
    if not bulk:
        with factory.begin() as session:
            for chat_id in chat_ids:
                queries.subscribe_chat(
                    session, queries.ChatInfo(chat_id, "private", first_name="B")
                )
        return time.monotonic() - started
    now = datetime.now(UTC)
    for start in range(0, len(chat_ids), 10_000):
        rows = [
            {
                "id": chat_id,
                "type": "private",
                "title": None,
                "username": None,
                "first_name": "B",
                "language_code": None,
                "subscribed": True,
                "purged_at": None,
                "purge_reason": None,
                "first_seen": now,
                "last_seen": now,
            }
            for chat_id in chat_ids[start : start + 10_000]
        ]
        with factory.begin() as session:
            session.execute(queries.CHATS.insert(), rows)
    return time.monotonic() - started


# --- the real bot --------------------------------------------------------------------------------


def bot_settings(tg: RemoteStandIn, database_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "bot_token": tg.token,
        "admin_ids": frozenset({ADMIN_ID}),
        "database_url": database_url,
        "telegram_base_url": tg.base_url,
        "log_level": "WARNING",
    }
    # Built in one go rather than copied with changes, so that the overrides are validated.
    return Settings(**(base | overrides))


def quiet_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, token_secrets(settings.bot_token))


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class BotRun:
    """The real bot on a thread of this process, and the admin's flows through the stand-in."""

    def __init__(self, tg: RemoteStandIn, settings: Settings) -> None:
        self.tg = tg
        self.settings = settings
        quiet_logging(settings)
        self.runtime = Runtime.create(settings)
        self.thread: BotThread | None = None

    @property
    def factory(self) -> sessionmaker[Session]:
        return self.runtime.session_factory

    def start(self) -> BotRun:
        self.thread = BotThread(self.runtime).start(timeout=60.0)
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop(timeout=60.0)
            self.thread = None
        self.runtime.close()

    def __enter__(self) -> BotRun:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # admin flows (what tests/fixtures/bot.py's BotHarness does, for a remote stand-in)

    def last_admin_message_id(self) -> int:
        return max((m["message_id"] for m in self.tg.inbox(ADMIN_ID)), default=0)

    def admin_reply(
        self, after: int, predicate: Callable[[JsonDict], bool], timeout: float
    ) -> JsonDict:
        def matches(message: JsonDict) -> bool:
            return bool(message["message_id"] > after and predicate(message))

        return self.tg.wait_for_message(ADMIN_ID, matches, timeout=timeout)

    def ask_push(self, text: str, timeout: float = 60.0) -> JsonDict:
        """/push <text>; returns the confirmation message with the Send button."""
        mark = self.last_admin_message_id()
        self.tg.send_text(ADMIN_ID, f"/push {text}")
        return self.admin_reply(mark, lambda m: "Send it?" in m.get("text", ""), timeout)

    def press(self, message: JsonDict, data: str) -> float:
        """Press a button; returns the monotonic time just before the press."""
        pressed = time.monotonic()
        self.tg.press_button(ADMIN_ID, ADMIN_ID, message["message_id"], data)
        return pressed

    def wait_report(self, after: int, phrase: str, timeout: float) -> JsonDict:
        return self.admin_reply(after, lambda m: phrase in m.get("text", ""), timeout)

    def wait_push_recorded(self, report_message_id: int, timeout: float = 30.0) -> None:
        """The report's id is stored right after Telegram returns it; /undo needs it."""

        def recorded() -> bool:
            with self.factory.begin() as session:
                found = queries.find_push_by_message(session, ADMIN_ID, report_message_id)
            return found is not None

        wait_until(recorded, timeout, "the report to be recorded")

    def ask_undo(self, report: JsonDict, timeout: float = 60.0) -> JsonDict:
        """/undo as a reply to the report; returns the question with the Retract button."""
        mark = self.last_admin_message_id()
        self.tg.send_text(ADMIN_ID, "/undo", reply_to_message_id=report["message_id"])
        return self.admin_reply(mark, lambda m: "Delete it" in m.get("text", ""), timeout)


def retract_button(ask: JsonDict) -> str:
    data = str(ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    if not data.startswith("undo:retract:"):
        raise RuntimeError(f"unexpected first button {data!r}")
    return data


# --- profiling -----------------------------------------------------------------------------------


class Profiler:
    """py-spy sampling this process (all threads; `gil=True`: only the thread holding the
    GIL, i.e. where the process's Python CPU time goes). Without py-spy it does nothing and
    `summary()` says how to get it."""

    def __init__(self, gil: bool = True, rate_hz: int = 250, max_seconds: float = 300.0) -> None:
        self.gil = gil
        self.rate_hz = rate_hz
        self.max_seconds = max_seconds
        self.available = shutil.which("py-spy", path=str(Path(PYTHON).parent)) is not None
        self._output = Path(tempfile.mkstemp(prefix="pushbot-pyspy-", suffix=".txt")[1])
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        if not self.available:
            return self
        command = [
            str(Path(PYTHON).parent / "py-spy"),
            "record",
            "--pid",
            str(os.getpid()),
            "--format",
            "raw",
            "--rate",
            str(self.rate_hz),
            "--nonblocking",
            "--duration",
            str(int(self.max_seconds)),
            "--output",
            str(self._output),
        ]
        if self.gil:
            command.append("--gil")
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)  # attaching takes a moment
        return self

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._process = None

    def summary(self, title: str, top: int = 22) -> str:
        if not self.available:
            return f"{title}: no profile (py-spy missing: `.venv/bin/pip install py-spy`)."
        text = self._output.read_text() if self._output.exists() else ""
        self._output.unlink(missing_ok=True)
        return summarize_collapsed(text, title, top)


# Activities of the bot process, for the breakdown of a profile: the first group whose
# markers all occur in a sample's stack takes the sample ("a|b": either a or b).
ACTIVITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "bot loop: webhook server (pushbot.bot.webhook on aiohttp), the handling under it",
        ("BotThread._run", "WebhookServer._receive"),
    ),
    ("bot loop: the outbox's sends (ptb → the transport)", ("BotThread._run", "Outbox._send")),
    (
        "bot loop: HTTP requests to the Bot API (ptb → httpx/httpcore)",
        ("BotThread._run", "BaseRequest.post"),
    ),
    ("bot loop: webhook server (tornado, ptb's handler)", ("BotThread._run", "tornado/")),
    ("bot loop: getUpdates parsing / Update.de_json", ("BotThread._run", "de_json")),
    ("bot loop: dispatch, handlers, asyncio itself", ("BotThread._run",)),
    (
        "bot writer thread: group commits (SQLAlchemy, psycopg2/sqlite3)",
        ("GroupCommitWriter._run",),
    ),
    (
        "engine loop: HTTP requests (ptb → httpx/httpcore)",
        ("_run_loop_forever", "BaseRequest.post"),
    ),
    ("engine loop: asyncio itself, hand-offs", ("_run_loop_forever",)),
    (
        "engine workers: pacing, hand-off to the loop, outcomes",
        ("pushbot/broadcast/delivery.py|pushbot/broadcast/runner.py",),
    ),
    ("engine ledger writer (SQLAlchemy, psycopg2)", ("OutcomeWriter._run",)),
    ("engine ledger reads (keyset pages)", ("_keyset_pages",)),
    ("bare ptb loop: HTTP requests (ptb → httpx/httpcore)", ("_bare", "BaseRequest.post")),
    ("bare ptb loop: asyncio, gather, semaphore", ("_bare",)),
    ("thread pools, idle bookkeeping", ("concurrent/futures/thread.py",)),
    ("main thread (benchmark driver)", ("<module>",)),
    # py-spy sometimes cuts a stack short (no thread root): classify by what is left.
    (
        "Bot API requests, stack cut short (ptb → httpx/httpcore)",
        ("httpx/|httpcore/|anyio/|telegram/request/",),
    ),
    ("handlers and dispatch, stack cut short", ("pushbot/|telegram/",)),
    ("database, stack cut short", ("sqlalchemy/|psycopg2",)),
)


# Frames worth a line of their own in every profile (inclusive share).
HIGHLIGHTS = (
    (
        "httpcore's current_async_library() (`import sniffio` on every call)",
        "current_async_library (httpcore/_synchronization.py)",
    ),
    (
        "httpcore pool bookkeeping (_assign_requests_to_connections)",
        "AsyncConnectionPool._assign_requests_to_connections (httpcore/_async/connection_pool.py)",
    ),
    (
        "SharedRateLimiter.process_request (pacing of the Application's requests)",
        "SharedRateLimiter.process_request (pushbot/broadcast/pacing.py)",
    ),
    ("Pacer.acquire (engine workers' pacing)", "Pacer.acquire (pushbot/broadcast/pacing.py)"),
    (
        "Transport.call (hand-off to the engine's loop)",
        "Transport.call (pushbot/broadcast/transport.py)",
    ),
    (
        "OutcomeWriter._commit (ledger writes)",
        "OutcomeWriter._commit (pushbot/broadcast/ledger.py)",
    ),
    (
        "GroupCommitWriter._commit (the bot's group commits)",
        "GroupCommitWriter._commit (pushbot/bot/writer.py)",
    ),
    ("Update.de_json (ptb parsing the updates)", "Update.de_json (telegram/_update.py)"),
)


def summarize_collapsed(text: str, title: str, top: int = 22) -> str:
    """Where the samples went by activity (ACTIVITIES), then the top functions by own and
    by inclusive samples, from py-spy's raw (collapsed-stack) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    activity: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short_frame(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        activity[_activity(frames)] += count
    if total == 0:
        return f"{title}: the profile is empty."
    lines = [f"{title} — {total} samples", "", "by activity:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in activity.most_common()]
    lines += ["", "selected frames (inclusive):"]
    lines += [
        f"  {100 * inclusive[frame] / total:5.1f}%  {label}"
        for label, frame in HIGHLIGHTS
        if inclusive[frame]
    ]
    lines += ["", "own time (the frame itself was running):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time (the frame was on the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _activity(frames: list[str]) -> str:
    joined = ";".join(frames)
    for name, markers in ACTIVITIES:
        # Each marker must occur; "a|b" means either.
        if all(any(m in joined for m in marker.split("|")) for marker in markers):
            return name
    return "other (unidentified or empty stacks)"


def _short_frame(frame: str) -> str:
    """'func (/long/path/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": sys.version.split()[0],
    }


def run_with_deadline(work: Callable[[], None], seconds: float, what: str) -> None:
    """Run `work` on a thread; raise TimeoutError if it has not finished in time."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")
    if errors:
        raise errors[0]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a server to bind next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
