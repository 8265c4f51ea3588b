"""The shared Pacer, per-chat budgets and the Application's SharedRateLimiter.

Timing is checked on a FakeClock (see the end of the file): `Pacer.acquire` waits on a
ClockWait and coroutines run on a FakeClockLoop, so every wait takes exactly what the
code asks for and no real time. Only what needs real time runs on it: the retry budgets
(counted on the real clock), the ExtBot over real HTTP, and one thread-safety test.
"""

from __future__ import annotations

import asyncio
import selectors
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.ext import ExtBot

from pushbot.broadcast.gateway import SharedRateLimiter, TelegramGateway
from pushbot.broadcast.health import TelegramHealth
from pushbot.broadcast.pacing import (
    RETRY_AFTER_MARGIN,
    ChatBudgets,
    Pacer,
    chat_key,
    is_paced_endpoint,
    retry_after_seconds,
)
from tests.broadcast.helpers import FakeClock
from tgstandin import StandIn, StandInConfig

T = TypeVar("T")


def test_reservations_are_evenly_spaced_at_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    waits = [pacer.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_a_burst_goes_at_once_then_the_rate_applies() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, burst=3, clock=clock)
    waits = [pacer.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])


def test_idle_time_does_not_bank_credit_beyond_the_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    pacer.reserve()
    clock.now += 60
    assert [pacer.reserve() for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])


def test_the_gate_delays_every_later_reservation_and_keeps_the_pace_after_it() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    pacer.block_for(5.0)
    assert pacer.gate_remaining() == pytest.approx(5.0)
    assert [pacer.reserve() for _ in range(3)] == pytest.approx([5.0, 5.1, 5.2])


def test_a_shorter_retry_after_never_shortens_the_gate() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    pacer.block_for(5.0)
    pacer.block_for(1.0)
    assert pacer.gate_remaining() == pytest.approx(5.0)


def test_acquire_hands_out_the_slots_in_turn() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=50, clock=clock)
    stamps = []
    for _ in range(4):
        assert pacer.acquire(ClockWait(clock))
        stamps.append(clock.now)
    assert stamps == pytest.approx([1000.0, 1000.02, 1000.04, 1000.06])


def test_threads_together_never_share_or_skip_a_slot() -> None:
    """The one test with real threads: 4 of them race for 40 slots. Time is the fake clock,
    moved only by the waits the pacer asks for, so it ends at the 40th slot exactly when no
    two threads took the same slot and none was skipped."""
    clock = FakeClock()
    pacer = Pacer(rate=50, clock=clock)
    granted: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            acquired = pacer.acquire(ClockWait(clock))
            with lock:
                granted.append(acquired)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted == [True] * 40
    # 40 slots at 50/s: the last one is 39 intervals after the first.
    assert clock.now - 1000.0 == pytest.approx(39 / 50)


def test_booked_ahead_is_what_reserve_booked_beyond_now() -> None:
    """What the outbox asks before booking: the slots reserve() booked ahead of now (a
    thread's acquire() takes its slot only when due, booking nothing ahead)."""
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    assert pacer.booked_ahead() == 0.0
    for _ in range(3):
        pacer.reserve()
    assert pacer.booked_ahead() == pytest.approx(0.3)
    clock.now += 0.25
    assert pacer.booked_ahead() == pytest.approx(0.05)
    clock.now += 1.0
    assert pacer.booked_ahead() == 0.0
    assert pacer.acquire(ClockWait(clock))  # a thread's slot, taken when due: none ahead
    assert pacer.booked_ahead() == 0.0
    assert pacer.reserve() == 0.0  # due at once, and the slot after it is now booked
    assert pacer.booked_ahead() == pytest.approx(0.1)


def test_block_for_pauses_every_user_not_only_the_caller() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=200, clock=clock)
    worker, other_worker = ClockWait(clock), ClockWait(clock)
    stamps = []
    for user in (worker, other_worker):
        assert pacer.acquire(user)
        stamps.append(clock.now)
    blocked_at = clock.now
    pacer.block_for(0.5)  # the worker got a 429 for the whole budget
    for user in (other_worker, worker, other_worker, worker):
        assert pacer.acquire(user)
        stamps.append(clock.now)
    assert stamps[:2] == pytest.approx([1000.0, 1000.005])
    # Nobody sends while the gate is closed, and there is no burst when it opens: the
    # callers go on at the rate.
    after_gate = [blocked_at + 0.5 + n * 0.005 for n in range(4)]
    assert stamps[2:] == pytest.approx(after_gate)


def test_block_for_holds_a_caller_already_waiting_for_its_slot() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=200, clock=clock)
    assert pacer.acquire(ClockWait(clock))
    # The next slot is 5 ms away; while this caller waits for it, another one gets a 429.
    assert pacer.acquire(ClockWait(clock, meanwhile=lambda: pacer.block_for(0.5)))
    assert clock.now == pytest.approx(1000.5)


def test_acquire_returns_false_when_stopped_while_waiting() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    pacer.block_for(30)
    stop = ClockWait(clock)
    stop.meanwhile = stop.set  # stopped while it waits for the gate
    assert pacer.acquire(stop) is False
    assert clock.now == 1000.0, "it returned as soon as it was stopped, not after the gate"
    assert pacer.acquire(stop) is False  # and at once when it is stopped before it asks


def test_async_and_thread_callers_share_one_budget() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=40, clock=clock)
    stamps: list[tuple[str, float]] = []

    async def main() -> None:
        # A broadcast worker and two of the Application's coroutines, taking turns.
        for _ in range(10):
            assert pacer.acquire(ClockWait(clock))
            stamps.append(("thread", clock.now))
            for _ in range(2):
                await pacer.acquire_async()
                stamps.append(("coroutine", clock.now))

    run_on(clock, main())
    assert len(stamps) == 30
    assert [at for _, at in stamps] == pytest.approx([1000.0 + n / 40 for n in range(30)])


def test_async_acquire_honours_the_gate() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    pacer.block_for(0.3)

    run_on(clock, pacer.acquire_async())

    assert clock.now == pytest.approx(1000.3)


def test_retry_after_seconds_reads_int_and_timedelta() -> None:
    assert retry_after_seconds(RetryAfter(7)) == 7.0
    assert retry_after_seconds(RetryAfter(timedelta(seconds=2.5))) == 2.5


@pytest.mark.parametrize(
    ("endpoint", "paced"),
    [
        ("sendMessage", True),
        ("copyMessage", True),
        ("editMessageText", True),
        ("deleteMessage", True),
        ("forwardMessage", True),
        ("getUpdates", False),
        ("getMe", False),
        ("answerCallbackQuery", False),
        ("deleteWebhook", False),
        ("setMyCommands", False),
        ("getChat", False),
    ],
)
def test_which_endpoints_spend_the_budget(endpoint: str, paced: bool) -> None:
    assert is_paced_endpoint(endpoint) is paced


def test_chat_keys() -> None:
    assert chat_key(5) == 5
    assert chat_key("-100") == -100
    assert chat_key("@Channel") == "@channel"
    assert chat_key(None) is None


class Recorder:
    """A stand-in for ptb's request callback: records when each call went out (on `clock`)
    and to which chat; can fail a few times."""

    def __init__(
        self,
        failures: list[Exception] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.calls: list[float] = []
        self.chats: list[object] = []
        self.failures = list(failures or [])
        self._clock = clock

    async def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(self._clock())
        self.chats.append(kwargs.get("chat_id"))
        if self.failures:
            raise self.failures.pop(0)
        return {"ok": True}

    def times_of(self, chat_id: object) -> list[float]:
        return [at for at, chat in zip(self.calls, self.chats, strict=True) if chat == chat_id]


def shared_limiter(
    pacer: Pacer,
    retry_budget: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    **chats: Any,
) -> SharedRateLimiter:
    gateway = TelegramGateway(
        pacer,
        chats=ChatBudgets(clock=clock, **chats),
        health=TelegramHealth(clock=clock),
        clock=clock,
    )
    return SharedRateLimiter(gateway, retry_budget=retry_budget, backoff_base=0.01)


def request(limiter: SharedRateLimiter, recorder: Recorder, endpoint: str, chat_id: Any) -> Any:
    return limiter.process_request(
        recorder, (), {"chat_id": chat_id}, endpoint, {"chat_id": chat_id}, None
    )


def run_requests(
    limiter: SharedRateLimiter,
    endpoint: str,
    chat_ids: list[Any],
    recorder: Recorder,
    clock: FakeClock | None = None,
) -> list[Any]:
    """The requests at once, on a loop whose time is `clock` (real time without one)."""

    async def main() -> list[Any]:
        requests = (request(limiter, recorder, endpoint, chat_id) for chat_id in chat_ids)
        return list(await asyncio.gather(*requests))

    return asyncio.run(main()) if clock is None else run_on(clock, main())


def test_rate_limiter_paces_each_private_chat() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    limiter = shared_limiter(pacer, clock=clock, private_rate=10, private_burst=1)
    recorder = Recorder(clock=clock)
    run_requests(limiter, "sendMessage", [5, 5, 5, 6], recorder, clock)
    # Chat 5 gets 3 messages at 10/s; chat 6 is not held up by chat 5, only by the budget's
    # next slot (1 ms at 1000/s).
    assert offsets(recorder.times_of(5)) == [0.0, 0.1, 0.2]
    assert offsets(recorder.times_of(6)) == [0.001]


def test_rate_limiter_paces_groups_slower() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    limiter = shared_limiter(pacer, clock=clock, group_rate=5, group_burst=1, private_rate=1000)
    recorder = Recorder(clock=clock)
    run_requests(limiter, "sendMessage", [-100, -100, 7, 7], recorder, clock)
    assert offsets(recorder.times_of(-100)) == [0.0, 0.2]
    assert offsets(recorder.times_of(7)) == [0.001, 0.002]


def test_rate_limiter_retries_a_chats_retry_after_without_gating_everyone() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    limiter = shared_limiter(pacer, clock=clock)
    recorder = Recorder([RetryAfter(timedelta(seconds=0.3))], clock=clock)
    assert run_requests(limiter, "sendMessage", [1], recorder, clock) == [{"ok": True}]
    assert offsets(recorder.calls) == [0.0, round(0.3 + RETRY_AFTER_MARGIN, 6)]
    # One chat's flood is that chat's: the broadcaster's workers (same pacer) go on, their
    # next slot one interval of the rate away.
    assert pacer.gate_remaining() == 0.0
    assert pacer.reserve() == pytest.approx(0.001)


def test_rate_limiter_gates_everyone_when_several_chats_are_refused() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    limiter = shared_limiter(pacer, clock=clock)
    floods: list[Exception] = [
        RetryAfter(timedelta(seconds=0.5)),
        RetryAfter(timedelta(seconds=0.5)),
    ]
    recorder = Recorder(floods, clock=clock)

    async def main() -> None:
        refused = asyncio.gather(
            request(limiter, recorder, "sendMessage", 1),
            request(limiter, recorder, "sendMessage", 2),
        )
        await asyncio.sleep(0.1)  # on the fake clock: a reply to a third chat, 0.1 s later
        await asyncio.gather(refused, request(limiter, recorder, "sendMessage", 3))

    run_on(clock, main())
    assert offsets(recorder.times_of(1)[:1] + recorder.times_of(2)[:1]) == [0.0, 0.001]
    # The second chat's 429 within a second closed the whole budget: the third chat, which
    # Telegram never refused, waits for the gate too, and the retries go after it.
    gate_opens = 0.001 + 0.5 + RETRY_AFTER_MARGIN
    assert offsets(recorder.times_of(3)) == [round(gate_opens, 6)]
    retries = recorder.times_of(1)[1:] + recorder.times_of(2)[1:]
    assert len(retries) == 2 and min(offsets(retries)) > gate_opens
    assert len(recorder.calls) == 5


def test_rate_limiter_gives_up_when_floods_outlast_its_budget() -> None:
    pacer = Pacer(rate=1000)
    limiter = shared_limiter(pacer, retry_budget=0.25)
    recorder = Recorder([RetryAfter(timedelta(seconds=0.1)), RetryAfter(timedelta(seconds=0.2))])
    with pytest.raises(RetryAfter):
        run_requests(limiter, "sendMessage", [1], recorder)
    assert len(recorder.calls) == 2
    assert limiter.gateway.chats.wait_time(1) > 0  # the chat stays held for the next sender


def test_rate_limiter_retries_transient_failures_with_backoff() -> None:
    limiter = shared_limiter(Pacer(rate=1000))
    recorder = Recorder([NetworkError("Bad Gateway"), TimedOut("Timed out")])
    assert run_requests(limiter, "sendMessage", [1], recorder) == [{"ok": True}]
    assert len(recorder.calls) == 3


def test_rate_limiter_gives_up_after_its_retry_budget() -> None:
    # The chat's own limit out of the way: its queue is never cut short by the budget.
    limiter = shared_limiter(Pacer(rate=1000), retry_budget=0.3, private_rate=1000)
    recorder = Recorder([NetworkError("Bad Gateway")] * 1000)
    started = time.monotonic()
    with pytest.raises(NetworkError):
        run_requests(limiter, "sendMessage", [1], recorder)
    assert 0.05 < time.monotonic() - started < 2.0
    assert len(recorder.calls) > 1


def test_a_repeated_edit_after_a_timeout_counts_as_done() -> None:
    limiter = shared_limiter(Pacer(rate=1000))
    recorder = Recorder([TimedOut("Timed out"), BadRequest("Message is not modified: …")])
    assert run_requests(limiter, "editMessageText", [1], recorder) == [True]
    # Without a timeout before it, "not modified" is the caller's to handle.
    with pytest.raises(BadRequest):
        run_requests(
            limiter, "editMessageText", [1], Recorder([BadRequest("Message is not modified")])
        )


def test_errors_about_the_chat_are_not_retried() -> None:
    limiter = shared_limiter(Pacer(rate=1000))
    recorder = Recorder([BadRequest("Chat not found")])
    with pytest.raises(BadRequest):
        run_requests(limiter, "sendMessage", [1], recorder)
    assert len(recorder.calls) == 1


def test_rate_limiter_never_delays_get_updates_or_callback_answers() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1, clock=clock)
    pacer.block_for(30)
    limiter = shared_limiter(pacer, clock=clock)
    recorder = Recorder(clock=clock)

    async def main() -> None:
        await limiter.process_request(recorder, (), {}, "getUpdates", {}, None)
        await limiter.process_request(
            recorder, (), {}, "answerCallbackQuery", {"callback_query_id": "1"}, None
        )

    run_on(clock, main())
    assert offsets(recorder.calls) == [0.0, 0.0]  # neither waited for the closed gate


def test_rate_limiter_waits_for_a_gate_closed_by_the_broadcaster() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    limiter = shared_limiter(pacer, clock=clock)
    pacer.block_for(0.3)
    recorder = Recorder(clock=clock)
    run_requests(limiter, "editMessageText", [1], recorder, clock)
    assert offsets(recorder.calls) == [0.3]


def test_ext_bot_with_the_shared_rate_limiter_against_the_standin(
    standin_factory: Callable[..., StandIn],
) -> None:
    """Real ExtBot, real HTTP: per-chat pacing, the shared gate and RetryAfter retries.
    Real time, so only lower bounds (a busy machine can only make things slower)."""
    tg = standin_factory(StandInConfig(limits_enabled=True, per_chat_rate=100.0))
    user = tg.add_user()
    pacer = Pacer(rate=1000)
    limiter = shared_limiter(pacer, private_rate=10, private_burst=1)
    bot: ExtBot[float] = ExtBot(tg.token, base_url=tg.base_url, rate_limiter=limiter)

    async def scenario() -> dict[str, float]:
        timings: dict[str, float] = {}
        async with bot:
            started = time.monotonic()
            await asyncio.gather(*(bot.send_message(user, f"reply {n}") for n in range(4)))
            timings["four replies"] = time.monotonic() - started

            pacer.block_for(1.0)  # as if a broadcast worker had just got a 429
            started = time.monotonic()
            await bot.get_me()
            timings["gate left after getMe"] = pacer.gate_remaining()
            await bot.send_message(user, "after the gate")
            timings["reply under the gate"] = time.monotonic() - started

            # Telegram's per-chat limit is stricter than ours: a 429, then a retry.
            tg.set_limits(per_chat_rate=0.5, per_chat_burst=1)
            tg.reset_limits()
            started = time.monotonic()
            await asyncio.gather(bot.send_message(user, "one"), bot.send_message(user, "two"))
            timings["two replies through a 429"] = time.monotonic() - started
        return timings

    timings = asyncio.run(scenario())
    assert timings["four replies"] >= 0.28  # 10/s in one private chat
    assert timings["gate left after getMe"] > 0, "getMe went through the closed gate"
    assert timings["reply under the gate"] >= 0.95
    assert tg.count("sendMessage", 429) >= 1
    assert timings["two replies through a 429"] >= 1.0
    texts = [message.get("text") for message in tg.inbox(user)]
    assert texts.count("one") == 1 and texts.count("two") == 1


def release_times_after_a_stall(rate: float, callers: int, stall: float) -> list[float]:
    """`callers` async callers of one pacer book their slots, then the event loop is busy
    elsewhere for `stall` seconds: when each one is let go, on the fake clock."""
    clock = FakeClock()
    pacer = Pacer(rate=rate, clock=clock)
    released: list[float] = []

    async def caller() -> None:
        await pacer.acquire_async()
        released.append(clock.now)

    async def main() -> None:
        tasks = [asyncio.create_task(caller()) for _ in range(callers)]
        await asyncio.sleep(0)  # every caller has booked its slot
        clock.now += stall
        await asyncio.gather(*tasks)

    run_on(clock, main())
    return released


def test_async_callers_that_wake_late_do_not_go_out_as_a_burst() -> None:
    """The event loop was stuck for 2 s: the slots booked before it all fell due meanwhile.
    Sent together they would draw 429s; the late callers take fresh slots instead."""
    # Every caller books its slot first (now, +0.1 s … +0.5 s), then the loop is stuck.
    released = release_times_after_a_stall(rate=10, callers=6, stall=2.0)
    assert offsets(released[:1]) == [0.0]  # its slot was due at once
    after_the_stall = [round(t - 1002.0, 3) for t in released[1:]]
    assert after_the_stall == [0.0, 0.1, 0.2, 0.3, 0.4]  # booked again, at the rate


def test_at_the_paid_rate_callers_that_wake_late_do_not_go_out_as_a_burst() -> None:
    """At 1,000/s (a budget the Application shares with the engine when BROADCAST_RATE
    is raised) a stall of 20.5 ms leaves 20 booked slots overdue. The 10 least late go
    at once (Telegram takes a burst of about 10); those more than 10 slots late book again
    at the back of the queue instead of joining the burst."""
    # Every caller books its slot first (now, +1 ms … +29 ms), then the loop is stuck.
    released = release_times_after_a_stall(rate=1000, callers=30, stall=0.0205)
    in_ms = sorted(round((at - 1000.0) * 1000, 1) for at in released)
    on_time = [float(ms) for ms in range(21, 30)]
    rebooked = [float(ms) for ms in range(30, 40)]
    assert in_ms == [0.0, *[20.5] * 10, *on_time, *rebooked]


def test_at_the_paid_rate_threads_that_come_late_catch_up_only_within_the_burst() -> None:
    """The engine's workers take their paid slots in turn, each only once it is due. After
    a stall of 20.5 ms (20 slots at 1,000/s) the slots of the last 10 ms are made up at
    once (within Telegram's burst of about 10; a late wake-up does not slow the broadcast
    down), the 10 before them are not: then the rate applies again."""
    clock = FakeClock()
    pacer = Pacer(rate=1000, clock=clock)
    assert pacer.acquire(ClockWait(clock))
    clock.now += 0.0205  # every worker was busy elsewhere
    stamps = []
    for _ in range(14):
        assert pacer.acquire(ClockWait(clock))
        stamps.append(round((clock.now - 1000.0) * 1000, 1))
    assert stamps == [*[20.5] * 11, 21.5, 22.5, 23.5]


def test_at_the_free_rate_a_late_thread_makes_up_one_slot_at_most() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=30, clock=clock)
    assert pacer.acquire(ClockWait(clock))
    clock.now += 1.0  # 30 slots missed
    stamps = []
    for _ in range(4):
        assert pacer.acquire(ClockWait(clock))
        stamps.append(round(clock.now - 1000.0, 4))
    assert stamps == [1.0, 1.0, round(1.0 + 1 / 30, 4), round(1.0 + 2 / 30, 4)]


def test_waiting_in_the_queue_is_not_cut_short_by_the_retry_budget() -> None:
    """A /start rush queues replies at ~30/s for minutes: that is pacing, not a failure,
    and no reply may be given up for it (the budget bounds retries and outages only).
    Real time: the budget is counted on the real clock, which a queue must outlast here."""
    limiter = shared_limiter(Pacer(rate=20), retry_budget=0.2)
    recorder = Recorder()
    results = run_requests(limiter, "sendMessage", list(range(1, 13)), recorder)
    assert results == [{"ok": True}] * 12
    assert max(recorder.calls) - min(recorder.calls) >= 0.5  # the queue took longer than 0.2 s


# --- time on the fake clock ----------------------------------------------------------------


def offsets(times: list[float]) -> list[float]:
    """Times on a FakeClock as seconds after it started, to the microsecond."""
    return [round(at - FakeClock().now, 6) for at in times]


class ClockWait(threading.Event):
    """A stop event for `Pacer.acquire` that waits on the fake clock: instead of sleeping,
    the caller's wait moves the clock on by exactly what the pacer asked for. `meanwhile`
    runs at the start of the first wait: what happens while the caller waits."""

    def __init__(self, clock: FakeClock, meanwhile: Callable[[], object] | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.meanwhile = meanwhile

    def wait(self, timeout: float | None = None) -> bool:
        if self.meanwhile is not None:
            happening, self.meanwhile = self.meanwhile, None
            happening()
        if not self.is_set() and timeout is not None:
            self.clock.now += timeout
        return self.is_set()


class ClockSelector(selectors.SelectSelector):
    """Where the event loop would block until its next timer, the clock jumps to it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.clock.now += timeout
            timeout = 0
        return super().select(timeout)


class FakeClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time is a FakeClock: `asyncio.sleep` and every timer complete
    in no real time and in the order of their deadlines."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(ClockSelector(clock))
        self.fake_clock = clock

    def time(self) -> float:
        return self.fake_clock.now


def run_on(clock: FakeClock, coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=lambda: FakeClockLoop(clock)) as runner:
        return runner.run(coroutine)
