"""The engine on Telegram's bad days: outages, lost answers, one chat's flood, the paid tier."""

from __future__ import annotations

import logging

import pytest

from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.health import TelegramHealth
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobState
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene, budget_floods
from tests.tgstandin.support import raw


def quick_probes(rate: float) -> TelegramGateway:
    """Production probing backs off up to 30 s; a test's outage is over in seconds."""
    return TelegramGateway(Pacer(rate), health=TelegramHealth(backoff_base=0.2, backoff_cap=0.5))


def test_an_outage_mid_broadcast_holds_it_then_reaches_everyone_once(scene: Scene) -> None:
    users = scene.users(300)
    broadcaster = scene.broadcaster(workers=8, rate=150.0, gateway=quick_probes(150.0))
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(60)
    scene.tg.start_outage(2.0, kind="502")
    scene.tg.wait_for(lambda: handle.progress().unreachable_since is not None, timeout=30)
    held = handle.progress()
    report = handle.wait(timeout=60)

    assert held.failed == 0 and held.left > 0
    assert scene.tg.count("copyMessage", 502) > 0
    assert report.state is JobState.DONE
    assert report.sent == 300 and report.failed == 0 and report.purged == 0
    assert helpers.purged(scene.factory) == {}
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
    assert handle.progress().unreachable_since is None


def test_an_outage_of_dropped_connections_loses_nobody(scene: Scene) -> None:
    users = scene.users(120)
    broadcaster = scene.broadcaster(workers=8, rate=100.0, gateway=quick_probes(100.0))
    handle = broadcaster.launch_push(scene.push())
    scene.wait_until_sent(20)
    scene.tg.start_outage(1.5, kind="timeout", hold=0.2)
    report = handle.wait(timeout=60)

    assert report.sent == 120 and report.failed == 0
    assert scene.deliveries(users) == dict.fromkeys(users, 1)


def test_a_lost_answer_is_sent_again_and_that_is_the_only_duplicate(scene: Scene) -> None:
    """Telegram carried the copy out but the answer never came: the documented duplicate."""
    users = scene.users(40)
    broadcaster = scene.broadcaster(workers=4)
    scene.tg.inject_faults(kind="lost_response", next_calls=2, methods={"copyMessage"}, hold=0.1)
    report = broadcaster.launch_push(scene.push()).wait(timeout=60)

    deliveries = scene.deliveries(users)
    assert report.sent == 40 and report.failed == 0
    assert sorted(deliveries.values()).count(2) == 2
    assert set(deliveries.values()) == {1, 2}


def test_random_server_errors_lose_nobody(scene: Scene) -> None:
    users = scene.users(300)
    broadcaster = scene.broadcaster(workers=8, gateway=quick_probes(1e6))
    scene.tg.inject_faults(kind="502", rate=0.05, methods={"copyMessage"})
    report = broadcaster.launch_push(scene.push()).wait(timeout=60)
    scene.tg.inject_faults(rate=0.0)

    assert scene.tg.count("copyMessage", 502) > 0
    assert report.sent == 300 and report.failed == 0
    assert scene.deliveries(users) == dict.fromkeys(users, 1)


def test_a_flood_in_one_chat_delays_that_chat_not_the_broadcast(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    users = scene.users(60)
    helpers.subscribe(scene.factory, [scene.admin])
    scene.tg.set_limits(
        enabled=True, global_rate=10_000, global_burst=10_000, per_chat_rate=1, per_chat_burst=1
    )
    # The admin's chat has just had a message from the bot (the status message, say) that
    # went around our budgets: its one-per-second slot is spent.
    assert raw(scene.tg, "sendMessage", chat_id=scene.admin, text="status").status_code == 200
    broadcaster = scene.broadcaster(workers=8)
    with caplog.at_level(logging.INFO, logger="pushbot.broadcast.gateway"):
        report = broadcaster.launch_push(scene.push()).wait(timeout=60)

    assert report.sent == 61 and report.failed == 0
    assert scene.tg.count("copyMessage", 429) <= 1
    assert budget_floods(caplog) == 0  # nobody else waited
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
    assert scene.deliveries([scene.admin]) == {scene.admin: 2}  # "status" and one copy


def test_paid_copies_spend_their_own_budget_and_retractions_the_free_one(scene: Scene) -> None:
    users = scene.users(120)
    scene.tg.set_limits(enabled=True)  # Telegram's: 30/s free, 1000/s paid, 1/s per chat
    settings = scene.settings(workers=30, rate=1000.0, paid=True)
    gateway = TelegramGateway.for_settings(settings)
    broadcaster = scene.broadcaster(workers=30, rate=1000.0, paid=True, gateway=gateway)
    push_uuid = scene.push()
    sent = broadcaster.launch_push(push_uuid).wait(timeout=60)
    paid_calls = [c for c in scene.tg.calls("copyMessage") if c.params.get("allow_paid_broadcast")]

    assert sent.sent == 120 and len(paid_calls) == 120
    assert sent.pace > 40  # beyond what the free budget could give
    removed = broadcaster.launch_retract(push_uuid).wait(timeout=60)
    assert removed.sent == 120
    assert removed.pace < 31  # no paid delete: the free budget, whatever BROADCAST_RATE says
    assert helpers.too_many_requests(scene.tg) == 0
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
