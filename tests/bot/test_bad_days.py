"""The real bot on Telegram's bad days: nobody loses a reply or a copy, nobody draws a 429."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pushbot.bot import render
from pushbot.bot.jobs import PROGRESS_EDIT_RETRY_BUDGET
from pushbot.broadcast.progress import JobState
from tests.broadcast.helpers import too_many_requests
from tests.fixtures.bot import ADMIN_ID, BotHarness
from tgstandin import Call

OUTAGE = 8.0


def replies_per_user(bot: BotHarness, users: list[int]) -> dict[int, int]:
    return {user: len(bot.tg.inbox(user)) for user in users}


def test_replies_survive_random_server_errors(bot: BotHarness) -> None:
    bot.tg.inject_faults(kind="502", rate=0.05, methods={"sendMessage"})
    users = bot.tg.add_users(120)
    bot.subscribe(users, timeout=60)
    bot.tg.inject_faults(rate=0.0)

    assert bot.tg.count("sendMessage", 502) > 0
    assert replies_per_user(bot, users) == dict.fromkeys(users, 1)  # none lost, none twice
    assert bot.audience().subscribed == len(users)


def test_a_push_at_telegrams_limits_draws_no_429_not_even_in_the_admins_chat(
    bot: BotHarness,
) -> None:
    """The admin's chat gets the edited question, the status, its own copy and progress
    edits within a second: the per-chat budget the Application and the broadcaster share
    keeps it under Telegram's ~1/s."""
    bot.subscribe([ADMIN_ID])  # the admin gets a copy too
    bot.seed_subscribers(100)
    bot.tg.set_latency(0.03, 0.12)  # Telegram's, seen from a server far away
    bot.tg.reset_calls()
    report = bot.push("Paced and polite", timeout=60)

    assert "Delivered: 101" in report["text"] and "Failed: 0" in report["text"]
    assert too_many_requests(bot.tg) == 0
    admin_calls = [c for c in bot.tg.calls() if c.chat_id == ADMIN_ID]
    assert len(admin_calls) >= 4 and all(c.status == 200 for c in admin_calls)


def test_paid_broadcasts_leave_replies_to_the_free_budget(
    bot_factory: Callable[..., BotHarness],
) -> None:
    """PAID_BROADCAST=true, BROADCAST_RATE=1000: a /start rush is still answered at ~30/s."""
    bot = bot_factory(paid_broadcast=True, broadcast_rate=1000.0)
    users = bot.tg.add_users(150)
    bot.subscribe(users, timeout=60)

    assert too_many_requests(bot.tg) == 0
    assert replies_per_user(bot, users) == dict.fromkeys(users, 1)


def test_an_outage_during_a_push_holds_it_and_the_bot_carries_on_after(
    bot_factory: Callable[..., BotHarness],
) -> None:
    bot = bot_factory(broadcast_rate=60.0)
    bot.tg.set_limits(enabled=False)
    bot.tg.set_latency(0.01, 0.03)
    users = bot.tg.add_users(300)
    bot.subscribe(users, timeout=60)
    confirm = bot.send_push("Through the storm")
    broadcaster = bot.runtime.broadcaster
    bot.tg.wait_for(lambda: bot.tg.count("copyMessage", 200) >= 60, timeout=30)
    active = broadcaster.active()
    assert active is not None
    bot.tg.start_outage(3.0, kind="502")
    bot.tg.wait_for(
        lambda: (
            (p := broadcaster.progress(active.uuid)) is not None and p.unreachable_since is not None
        ),
        timeout=30,
    )
    held = broadcaster.progress(active.uuid)
    assert held is not None and held.failed == 0
    assert "Telegram unreachable since" in render.render_progress(held)
    late = bot.tg.add_user()
    bot.tg.send_text(late, "/start")  # arrives during the outage

    report = bot.next_reply(
        confirm["message_id"], lambda m: "Broadcast finished" in m.get("text", ""), timeout=90
    )
    bot.tg.wait_for_message(late, timeout=60)

    final = broadcaster.progress(active.uuid)
    assert final is not None and final.state is JobState.DONE
    assert final.sent == 300 and final.failed == 0
    assert "Delivered: 300" in report["text"] and "Failed: 0" in report["text"]
    assert {u: n for u, n in bot.copies_per_chat().items() if u in users} == dict.fromkeys(users, 1)
    assert bot.audience().purged == 0


def test_the_status_message_keeps_counting_after_an_outage_longer_than_an_edit_waits(
    bot_factory: Callable[..., BotHarness], caplog: pytest.LogCaptureFixture
) -> None:
    """A progress edit gives up after PROGRESS_EDIT_RETRY_BUDGET; its watcher carries on, so
    the admin sees the figures again once Telegram is back, however long it was away."""
    assert PROGRESS_EDIT_RETRY_BUDGET < OUTAGE
    bot = bot_factory(broadcast_rate=60.0)
    bot.tg.set_limits(enabled=False)
    users = bot.tg.add_users(600)  # 10 s at 60/s, around the outage
    bot.subscribe(users, timeout=60)
    status_id = bot.send_push("Still counting")["message_id"]

    def status_edits() -> list[Call]:
        return [
            c
            for c in bot.tg.calls("editMessageText")
            if c.params.get("message_id") == status_id and c.status == 200
        ]

    bot.tg.wait_for(lambda: bot.tg.count("copyMessage", 200) >= 60, timeout=30)
    bot.tg.start_outage(OUTAGE, kind="502")
    back_at = time.monotonic() + OUTAGE
    report = bot.next_reply(
        status_id, lambda m: "Broadcast finished" in m.get("text", ""), timeout=90
    )

    # The edit due during the outage was held, then given up (not waited out for 60 s).
    assert any("could not update status message" in r.getMessage() for r in caplog.records)
    progress_after = [
        c
        for c in status_edits()
        if c.at > back_at and "Broadcast finished" not in c.params.get("text", "")
    ]
    assert progress_after, "no progress shown after the outage"
    assert "Delivered: 600" in report["text"]
