"""Injected faults and latency."""

from __future__ import annotations

import time

import pytest
import telegram.error

from tests.tgstandin.support import make_bot, raw, run
from tgstandin import StandIn


def test_next_calls_fail_with_500_then_recover(standin: StandIn) -> None:
    user = standin.add_user()
    standin.inject_faults(kind="500", next_calls=2, methods={"sendMessage"})
    assert raw(standin, "getMe").status_code == 200  # other methods are untouched
    first, second, third = (raw(standin, "sendMessage", chat_id=user, text="x") for _ in range(3))
    assert first.json() == {"ok": False, "error_code": 500, "description": "Internal Server Error"}
    assert second.status_code == 500
    assert third.status_code == 200
    assert len(standin.inbox(user)) == 1  # a failed request has no effect
    assert standin.count("sendMessage", 500) == 2


def test_502_reaches_ptb_as_network_error(standin: StandIn) -> None:
    user = standin.add_user()
    standin.inject_faults(kind="502", next_calls=1, methods={"sendMessage"})

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            with pytest.raises(telegram.error.NetworkError, match="Bad Gateway"):
                await bot.send_message(user, "x")

    run(scenario())


def test_timeout_is_not_applied_and_the_connection_is_dropped(standin: StandIn) -> None:
    user = standin.add_user()
    standin.inject_faults(kind="timeout", next_calls=1, hold=0.6, methods={"sendMessage"})

    async def scenario() -> float:
        async with make_bot(standin, read_timeout=0.3) as bot:
            started = time.monotonic()
            with pytest.raises(telegram.error.TimedOut):
                await bot.send_message(user, "lost")
            waited = time.monotonic() - started
            await bot.send_message(user, "after")
            return waited

    waited = run(scenario())
    assert 0.25 <= waited < 0.6
    assert [m["text"] for m in standin.inbox(user)] == ["after"]
    [timed_out, ok] = standin.calls("sendMessage")
    assert (timed_out.status, ok.status) == (0, 200)


def test_lost_response_is_applied(standin: StandIn) -> None:
    user = standin.add_user()
    standin.inject_faults(kind="lost_response", next_calls=1, hold=0.5, methods={"sendMessage"})

    async def scenario() -> None:
        async with make_bot(standin, read_timeout=0.2) as bot:
            with pytest.raises(telegram.error.TimedOut):
                await bot.send_message(user, "sent twice?")

    run(scenario())
    assert [m["text"] for m in standin.inbox(user)] == ["sent twice?"]


def test_fault_rate_and_clearing(standin: StandIn) -> None:
    standin.inject_faults(kind="500", rate=1.0)
    assert raw(standin, "getMe").status_code == 500
    standin.inject_faults()
    assert raw(standin, "getMe").status_code == 200
    with pytest.raises(ValueError, match="fault kind"):
        standin.inject_faults(kind="404", rate=0.5)


def test_latency_delays_every_response(standin: StandIn) -> None:
    standin.set_latency(0.1, 0.15)
    started = time.monotonic()
    for _ in range(3):
        assert raw(standin, "getMe").status_code == 200
    assert 0.3 <= time.monotonic() - started < 0.9
    standin.set_latency(0.0, 0.0)
    started = time.monotonic()
    raw(standin, "getMe")
    assert time.monotonic() - started < 0.1


def test_an_outage_fails_every_method_until_it_ends(standin: StandIn) -> None:
    user = standin.add_user()
    standin.start_outage(30, kind="502")
    assert raw(standin, "getMe").status_code == 502
    assert raw(standin, "sendMessage", chat_id=user, text="x").status_code == 502
    assert raw(standin, "getUpdates", timeout=0).status_code == 502
    standin.end_outage()
    assert raw(standin, "sendMessage", chat_id=user, text="x").status_code == 200
    assert len(standin.inbox(user)) == 1


def test_an_outage_ends_by_itself_after_its_seconds(standin: StandIn) -> None:
    standin.start_outage(0.3, kind="500")
    assert raw(standin, "getMe").status_code == 500
    standin.wait_for(lambda: raw(standin, "getMe").status_code == 200, timeout=5)


def test_an_outage_may_spare_some_methods(standin: StandIn) -> None:
    user = standin.add_user()
    standin.start_outage(30, kind="500", methods={"copyMessage"})
    assert raw(standin, "sendMessage", chat_id=user, text="x").status_code == 200
    assert (
        raw(standin, "copyMessage", chat_id=user, from_chat_id=user, message_id=1).status_code
        == 500
    )


def test_faults_can_target_some_chats(standin: StandIn) -> None:
    broken, fine = standin.add_user(), standin.add_user()
    standin.inject_faults(kind="500", rate=1.0, methods={"sendMessage"}, chat_ids={broken})
    assert raw(standin, "sendMessage", chat_id=broken, text="x").status_code == 500
    assert raw(standin, "sendMessage", chat_id=fine, text="x").status_code == 200
    assert raw(standin, "sendMessage", chat_id=str(broken), text="x").status_code == 500
