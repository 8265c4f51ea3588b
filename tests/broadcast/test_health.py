"""TelegramHealth: outages hold everyone and charge nobody; a broken chat is still charged.

All on a clock the test controls: no sleeps, no tolerances.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from pushbot.broadcast.health import TelegramHealth
from tests.broadcast.helpers import FakeClock

WALL = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def health(clock: FakeClock, trip_after: int = 3) -> TelegramHealth:
    return TelegramHealth(
        trip_after=trip_after,
        backoff_base=1.0,
        backoff_cap=8.0,
        clock=clock,
        wall_clock=lambda: WALL,
    )


def test_everyone_is_admitted_while_telegram_answers() -> None:
    h = health(FakeClock())
    admission = h.admit()
    assert admission.wait == 0 and not admission.probe
    assert h.down_since() is None


def test_failures_in_a_row_trip_the_hold_and_only_one_probe_goes_out() -> None:
    clock = FakeClock()
    h = health(clock)
    h.answered(probe=False)
    for _ in range(3):
        h.failed(probe=False)
    assert h.down_since() == WALL
    assert h.admit().wait > 0  # nobody goes until the first probe is due
    clock.now += 1.0
    first = h.admit()
    assert first.wait == 0 and first.probe
    second = h.admit()
    assert second.wait > 0 and not second.probe  # one probe at a time


def test_an_answer_in_between_resets_the_count() -> None:
    h = health(FakeClock())
    h.failed(probe=False)
    h.failed(probe=False)
    h.answered(probe=False)
    h.failed(probe=False)
    h.failed(probe=False)
    assert h.down_since() is None


def test_failed_probes_back_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=1)
    h.failed(probe=False)
    waits = []
    for _ in range(6):
        while not h.admit().probe:
            clock.now += 0.05
        started = clock.now
        h.probe_unanswered()
        while h.admit().wait > 0 and clock.now - started < 100:
            clock.now += 0.05
        waits.append(clock.now - started)
    # 1, 2, 4, 8, 8, 8 s, each with up to 20 % jitter below (and this loop's 0.05 s steps).
    for wait, ceiling in zip(waits, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.8 * ceiling - 0.06 <= wait <= ceiling + 0.06


def test_a_successful_probe_ends_the_hold_for_everyone() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=1)
    h.failed(probe=False)
    clock.now += 2.0
    assert h.admit().probe
    h.answered(probe=True)
    assert h.down_since() is None
    assert h.admit().wait == 0


def test_during_an_outage_nobody_is_charged() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=100)
    h.answered(probe=False)
    clock.now += 60.0  # long enough that the last answer proves nothing
    assert not any(h.failed(probe=False) for _ in range(10))


def test_a_chat_failing_while_others_are_answered_is_charged() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=100)
    for _ in range(5):
        h.answered(probe=False)
        clock.now += 1.0
        assert h.failed(probe=False)


def test_a_probe_is_charged_only_when_getme_answered_before_it() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=1)
    h.failed(probe=False)
    clock.now += 5.0
    assert h.admit().probe
    assert h.failed(probe=True, verified=True)  # Telegram is up; this chat (or method) is not
    clock.now += 5.0
    assert h.admit().probe
    assert not h.failed(probe=True, verified=False)


def test_an_abandoned_probe_frees_the_turn() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=1)
    h.failed(probe=False)
    clock.now += 2.0
    assert h.admit().probe
    h.abandoned(probe=True)
    assert h.admit().probe


def test_waiting_threads_stop_when_told_and_wake_when_telegram_answers() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=1)
    h.failed(probe=False)
    stop = threading.Event()
    stop.set()
    assert h.wait_admitted(stop) is None
    results: list[bool | None] = []
    waiter = threading.Thread(target=lambda: results.append(h.wait_admitted(threading.Event())))
    waiter.start()
    h.answered(probe=False)
    waiter.join(timeout=10)
    assert results == [False]
