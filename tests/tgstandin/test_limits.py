"""Flood limits: global token bucket, per-chat bucket, group window, paid broadcasts."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import telegram.error

from pushbot.broadcast.pacing import retry_after_seconds
from tests.tgstandin.support import make_bot, run
from tgstandin import StandIn, StandInConfig
from tgstandin.methods import BotApi
from tgstandin.world import World


def blast(standin: StandIn, chat_ids: list[int], **extra: str) -> list[httpx.Response]:
    """Send as fast as one connection allows (a few hundred per second: far over 30/s)."""
    url = f"{standin.base_url}{standin.token}/sendMessage"
    with httpx.Client(trust_env=False) as client:
        return [
            client.post(url, data={"chat_id": str(chat), "text": f"m{i}", **extra})
            for i, chat in enumerate(chat_ids)
        ]


def test_global_limit_gives_429_with_retry_after(standin: StandIn) -> None:
    users = standin.add_users(40)
    started = time.monotonic()
    responses = blast(standin, users)
    refilled = 30 * (time.monotonic() - started)
    ok = [r for r in responses if r.status_code == 200]
    throttled = [r for r in responses if r.status_code == 429]
    assert 10 <= len(ok) <= 10 + refilled + 1  # the burst of 10 plus what refilled meanwhile
    assert len(ok) + len(throttled) == 40
    assert throttled[0].json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    # A throttled request has no effect.
    delivered = [u for u in users if standin.inbox(u)]
    assert len(delivered) == len(ok)
    assert standin.count("sendMessage", 429) == len(throttled)
    assert standin.stats()["sendMessage"] == {"200": len(ok), "429": len(throttled)}


def test_per_chat_limit(standin: StandIn) -> None:
    user = standin.add_user()
    statuses = [r.status_code for r in blast(standin, [user] * 5)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    assert standin.deliveries(user) == 3


def test_retry_after_is_time_until_allowed_plus_penalty(standin: StandIn) -> None:
    standin.set_limits(per_chat_rate=0.2, per_chat_burst=1, retry_after_penalty=2)
    user = standin.add_user()
    responses = blast(standin, [user] * 2)
    assert responses[1].json()["parameters"]["retry_after"] == 5 + 2


def test_paid_broadcast_lifts_the_global_limit(standin: StandIn) -> None:
    users = standin.add_users(60)
    responses = blast(standin, users, allow_paid_broadcast="true")
    assert {r.status_code for r in responses} == {200}
    assert standin.calls("sendMessage")[0].params["allow_paid_broadcast"] is True


def test_group_limit_is_20_per_minute(standin: StandIn) -> None:
    standin.set_limits(
        per_chat_rate=1000.0, per_chat_burst=1000, global_rate=1000.0, global_burst=1000
    )
    group = standin.add_group("Team")
    responses = blast(standin, [group] * 22)
    assert [r.status_code for r in responses].count(200) == 20
    assert 58 <= responses[-1].json()["parameters"]["retry_after"] <= 60


def test_limits_can_be_switched_off(standin: StandIn) -> None:
    standin.set_limits(enabled=False)
    user = standin.add_user()
    assert {r.status_code for r in blast(standin, [user] * 20)} == {200}


def test_deletes_and_edits_share_the_budget(standin: StandIn) -> None:
    # A bucket that refills once a minute: the delete cannot find a fresh token however
    # long the busy machine takes to send it (at 30/s it could, 33 ms later).
    standin.set_limits(global_rate=1 / 60, global_burst=3, per_chat_burst=100, per_chat_rate=100.0)
    user = standin.add_user()
    ids = [r.json()["result"]["message_id"] for r in blast(standin, [user] * 3)]
    url = f"{standin.base_url}{standin.token}/deleteMessage"
    response = httpx.post(url, data={"chat_id": user, "message_id": ids[0]}, trust_env=False)
    assert response.status_code == 429
    assert len(standin.inbox(user)) == 3
    assert standin.count("deleteMessage", 429) == 1


def test_a_well_paced_client_never_sees_429(standin: StandIn) -> None:
    """25 messages/s with scheduling jitter stays inside the bucket."""
    users = standin.add_users(30)

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            start = time.monotonic()
            for index, user in enumerate(users):
                await asyncio.sleep(max(0.0, start + index / 25 - time.monotonic()))
                await bot.send_message(user, "paced")

    run(scenario())
    assert standin.count("sendMessage", 429) == 0


def test_ptb_raises_retry_after(standin: StandIn) -> None:
    user = standin.add_user()

    async def scenario() -> None:
        async with make_bot(standin) as bot:
            for _ in range(3):
                await bot.send_message(user, "ok")
            with pytest.raises(telegram.error.RetryAfter) as caught:
                await bot.send_message(user, "too fast")
            assert retry_after_seconds(caught.value) == 1.0

    run(scenario())


def test_calls_are_counted_when_they_reach_telegram_not_when_the_stand_in_gets_to_them() -> None:
    """After a pause of the stand-in's own process, every call whose simulated latency ran
    out meanwhile is handled at once. The limits count each as of the moment it reached
    "Telegram": three calls that reached it 0.25 s apart are no burst, however close
    together they are handled; counted as they are handled, they would be."""
    world = World(StandInConfig(global_rate=4, global_burst=1))
    api = BotApi(world)
    users = [world.add_user(None, None, None, None, "active") for _ in range(6)]
    reached = time.monotonic() + 0.1
    statuses = [
        api.execute("sendMessage", {"chat_id": user, "text": "hi"}, reached + 0.25 * n)[0]
        for n, user in enumerate(users[:3])
    ]
    assert statuses == [200, 200, 200]
    assert [call.at for call in world.log] == [reached, reached + 0.25, reached + 0.5]
    # Counted as they are handled (the same three, at once): the budget of 4/s takes one.
    world.limiter.reset(time.monotonic())
    statuses = [api.execute("sendMessage", {"chat_id": u, "text": "hi"})[0] for u in users[3:]]
    assert statuses == [200, 429, 429]
