"""Issue #9: what driving ptb's event loop from worker threads costs, shape by shape, in one run.

Where the engine's time goes per copy (pushbot.broadcast.transport: worker threads, each
waiting for its copy on the engine's loop). One ptb Bot on AiohttpRequest(30) on one event
loop in its own thread, N copyMessage calls (default 10,000) to the minimal Bot API server
in another process (bench/minimal_botapi.py), 30 in flight, no pacing and no database: only
the way the copies reach the loop differs.

- loop: 30 coroutines on the loop take the next copy as they finish (the bare loop);
- threads-wait: 30 threads each hand a copy to the loop (`run_coroutine_threadsafe`) and
  wait for its answer, then take the next one;
- pool-wait: one feeder thread submits one copy at a time to a ThreadPoolExecutor of 30
  workers (at most 30 given out); a worker hands its copy to the loop and waits for its
  answer: pushbot's engine (runner.py's feeder, delivery.py's worker, Transport.call);
- pool-submit: the same pool, but a worker hands its copy over (`call_soon_threadsafe`) and
  does not wait: the answer is handled on the loop;
- feeder-batches: one thread hands the copies to the loop in batches of what is free (at
  most 64), no worker threads (the coroutine engine tried for issue 9, not kept).

Each shape --rounds times (default 3), the order rotated every round; best calls/s and
lowest CPU per call (this process's CPU time / N) are reported, with the ratios to `loop`,
and the hand-off's cost per copy: the CPU per call over the loop's.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from telegram import Bot

from common import (
    MinimalBotApi,
    Result,
    Row,
    add_common_options,
    command_line,
    cpu_seconds,
    emit,
    machine_busy_seconds,
)
from pushbot.transport import AiohttpRequest

TOKEN = "123456:BENCH-token-abcdefghijklmnopqrstuv"
FIRST_CHAT = 10_000_001
IN_FLIGHT = 30
BATCH = 64
LOOPS = ("asyncio", "uvloop")


@dataclass(frozen=True)
class Shape:
    name: str
    label: str


SHAPES = (
    Shape("loop", "30 coroutines on the loop (the bare loop)"),
    Shape("threads-wait", "30 threads, each waiting for its copy"),
    Shape(
        "pool-wait",
        "a feeder and ThreadPoolExecutor(30), each worker waiting for its copy (the engine)",
    ),
    Shape("pool-submit", "ThreadPoolExecutor(30), a worker hands its copy over, no wait"),
    Shape("feeder-batches", "one thread feeds the loop in batches (no worker threads)"),
)


@dataclass
class Measured:
    shape: Shape
    calls: int
    seconds: float
    cpu: float
    others: float  # CPU seconds of every other process meanwhile (the server included)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.calls


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


class Engine:
    """An event loop in a thread with one Bot on it."""

    def __init__(self, base_url: str, loop: str) -> None:
        self.loop = new_loop(loop)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.request = AiohttpRequest(connection_pool_size=IN_FLIGHT)
        self.bot = Bot(TOKEN, base_url=base_url, request=self.request)
        self.call(self.request.initialize())

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def copy(self, number: int) -> Coroutine[Any, Any, Any]:
        return self.bot.copy_message(chat_id=FIRST_CHAT + number, from_chat_id=1, message_id=1)

    def close(self) -> None:
        self.call(self.request.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def on_the_loop(engine: Engine, calls: int) -> None:
    numbers: Iterator[int] = iter(range(calls))

    async def worker() -> None:
        for number in numbers:
            await engine.copy(number)

    async def all_of_them() -> None:
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    engine.call(all_of_them())


def threads_waiting(engine: Engine, calls: int) -> None:
    numbers: Iterator[int] = iter(range(calls))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            asyncio.run_coroutine_threadsafe(engine.copy(number), engine.loop).result()

    threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def pool_waiting(engine: Engine, calls: int) -> None:
    slots = threading.Semaphore(IN_FLIGHT)

    def send(number: int) -> None:
        try:
            asyncio.run_coroutine_threadsafe(engine.copy(number), engine.loop).result()
        finally:
            slots.release()

    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        for number in range(calls):
            slots.acquire()
            pool.submit(send, number)


class Completions:
    """Slots for IN_FLIGHT copies, handed back on the loop as copies answer."""

    def __init__(self, calls: int) -> None:
        self.slots = threading.Semaphore(IN_FLIGHT)
        self.left = calls
        self.done = threading.Event()

    async def send(self, copy: Coroutine[Any, Any, Any]) -> None:
        try:
            await copy
        finally:
            self.slots.release()
            self.left -= 1  # on the loop only
            if self.left == 0:
                self.done.set()


def pool_submitting(engine: Engine, calls: int) -> None:
    completions = Completions(calls)

    def hand_over(number: int) -> None:
        engine.loop.call_soon_threadsafe(
            engine.loop.create_task, completions.send(engine.copy(number))
        )

    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        for number in range(calls):
            completions.slots.acquire()
            pool.submit(hand_over, number)
        completions.done.wait()


def feeder_batches(engine: Engine, calls: int) -> None:
    completions = Completions(calls)

    def start(batch: list[int]) -> None:
        for number in batch:
            engine.loop.create_task(completions.send(engine.copy(number)))

    batch: list[int] = []
    for number in range(calls):
        if not completions.slots.acquire(blocking=False):
            if batch:
                engine.loop.call_soon_threadsafe(start, batch)
                batch = []
            completions.slots.acquire()
        batch.append(number)
        if len(batch) >= BATCH:
            engine.loop.call_soon_threadsafe(start, batch)
            batch = []
    if batch:
        engine.loop.call_soon_threadsafe(start, batch)
    completions.done.wait()


DRIVERS: dict[str, Callable[[Engine, int], None]] = {
    "loop": on_the_loop,
    "threads-wait": threads_waiting,
    "pool-wait": pool_waiting,
    "pool-submit": pool_submitting,
    "feeder-batches": feeder_batches,
}


def measure(shape: Shape, base_url: str, calls: int, loop: str) -> Measured:
    engine = Engine(base_url, loop)
    try:
        DRIVERS[shape.name](engine, min(300, calls))  # warm-up: the connections are open
        own, machine = cpu_seconds(), machine_busy_seconds()
        started = time.perf_counter()
        DRIVERS[shape.name](engine, calls)
        seconds = time.perf_counter() - started
        own = cpu_seconds() - own
        others = machine_busy_seconds() - machine - own
    finally:
        engine.close()
    return Measured(shape, calls, seconds, own, max(0.0, others))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loop", choices=LOOPS, default="asyncio", help="the engine loop's implementation"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = min(args.calls, 2000), 1
    command = command_line("handoff.py", argv)
    rounds: dict[str, list[Measured]] = {shape.name: [] for shape in SHAPES}
    with MinimalBotApi() as server:
        for index in range(args.rounds):
            shift = index % len(SHAPES)
            for shape in SHAPES[shift:] + SHAPES[:shift]:
                done = measure(shape, server.base_url, args.calls, args.loop)
                rounds[shape.name].append(done)
                print(
                    f"  round {index + 1}: {shape.name}: {done.rate:,.0f} calls/s, "
                    f"{done.cpu_ms:.3f} ms CPU per call; other processes "
                    f"{done.others / done.seconds:.0%} of a core",
                    flush=True,
                )
    best_rate = {name: max(m.rate for m in found) for name, found in rounds.items()}
    best_cpu = {name: min(m.cpu_ms for m in found) for name, found in rounds.items()}
    result = Result(name="handoff")
    for shape in SHAPES:
        result.rows.append(
            Row(
                f"hand-off to the loop: {shape.label}, {args.calls:,} copies, {IN_FLIGHT} in "
                f"flight, {args.loop} loop, minimal Bot API server",
                f"{best_rate[shape.name]:,.0f} calls/s "
                f"({best_rate[shape.name] / best_rate['loop']:.2f}× the loop), "
                f"{best_cpu[shape.name]:.3f} ms CPU per call "
                f"(hand-off {best_cpu[shape.name] - best_cpu['loop']:+.3f} ms per copy)",
                "reported",
                None,
                command,
            )
        )
    result.details.append(
        f"- `{command}`: best of {args.rounds} rounds each, order rotated; every round above."
    )
    result.data = {"rate": best_rate, "cpu_ms": best_cpu}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
