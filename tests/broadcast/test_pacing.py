"""The shared Pacer, per-chat budgets and the Application's SharedRateLimiter."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.ext import ExtBot

from pushbot.broadcast.gateway import SharedRateLimiter, TelegramGateway
from pushbot.broadcast.pacing import (
    ChatBudgets,
    Pacer,
    chat_key,
    is_paced_endpoint,
    retry_after_seconds,
)
from tests.broadcast.helpers import FakeClock
from tgstandin import StandIn, StandInConfig


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


def test_threads_together_keep_to_the_rate() -> None:
    pacer = Pacer(rate=50)
    stamps: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            assert pacer.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 40 slots at 50/s: the last one is 39 intervals after the first.
    assert max(stamps) - started == pytest.approx(39 / 50, abs=0.1)
    stamps.sort()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.25)


def test_block_for_pauses_every_user_not_only_the_caller() -> None:
    pacer = Pacer(rate=200)
    stamps: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            if pacer.acquire(stop):
                with lock:
                    stamps.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    blocked_at = time.monotonic()
    pacer.block_for(0.5)
    time.sleep(0.8)
    stop.set()
    for thread in threads:
        thread.join()
    # A slot booked just before the gate may still fire right at blocked_at.
    during_gate = [t for t in stamps if blocked_at + 0.02 < t < blocked_at + 0.5]
    assert during_gate == []
    after_gate = [t for t in stamps if t >= blocked_at + 0.5]
    assert after_gate, "the pacer opened again after the gate"
    # No burst when the gate opens: the first 10 slots after it are spread at the rate.
    assert after_gate[min(9, len(after_gate) - 1)] - after_gate[0] >= 0.035


def test_acquire_returns_false_when_stopped_while_waiting() -> None:
    pacer = Pacer(rate=10)
    pacer.block_for(30)
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(pacer.acquire(stop)))
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert result == [False]
    assert time.monotonic() - started < 1


def test_async_and_thread_callers_share_one_budget() -> None:
    pacer = Pacer(rate=40)
    stamps: list[float] = []
    lock = threading.Lock()

    def thread_work() -> None:
        for _ in range(10):
            pacer.acquire()
            with lock:
                stamps.append(time.monotonic())

    async def coroutine_work() -> None:
        for _ in range(10):
            await pacer.acquire_async()
            with lock:
                stamps.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(coroutine_work(), coroutine_work())

    thread = threading.Thread(target=thread_work)
    started = time.monotonic()
    thread.start()
    asyncio.run(main())
    thread.join()
    assert len(stamps) == 30
    assert max(stamps) - started == pytest.approx(29 / 40, abs=0.12)


def test_async_acquire_honours_the_gate() -> None:
    pacer = Pacer(rate=1000)
    pacer.block_for(0.3)

    async def main() -> float:
        started = time.monotonic()
        await pacer.acquire_async()
        return time.monotonic() - started

    assert asyncio.run(main()) >= 0.29


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
    """A stand-in for ptb's request callback: records call times, can fail a few times."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.calls: list[float] = []
        self.failures = list(failures or [])

    async def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(time.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        return {"ok": True}


def shared_limiter(pacer: Pacer, retry_budget: float = 60.0, **chats: Any) -> SharedRateLimiter:
    gateway = TelegramGateway(pacer, chats=ChatBudgets(**chats))
    return SharedRateLimiter(gateway, retry_budget=retry_budget, backoff_base=0.01)


def run_requests(
    limiter: SharedRateLimiter, endpoint: str, chat_ids: list[Any], recorder: Recorder
) -> list[Any]:
    async def main() -> list[Any]:
        return list(
            await asyncio.gather(
                *(
                    limiter.process_request(recorder, (), {}, endpoint, {"chat_id": chat_id}, None)
                    for chat_id in chat_ids
                )
            )
        )

    return asyncio.run(main())


def test_rate_limiter_paces_each_private_chat() -> None:
    limiter = shared_limiter(Pacer(rate=1000), private_rate=10, private_burst=1)
    recorder = Recorder()
    started = time.monotonic()
    run_requests(limiter, "sendMessage", [5, 5, 5, 6], recorder)
    # Chat 5 gets 3 messages at 10/s; chat 6 is not held up by chat 5.
    assert max(recorder.calls) - started == pytest.approx(0.2, abs=0.08)
    assert sorted(recorder.calls)[1] - started < 0.05


def test_rate_limiter_paces_groups_slower() -> None:
    limiter = shared_limiter(Pacer(rate=1000), group_rate=5, group_burst=1, private_rate=1000)
    recorder = Recorder()
    started = time.monotonic()
    run_requests(limiter, "sendMessage", [-100, -100, 7, 7], recorder)
    assert max(recorder.calls) - started == pytest.approx(0.2, abs=0.08)


def test_rate_limiter_retries_a_chats_retry_after_without_gating_everyone() -> None:
    pacer = Pacer(rate=1000)
    limiter = shared_limiter(pacer)
    recorder = Recorder([RetryAfter(timedelta(seconds=0.3))])
    started = time.monotonic()
    assert run_requests(limiter, "sendMessage", [1], recorder) == [{"ok": True}]
    assert len(recorder.calls) == 2
    assert recorder.calls[1] - started >= 0.3
    # One chat's flood is that chat's: the broadcaster's workers (same pacer) go on.
    assert pacer.gate_remaining() == 0.0


def test_rate_limiter_gates_everyone_when_several_chats_are_refused() -> None:
    pacer = Pacer(rate=1000)
    limiter = shared_limiter(pacer)
    floods: list[Exception] = [
        RetryAfter(timedelta(seconds=0.5)),
        RetryAfter(timedelta(seconds=0.5)),
    ]
    recorder = Recorder(floods)

    async def main() -> float:
        first = asyncio.gather(
            limiter.process_request(recorder, (), {}, "sendMessage", {"chat_id": 1}, None),
            limiter.process_request(recorder, (), {}, "sendMessage", {"chat_id": 2}, None),
        )
        await asyncio.sleep(0.1)
        gate = pacer.gate_remaining()
        await first
        return gate

    gate = asyncio.run(main())
    assert gate > 0.3  # the second chat's 429 within a second closed the whole budget
    assert len(recorder.calls) == 4


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
    limiter = shared_limiter(Pacer(rate=1000), retry_budget=0.3)
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
    pacer = Pacer(rate=1)
    pacer.block_for(30)
    limiter = shared_limiter(pacer)
    recorder = Recorder()
    started = time.monotonic()

    async def main() -> None:
        await limiter.process_request(recorder, (), {}, "getUpdates", {}, None)
        await limiter.process_request(
            recorder, (), {}, "answerCallbackQuery", {"callback_query_id": "1"}, None
        )

    asyncio.run(main())
    assert len(recorder.calls) == 2
    assert time.monotonic() - started < 0.5


def test_rate_limiter_waits_for_a_gate_closed_by_the_broadcaster() -> None:
    pacer = Pacer(rate=1000)
    limiter = shared_limiter(pacer)
    pacer.block_for(0.3)
    recorder = Recorder()
    started = time.monotonic()
    run_requests(limiter, "editMessageText", [1], recorder)
    assert recorder.calls[0] - started >= 0.29


def test_ext_bot_with_the_shared_rate_limiter_against_the_standin(
    standin_factory: Callable[..., StandIn],
) -> None:
    """Real ExtBot, real HTTP: per-chat pacing, the shared gate and RetryAfter retries."""
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

            pacer.block_for(0.5)  # as if a broadcast worker had just got a 429
            started = time.monotonic()
            await bot.get_me()
            timings["getMe under the gate"] = time.monotonic() - started
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
    assert timings["getMe under the gate"] < 0.3
    assert timings["reply under the gate"] >= 0.45
    assert tg.count("sendMessage", 429) >= 1
    assert timings["two replies through a 429"] >= 1.0
    texts = [message.get("text") for message in tg.inbox(user)]
    assert texts.count("one") == 1 and texts.count("two") == 1


def test_async_callers_that_wake_late_do_not_go_out_as_a_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The event loop was stuck for 2 s: the slots booked before it all fell due meanwhile.
    Sent together they would draw 429s; the late callers take fresh slots instead."""
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    released: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep_on_the_fake_clock(seconds: float) -> None:
        target = clock.now + seconds
        await real_sleep(0)
        clock.now = max(clock.now, target)

    async def caller() -> None:
        await pacer.acquire_async()
        released.append(clock.now)

    async def main() -> None:
        callers = [asyncio.create_task(caller()) for _ in range(6)]
        await real_sleep(0)  # every caller has booked its slot: now, +0.1 s … +0.5 s
        clock.now += 2.0  # the loop was busy elsewhere
        await asyncio.gather(*callers)

    monkeypatch.setattr(asyncio, "sleep", sleep_on_the_fake_clock)
    asyncio.run(main())
    assert released[0] == 1000.0  # its slot was due at once
    after_the_stall = [round(t - 1002.0, 3) for t in released[1:]]
    assert after_the_stall == [0.0, 0.1, 0.2, 0.3, 0.4]  # booked again, at the rate


def test_waiting_in_the_queue_is_not_cut_short_by_the_retry_budget() -> None:
    """A /start rush queues replies at ~30/s for minutes: that is pacing, not a failure,
    and no reply may be given up for it (the budget bounds retries and outages only)."""
    limiter = shared_limiter(Pacer(rate=20), retry_budget=0.2)
    recorder = Recorder()
    results = run_requests(limiter, "sendMessage", list(range(1, 13)), recorder)
    assert results == [{"ok": True}] * 12
    assert max(recorder.calls) - min(recorder.calls) >= 0.5  # the queue took longer than 0.2 s
