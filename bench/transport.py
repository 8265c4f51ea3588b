"""Issue #9: what a Bot API call costs the client, per HTTP transport, side by side in one run.

One client process at a time makes N copyMessage calls (default 10,000), 30 in flight at once
(30 coroutines taking the next call as they finish), against a minimal Bot API server in a
separate process (bench/minimal_botapi.py: canned answers, so it is never the bottleneck;
its share of a core is printed with every row). Clients:

- ptb Bot + HTTPXRequest() (ptb's default) and + HTTPXRequest(connection_pool_size=30);
- ptb Bot + pushbot.transport.AiohttpRequest(connection_pool_size=30), also on uvloop when
  it is installed;
- raw aiohttp POSTs of the same JSON body (orjson), the answer read but not parsed: no ptb
  (the floor);
- aiogram 3's Bot (aiohttp, 30 connections), when aiogram is installed (`pip install -e
  '.[bench]'`).

Each client runs in a fresh process (`bench/transport.py --client NAME ...`), after 300
warm-up calls that open its connections; measured are the wall time of the N calls and the
client process's CPU time over them (time.process_time(): user + system, all threads), so
CPU per call = CPU seconds / N. --rounds rounds (default 3), the order of the clients rotated
each round; each client's best calls/s and lowest CPU per call are reported, and the ratios
are to the first row (ptb's default HTTPXRequest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import telegram
from telegram.request import BaseRequest, HTTPXRequest

from common import MinimalBotApi
from pushbot.transport import AiohttpRequest

BENCH = Path(__file__).resolve().parent
TOKEN = "123456:BENCH-token-abcdefghijklmnopqrstuv"
ADMIN_CHAT = 1000
FIRST_CHAT = 10_000_001
CHATS = 1000
CONCURRENCY = 30
WARMUP_CALLS = 300
RESULT_MARK = "RESULT "
MEASURING_MARK = "MEASURING"


@dataclass(frozen=True)
class Client:
    name: str
    label: str
    needs: str | None = None  # a module that must be importable, else the row is skipped


CLIENTS = (
    Client("httpx-default", "ptb Bot + HTTPXRequest() (ptb's default)"),
    Client("httpx-30", "ptb Bot + HTTPXRequest(connection_pool_size=30)"),
    Client("aiohttp", "ptb Bot + AiohttpRequest(connection_pool_size=30) (ours)"),
    Client("aiohttp-stdlib-json", "ptb Bot + AiohttpRequest(30), stdlib json instead of orjson"),
    Client("aiohttp-uvloop", "ptb Bot + AiohttpRequest(30) on uvloop", needs="uvloop"),
    Client("raw-aiohttp", "raw aiohttp POSTs, no ptb (the floor)"),
    Client("aiogram", "aiogram 3 Bot (aiohttp, 30 connections)", needs="aiogram"),
)
CLIENTS_BY_NAME = {client.name: client for client in CLIENTS}


# --- the client process --------------------------------------------------------------------------


@dataclass
class Measured:
    calls: int
    seconds: float
    cpu: float


Call = Callable[[int], Awaitable[object]]


async def drive(call: Call, calls: int, concurrency: int) -> Measured:
    """`calls` calls, `concurrency` at a time; wall and process CPU time of them all."""
    numbers: Iterator[int] = iter(range(calls))

    async def worker() -> None:
        for number in numbers:  # shared: each worker takes the next call when it is free
            await call(number)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Measured(calls, time.perf_counter() - started, time.process_time() - cpu)


def chat_of(number: int) -> int:
    return FIRST_CHAT + number % CHATS


async def measure(call: Call, calls: int, concurrency: int) -> Measured:
    await drive(call, WARMUP_CALLS, concurrency)
    print(MEASURING_MARK, flush=True)
    return await drive(call, calls, concurrency)


class StdlibJsonRequest(AiohttpRequest):
    """AiohttpRequest with the standard library's json, to show what orjson is worth."""

    __slots__ = ()

    @staticmethod
    def encode_parameters(parameters: Mapping[str, object]) -> bytes:
        return json.dumps(parameters).encode()

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        return BaseRequest.parse_json_payload(payload)


async def ptb_client(name: str, base_url: str, calls: int, concurrency: int) -> Measured:
    requests: tuple[BaseRequest, BaseRequest]
    if name == "httpx-default":
        requests = (HTTPXRequest(), HTTPXRequest())
    elif name == "httpx-30":
        requests = (HTTPXRequest(connection_pool_size=concurrency), HTTPXRequest(1))
    elif name == "aiohttp-stdlib-json":
        requests = (StdlibJsonRequest(connection_pool_size=concurrency), StdlibJsonRequest(1))
    else:
        requests = (AiohttpRequest(connection_pool_size=concurrency), AiohttpRequest(1))
    bot = telegram.Bot(
        TOKEN, base_url=base_url, request=requests[0], get_updates_request=requests[1]
    )
    async with bot:

        async def copy(number: int) -> object:
            return await bot.copy_message(chat_of(number), ADMIN_CHAT, 1)

        return await measure(copy, calls, concurrency)


async def raw_aiohttp_client(base_url: str, calls: int, concurrency: int) -> Measured:
    url = f"{base_url}{TOKEN}/copyMessage"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def copy(number: int) -> object:
            body = orjson.dumps(
                {"chat_id": chat_of(number), "from_chat_id": ADMIN_CHAT, "message_id": 1}
            )
            async with session.post(url, data=body, headers=headers) as response:
                return await response.read()

        return await measure(copy, calls, concurrency)


async def aiogram_client(base_url: str, calls: int, concurrency: int) -> Measured:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    origin = base_url.removesuffix("/bot")
    session = AiohttpSession(api=TelegramAPIServer.from_base(origin), limit=concurrency)
    bot = Bot(TOKEN, session=session)
    try:

        async def copy(number: int) -> object:
            return await bot.copy_message(chat_of(number), ADMIN_CHAT, 1)

        return await measure(copy, calls, concurrency)
    finally:
        await bot.session.close()


def client_main(name: str, base_url: str, calls: int, concurrency: int) -> int:
    if name == "raw-aiohttp":
        work = raw_aiohttp_client(base_url, calls, concurrency)
    elif name == "aiogram":
        work = aiogram_client(base_url, calls, concurrency)
    else:
        work = ptb_client(name, base_url, calls, concurrency)
    if name.endswith("-uvloop"):
        import uvloop

        measured = uvloop.run(work)
    else:
        measured = asyncio.run(work)
    print(RESULT_MARK + json.dumps(measured.__dict__), flush=True)
    return 0


# --- the driver ----------------------------------------------------------------------------------


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@dataclass
class Round:
    client: str
    calls: int
    seconds: float
    cpu: float
    server_cpu: float
    machine_cpu: float  # CPU seconds of every process on the machine while measured

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.calls

    @property
    def server_share(self) -> float:
        return self.server_cpu / self.seconds

    @property
    def others_share(self) -> float:
        """Of a core, what processes other than the client and the server used meanwhile."""
        return max(0.0, self.machine_cpu - self.cpu - self.server_cpu) / self.seconds


def run_client(
    client: Client, server: MinimalBotApi, calls: int, concurrency: int, timeout: float
) -> Round:
    from common import cpu_seconds, machine_busy_seconds

    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--client",
        client.name,
        "--base-url",
        server.base_url,
        "--calls",
        str(calls),
        "--concurrency",
        str(concurrency),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    server_cpu_at_start = machine_at_start = 0.0
    found: dict[str, Any] | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while found is None:
            if time.monotonic() >= deadline or not selector.select(deadline - time.monotonic()):
                process.kill()
                raise RuntimeError(f"{client.name}: no result within {timeout:g} s")
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith(MEASURING_MARK):
                server_cpu_at_start = cpu_seconds(server.process.pid)
                machine_at_start = machine_busy_seconds()
            elif line.startswith(RESULT_MARK):
                server_cpu = cpu_seconds(server.process.pid) - server_cpu_at_start
                machine_cpu = machine_busy_seconds() - machine_at_start
                found = json.loads(line[len(RESULT_MARK) :])
    code = process.wait(30)
    if found is None or code != 0:
        raise RuntimeError(f"{client.name}: the client process failed (exit code {code})")
    return Round(
        client.name, found["calls"], found["seconds"], found["cpu"], server_cpu, machine_cpu
    )


@dataclass
class Summary:
    client: Client
    rounds: list[Round]

    @property
    def fastest(self) -> Round:
        return max(self.rounds, key=lambda r: r.rate)

    @property
    def best_rate(self) -> float:
        return self.fastest.rate

    @property
    def best_cpu_ms(self) -> float:
        return min(r.cpu_ms for r in self.rounds)

    @property
    def server_share(self) -> float:
        return max(r.server_share for r in self.rounds)

    @property
    def others_share(self) -> float:
        return self.fastest.others_share


def table(summaries: list[Summary]) -> list[str]:
    base = summaries[0]
    lines = [
        "| client | CPU per call | calls/s | CPU/call vs row 1 | calls/s vs row 1 | server | "
        "others |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        lines.append(
            f"| {s.client.label} | {s.best_cpu_ms:.3f} ms | {s.best_rate:,.0f} | "
            f"{s.best_cpu_ms / base.best_cpu_ms:.2f}× | {s.best_rate / base.best_rate:.1f}× | "
            f"{s.server_share:.0%} | {s.others_share:.0%} |"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    from common import add_common_options

    parser = argparse.ArgumentParser(description=__doc__)
    add_common_options(parser)
    parser.add_argument("--calls", type=int, default=10_000, help="measured calls per client")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every client")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=[c.name for c in CLIENTS],
        help="a subset (the first one is the row the ratios refer to)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per client run")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="seconds to wait at most before each client run for the rest of the machine to go "
        "quiet (under a quarter of a core); 0: do not wait (default 20)",
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)  # a client process of this run
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.client:
        return client_main(args.client, args.base_url, args.calls, args.concurrency)
    from common import Result, Row, command_line, emit, wait_for_quiet

    if args.quick:
        args.calls, args.rounds = min(args.calls, 1000), 1
    command = command_line("transport.py", argv)
    chosen = [CLIENTS_BY_NAME[n] for n in args.clients] if args.clients else list(CLIENTS)
    skipped = [c for c in chosen if c.needs and not module_available(c.needs)]
    clients = [c for c in chosen if c not in skipped]
    for client in skipped:
        print(
            f"skipped: {client.label}: {client.needs} is not installed (pip install -e '.[bench]')"
        )
    server = MinimalBotApi()
    rounds: dict[str, list[Round]] = {c.name: [] for c in clients}
    try:
        for index in range(args.rounds):
            shift = index % len(clients)
            for client in clients[shift:] + clients[:shift]:
                if args.quiet_wait > 0:
                    wait_for_quiet(args.quiet_wait)
                done = run_client(client, server, args.calls, args.concurrency, args.timeout)
                rounds[client.name].append(done)
                print(
                    f"  round {index + 1}: {client.name}: {done.cpu_ms:.3f} ms CPU per call, "
                    f"{done.rate:,.0f} calls/s; server {done.server_share:.0%} of a core, "
                    f"other processes {done.others_share:.0%}",
                    flush=True,
                )
    finally:
        server.stop()
    summaries = [Summary(c, rounds[c.name]) for c in clients]
    result = Result(name="transport")
    base = summaries[0]
    for s in summaries:
        result.rows.append(
            Row(
                benchmark=f"Bot API transport: {s.client.label}, {args.concurrency} concurrent",
                figure=(
                    f"{s.best_cpu_ms:.3f} ms CPU per call, {s.best_rate:,.0f} calls/s"
                    + (
                        " (the reference row)"
                        if s is base
                        else f" ({s.best_cpu_ms / base.best_cpu_ms:.2f}× the CPU per call, "
                        f"{s.best_rate / base.best_rate:.1f}× the calls/s of the first row)"
                    )
                ),
                goal="reported",
                met=None,
                command=command,
            )
        )
    result.details += [
        f"{args.calls:,} copyMessage calls per client and round, {args.concurrency} in flight, "
        f"best of {args.rounds} rounds (CPU per call: lowest; calls/s: highest). server: the "
        "minimal Bot API server's share of a core while that client was measured (highest); "
        "others: what every other process on the machine used meanwhile, in the fastest round. "
        "The client is CPU-bound on one core, so its calls/s are at most 1 / CPU per call, and "
        "less when others take that core; CPU per call is the steadier figure.",
        "",
        *table(summaries),
        "",
        *[f"- skipped: {c.label} ({c.needs} is not installed)" for c in skipped],
        f"- machine: {os.cpu_count()} cores; command: `{command}`",
    ]
    result.data = {
        name: [r.__dict__ | {"rate": r.rate, "cpu_ms": r.cpu_ms} for r in runs]
        for name, runs in rounds.items()
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
