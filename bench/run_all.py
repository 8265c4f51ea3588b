"""Run every benchmark (what `make bench` does) and print one markdown table.

Each benchmark runs as its own process (`.venv/bin/python bench/<name>.py ...`), one after
the other, never two at once: the machine's cores are part of what is measured.
With --write, docs/benchmarks.md is rewritten with the table, the date, the machine and the
command that reproduces each row; its hand-written "Analysis" section is kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import PYTHON, REPO_ROOT, Result, Row, machine_facts, met_mark, wait_for_quiet

DOC = REPO_ROOT / "docs" / "benchmarks.md"
ANALYSIS_START = "<!-- analysis:start (kept by run_all.py --write) -->"
ANALYSIS_END = "<!-- analysis:end -->"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    args: tuple[str, ...] = ()


BENCHMARKS = (
    Benchmark("push_pace", "push_pace.py"),
    Benchmark("push_pace_alone", "push_pace.py", ("--newcomer-rate", "0")),
    Benchmark("undo_pace", "undo_pace.py"),
    Benchmark("paid_pace", "paid_pace.py"),
    Benchmark("engine_overhead", "engine_overhead.py"),
    Benchmark(
        "engine_overhead_paid_shape",
        "engine_overhead.py",
        ("--transport", "aiohttp", "--workers", "150", "--memory-recipients", "0"),
    ),
    Benchmark(
        "engine_overhead_standin",
        "engine_overhead.py",
        ("--transport", "aiohttp", "--server", "standin", "--memory-recipients", "0"),
    ),
    Benchmark(
        "engine_overhead_sqlite",
        "engine_overhead.py",
        ("--database", "sqlite", "--transport", "aiohttp", "--memory-recipients", "0"),
    ),
    Benchmark("handoff", "handoff.py"),
    Benchmark("inbound", "inbound.py"),
    Benchmark("storm", "storm.py"),
    Benchmark("scale_out", "scale_out.py"),
    Benchmark("bad_days", "bad_days.py"),
    Benchmark("transport", "transport.py"),
)


def run_benchmark(bench: Benchmark, quick: bool, timeout: float, quiet_wait: float) -> Result:
    args = [*bench.args, *(["--quick"] if quick else [])]
    shown = " ".join([".venv/bin/python", f"bench/{bench.script}", *args])
    print(f"\n### {bench.name}: {shown}", flush=True)
    quiet = wait_for_quiet(max_seconds=quiet_wait) if quiet_wait > 0 else "no wait for quiet"
    print(f"  ({quiet})", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as output:
        command = [PYTHON, str(REPO_ROOT / "bench" / bench.script), *args, "--json", output.name]
        started = time.monotonic()
        try:
            completed = subprocess.run(command, cwd=REPO_ROOT, timeout=timeout, check=False)
            code: int | str = completed.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout:g} s"
        elapsed = time.monotonic() - started
        text = Path(output.name).read_text()
    if code != 0 or not text:
        failed = Row(bench.name, f"FAILED ({code})", "—", False, shown)
        return Result(bench.name, [failed], [f"- `{shown}` failed: {code}"])
    raw: dict[str, Any] = json.loads(text)
    result = Result(
        name=bench.name,
        rows=[Row(**row) for row in raw["rows"]],
        details=list(raw["details"]),
        profile=raw.get("profile"),
        data=dict(raw.get("data", {})),
    )
    result.details.append(f"  (this benchmark took {elapsed:.0f} s of wall time; {quiet})")
    return result


def table(results: list[Result], with_command: bool) -> list[str]:
    header = "| benchmark | figure | goal | met? |" + (" command |" if with_command else "")
    rule = "| --- | --- | --- | --- |" + (" --- |" if with_command else "")
    lines = [header, rule]
    for result in results:
        for row in result.rows:
            line = f"| {row.benchmark} | {row.figure} | {row.goal} | {met_mark(row.met)} |"
            if with_command:
                line += f" `{row.command}` |"
            lines.append(line)
    return lines


def versions() -> str:
    import httpx
    import sqlalchemy
    import telegram

    parts = [
        f"python-telegram-bot {telegram.__version__}",
        f"httpx {httpx.__version__}",
        f"SQLAlchemy {sqlalchemy.__version__}",
    ]
    from tests.fixtures.postgres import find_server_binaries

    bin_dir = find_server_binaries()
    if bin_dir is not None:
        found = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        parts.append(found.stdout.strip().replace("postgres (PostgreSQL)", "PostgreSQL"))
    return ", ".join(parts)


def kept_analysis() -> str:
    if not DOC.exists():
        return f"{ANALYSIS_START}\n\n(no analysis written yet)\n\n{ANALYSIS_END}"
    text = DOC.read_text()
    start, end = text.find(ANALYSIS_START), text.find(ANALYSIS_END)
    if start < 0 or end < start:
        return f"{ANALYSIS_START}\n\n(no analysis written yet)\n\n{ANALYSIS_END}"
    return text[start : end + len(ANALYSIS_END)]


METHOD = """\
## Method

- **Processes.** The machine has 2 cores. For every throughput figure the Telegram stand-in
  runs as a **separate process** (`python -m tgstandin ...`, driven through
  `RemoteStandIn`), so it does not share the bot's GIL; the bot (or the engine) and the
  benchmark's driver share the other process. The driver only sleeps and polls the
  stand-in a few times a second while something is measured. PostgreSQL (when used) is a
  throwaway local server from `tests/fixtures/postgres.py` (fsync off), a third set of
  processes on the same 2 cores. The CPU use of the bot and stand-in processes is given
  with each figure, so that it can be seen which side was saturated.
- **Clock.** Paces come from the stand-in's own record of each call (`Call.at`,
  `time.monotonic()`, CLOCK_MONOTONIC, a system-wide clock on Linux, so the driver's
  timestamps compare directly with it). Pace = count / (last − first) of the successful
  calls concerned (issue #3's definition).
- **push_pace** (issue #3, benchmark 1): stand-in with Telegram's limits (30/s per bot,
  burst 10; 1/s per chat, burst 3; 429 with retry_after), latency uniform 30–120 ms; the
  audience (1,000 chats) is seeded with `queries.subscribe_chat`; the real bot
  (`Runtime.create` + `BotThread`: polling, default settings, broadcast_rate 29.8, SQLite in
  a temp dir) is driven through the admin's /push → Send. Meanwhile new users send /start
  (1/s); their reply time is send → the bot's sendMessage as recorded by the stand-in,
  counted for users who wrote between the first and the last copy; before the broadcast,
  10 users send /start one at a time to the idle bot (the baseline). A second row repeats
  the broadcast with nobody else writing.
- **undo_pace** (issue #4): the same set-up and /push, then /undo as a reply to the report →
  Retract; deletion pace over the successful deleteMessage calls; 429s counted from the
  press on.
- **engine_overhead** (issue #9, benchmark 1; issue #3's benchmark 2): limits lifted, no
  latency, PostgreSQL, 10,000 chats, 30 worker threads. The Bot API server is
  bench/minimal_botapi.py in a process of its own (canned answers at the least CPU per call;
  `--server standin`: the stand-in with `--no-limits`). (a) the `Broadcaster` alone
  (`Pacer(1e9)`, TELEGRAM_TRANSPORT set to the transport measured, create_push + launch_push
  + wait, timed from launch to report) versus (b) a bare ptb loop on the same transport and
  event loop: one `telegram.Bot` on `make_request(transport, pool_size=30)` and 30
  concurrent `copy_message` coroutines (`asyncio.Semaphore(30)`), no database; aiohttp on
  uvloop's loop (the engine's, `EngineOptions.loop_factory`) and on asyncio's, httpx on
  uvloop's; plus the anchor, bare ptb on its default `HTTPXRequest()`. Rotated order, best
  of 5 each (medians in the details), same process; CPU per copy = this process's CPU time
  over the run / copies.
  **engine_overhead_paid_shape**: the same with 150 worker threads and connections (the
  paid tier's derived BROADCAST_WORKERS and pool at 1,000/s) for the engine, 150 coroutines
  for the bare loop. **engine_overhead_standin**: against the stand-in instead.
  Peak memory: a 100,000-recipient engine-only broadcast in a subprocess of its own, which
  reports its `VmHWM` (`ru_maxrss` is also printed but is inflated by the fork from the
  benchmark process before exec).
  **engine_overhead_sqlite**: the same comparison on an SQLite file (`--database sqlite`,
  no memory run); it replaces the loose engine-vs-bare assertion the test suite used to
  make (the test keeps only the functional check, `tests/broadcast/test_large_push.py`).
- **handoff** (issue #9): where the thread engine's time goes. One ptb Bot on
  AiohttpRequest(30) on a loop in its own thread, 10,000 copies to the minimal server, 30 in
  flight, no pacing, no database; the copies reach the loop from 30 coroutines on it, from
  30 threads that each wait for theirs, from a feeder and a ThreadPoolExecutor whose workers
  each wait for theirs (the engine's shape), from such workers that hand theirs over without
  waiting, or from one thread in batches. Rotated order, best of 3; the hand-off's cost per
  copy is the CPU per call over the loop's.
- **paid_pace** (issue #9, benchmark 2): stand-in at Telegram's limits (30/s; 1/s per chat;
  1,000/s with `allow_paid_broadcast`, burst 50) with 30–120 ms latency, PostgreSQL, 20,000
  subscribed chats; the real bot with PAID_BROADCAST=true, BROADCAST_RATE=1000 (150 workers
  and connections, derived), the admin's /push → Send, 5 new users/s sending /start
  meanwhile. Pace over the successful copies (stand-in clock), 429s over every method,
  copies per recipient, reply times of the users who wrote during the broadcast, and the
  free budget's requests/s in that window (everything but the paid copies).
- **inbound** (issue #9, benchmark 3): stand-in with its send limit lifted (otherwise
  replies are capped at 30/s) and the bot's broadcast_rate lifted (the shared pacer would
  cap replies too), PostgreSQL, 5,000 users who never wrote before. Their updates are held
  at the stand-in while the bot starts, queued in one control call and released at once
  (a burst; neither start-up nor injection is measured). Webhook mode: the stand-in POSTs
  them over up to 100 connections; polling: getUpdates batches of 100. Handled = the
  reply as recorded by the stand-in; every user's row is checked in PostgreSQL afterwards.
  CPU per update: the bot's threads (this process but its main thread, the driver) from
  the release to the last reply. Anchors in the same run, each bench/minimal_bot.py in a
  process of its own, no database: ptb's defaults (HTTPXRequest, one update at a time),
  ptb with 64 concurrent updates on HTTPXRequest(16) and on pushbot's AiohttpRequest, all
  through ptb's run_webhook. Rounds alternate the rows; best of 2 per row.
- **storm** (issue #9, benchmark 4): stand-in at Telegram's limits with 30–120 ms
  latency, PostgreSQL, the bot with default settings; 3,000 new users' /start in ten
  slices 0.1 s apart, an admin's /help after the fifth. Recorded = first /start → every
  row in PostgreSQL; the admin's answer = /help sent → the reply at the stand-in; replies
  = N / (last − first) of the users' replies; 429s over every method. Webhook, then polling.
- **scale_out** (docs/scaling.md): the bot as one and as two webhook processes
  (bench/bot_process.py) behind a proxy routing by chat id (bench/chat_router.py), one
  PostgreSQL, each in a process of its own; a 5,000-user burst with limits lifted, then
  600 /start at Telegram's limits (each process paces itself at 29.8/s).
- **bad_days** (issue #8): Telegram's bad days against the real bot, stand-in at Telegram's
  limits (30/s, 1/s per chat, 1000/s paid) with 30–120 ms latency, PostgreSQL, a fresh
  database per scenario. *outage*: 800 subscribers, /push, 5 s after Send every method
  (getUpdates included) answers 502 for 20 s; copies per chat, failed, purged and whether
  the status said "unreachable since" are read from the stand-in and the ledger.
  *transient*: 5 % of sendMessage and copyMessage answered 502; 500 new users /start, then a
  /push to them: lost and duplicate replies and copies. *paid*: PAID_BROADCAST=true,
  BROADCAST_RATE=1000, 3,000 new users /start within seconds: 429s over every method and
  replies received. *pace*: /push to 300, the admin subscribed too: msg/s and 429s, in the
  admin's chat included.

## Noise

2 cores, shared with the stand-in, PostgreSQL and whatever else runs on the machine (other
engineers' test runs included): absolute rates move by several percent between runs.
Ratios (engine vs bare) are measured within one run, alternating order, best of N, which
cancels most of the drift. Paces at Telegram's limits are set by the pacer (29.8/s), not by
the machine, and are stable to about ±0.1 msg/s. Percentiles of the /start reply time come
from a few dozen samples.
"""


def write_doc(results: list[Result], quick: bool, command: str) -> None:
    facts = machine_facts()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` (`make bench` prints the same table without writing) on {now}.",
        "",
        f"Machine: nproc = {facts['nproc']} ({facts['cpu']}), {facts['memory']} RAM, "
        f"Python {facts['python']}; {versions()}.",
        "",
    ]
    if quick:
        lines += [
            "**Quick smoke run: sizes are reduced; these are not the issues' figures.**",
            "",
        ]
    lines += ["## Results", "", *table(results, with_command=True), ""]
    lines += [
        "Every command is run from the repository root; each row's command reproduces it "
        "alone (add `--help` for the sizes, `--quick` for a smoke run).",
        "",
        METHOD,
        "## Details",
        "",
    ]
    for result in results:
        lines += [f"### {result.name}", "", *result.details, ""]
    profiles = [r for r in results if r.profile]
    if profiles:
        lines += ["## Profiles", ""]
        for result in profiles:
            lines += [f"### {result.name}", "", "```text", str(result.profile), "```", ""]
    lines += ["## Analysis", "", kept_analysis(), ""]
    DOC.write_text("\n".join(lines))
    print(f"\nwrote {DOC.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every benchmark with --quick")
    parser.add_argument("--write", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument(
        "--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="a subset, in order"
    )
    parser.add_argument(
        "--timeout", type=float, default=2400.0, help="seconds per benchmark (default 2400)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="seconds to wait at most, before each benchmark, for the rest of the machine to "
        "go quiet (under a quarter of a core); 0: do not wait (default 180)",
    )
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if args.only is None or b.name in args.only]
    results = [run_benchmark(bench, args.quick, args.timeout, args.quiet_wait) for bench in chosen]
    print("\n## All benchmarks\n")
    print("\n".join(table(results, with_command=False)))
    if args.write:
        write_doc(results, args.quick, " ".join([".venv/bin/python", "bench/run_all.py", *argv]))
    return 0 if all(r.rows and "FAILED" not in r.rows[0].figure for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
