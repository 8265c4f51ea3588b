"""Inbound at scale, end to end (real Application, real HTTP, stand-in Telegram, both
backends): group commits keep each chat's order and every subscription, the welcome tells
new from returning, a storm is recorded long before its replies drain while an admin is
answered at once, the outbox is bounded, the webhook handles a re-sent update once, and a
database gone for ten seconds loses nothing."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pushbot.bot.services import SERVICES_KEY
from pushbot.bot.users import ALREADY_SUBSCRIBED, UNSUBSCRIBED, WELCOME
from pushbot.db import queries
from tests.broadcast.helpers import too_many_requests
from tests.fixtures.bot import ADMIN_ID, BotHarness
from tgstandin.server import StandIn

SECRET = "s3cret-Token_for-tests"


def texts(tg: StandIn, user: int) -> list[str]:
    return [m["text"] for m in tg.inbox(user)]


def history(bot: BotHarness) -> dict[int, list[str]]:
    c = queries.CHAT_EVENTS.c
    rows = bot.query(lambda s: s.execute(select(c.chat_id, c.kind).order_by(c.id)).all())
    found: dict[int, list[str]] = {}
    for chat_id, kind in rows:
        found.setdefault(chat_id, []).append(kind)
    return found


def owed_in_database(bot: BotHarness) -> int:
    return len(bot.query(queries.owed_replies))


def reply_times(tg: StandIn, users: set[int]) -> list[float]:
    return sorted(c.at for c in tg.calls("sendMessage") if c.status == 200 and c.chat_id in users)


def test_group_commits_keep_each_chats_order_and_every_subscription(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    users = bot.tg.add_users(200)
    for command in ("/start", "/stop", "/start"):
        bot.tg.send_texts(users, command)  # every chat gets all three, in this order
    bot.tg.wait_for(lambda: all(len(bot.tg.inbox(u)) == 3 for u in users), timeout=60)

    assert {tuple(texts(bot.tg, u)) for u in users} == {(WELCOME, UNSUBSCRIBED, WELCOME)}
    assert bot.audience().subscribed == 200
    assert {tuple(kinds) for kinds in history(bot).values()} == {("joined", "left", "returned")}
    writer = bot.runtime.store.writer
    assert writer.commits < writer.written / 2, "the writes were not grouped"
    bot.tg.wait_for(lambda: owed_in_database(bot) == 0)


def test_the_welcome_tells_new_from_returning_under_concurrency(
    fast_bot: BotHarness,
) -> None:
    bot = fast_bot
    subscribed, stopped, new = (bot.tg.add_users(100) for _ in range(3))
    with bot.runtime.session_factory.begin() as session:
        for user in subscribed + stopped:
            queries.subscribe_chat(session, queries.ChatInfo(user, "private"))
        for user in stopped:
            queries.unsubscribe_chat(session, user)
    before = history(bot)

    everyone = subscribed + stopped + new
    bot.tg.send_texts(everyone, "/start")
    bot.tg.wait_for(lambda: all(bot.tg.inbox(u) for u in everyone), timeout=60)

    assert {texts(bot.tg, u)[0] for u in subscribed} == {ALREADY_SUBSCRIBED}
    assert {texts(bot.tg, u)[0] for u in stopped + new} == {WELCOME}
    after = history(bot)
    assert all(after[u] == before[u] for u in subscribed)
    assert all(after[u] == ["joined", "left", "returned"] for u in stopped)
    assert all(after[u] == ["joined"] for u in new)
    assert bot.audience().subscribed == 300


def test_a_storm_is_recorded_long_before_its_replies_drain_and_an_admin_goes_first(
    bot: BotHarness,
) -> None:
    """300 /start at once with Telegram's 30/s in force: the replies take ten seconds, the
    subscriptions do not wait for them, and an admin's /help overtakes the queue."""
    users = bot.tg.add_users(300)
    recorded_at: list[float] = []

    def watch_database() -> None:
        while bot.audience().subscribed < 300:
            time.sleep(0.05)
        recorded_at.append(time.monotonic())

    watcher = threading.Thread(target=watch_database, daemon=True)
    watcher.start()
    bot.tg.send_texts(users, "/start")
    asked_at = time.monotonic()
    bot.say("/help", ADMIN_ID)
    bot.tg.wait_for(lambda: all(bot.tg.inbox(u) for u in users), timeout=90)
    watcher.join(10)

    replies = reply_times(bot.tg, set(users))
    assert len(replies) == 300 and all(len(bot.tg.inbox(u)) == 1 for u in users)
    (help_reply,) = reply_times(bot.tg, {ADMIN_ID})
    assert recorded_at, "not every subscription was recorded"
    sent_when_all_recorded = sum(1 for at in replies if at <= recorded_at[0])
    assert sent_when_all_recorded < 150, f"{sent_when_all_recorded} replies went out first"
    assert help_reply < replies[len(replies) // 2], "the admin waited behind the queue"
    assert help_reply > asked_at
    assert too_many_requests(bot.tg) == 0
    bot.tg.wait_for(lambda: owed_in_database(bot) == 0)


def test_a_full_outbox_holds_users_updates_back_and_loses_none(
    bot_factory: Callable[..., BotHarness],
) -> None:
    bot = bot_factory(reply_queue_limit=100, update_concurrency=16)
    outbox = bot.thread.app.bot_data[SERVICES_KEY].outbox
    users = bot.tg.add_users(250)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, outbox.owed)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    bot.tg.send_texts(users, "/start")
    bot.tg.wait_for(lambda: all(bot.tg.inbox(u) for u in users), timeout=90)
    done.set()
    sampler.join(5)

    assert 100 <= peak <= 100 + 16, f"{peak} replies were owed at once"
    assert all(texts(bot.tg, u) == [WELCOME] for u in users)
    assert bot.audience().subscribed == 250
    assert too_many_requests(bot.tg) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_update(update_id: int, user_id: int) -> dict[str, object]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": user_id, "type": "private", "first_name": "Rita"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Rita"},
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


def test_the_webhook_handles_an_update_telegram_sends_twice_once(
    standin: StandIn, bot_factory: Callable[..., BotHarness]
) -> None:
    port = _free_port()
    standin.set_limits(enabled=False)
    bot = bot_factory(
        broadcast_rate=1000.0,
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_path="hook",
        webhook_secret=SECRET,
    )
    user = bot.tg.add_user(first_name="Rita")
    url = f"http://127.0.0.1:{port}/hook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    update = _start_update(777_001, user)

    def post() -> int:
        return httpx.post(url, json=update, headers=headers, timeout=30).status_code

    # Telegram re-sends an update whose answer is late, while the first is still handled.
    posts = [threading.Thread(target=post) for _ in range(3)]
    for thread in posts:
        thread.start()
    for thread in posts:
        thread.join(30)
    assert post() == 200  # and once more after it was handled
    bot.tg.wait_for(lambda: bot.tg.inbox(user) != [])
    bot.say("/help", user)  # a later update: by then a second reply would have come
    bot.tg.wait_for(lambda: len(bot.tg.inbox(user)) == 2)

    assert texts(bot.tg, user)[0] == WELCOME
    assert history(bot)[user] == ["joined"]


@contextmanager
def database_gone(db_url: str) -> Iterator[Callable[[], None]]:
    """Yields `cut()`: from then on, until the block ends, the bot's database is unusable —
    PostgreSQL refuses connections (and drops the open ones); SQLite is locked."""
    url = make_url(db_url)
    postgres = url.get_backend_name() == "postgresql"
    # PostgreSQL cannot refuse connections to the database a session is in: steer from the
    # server's maintenance database.
    steering = url.set(database="postgres") if postgres else url
    engine = create_engine(steering, poolclass=NullPool)
    holder = engine.connect()
    cut_done = threading.Event()

    def cut() -> None:
        if postgres:
            holder.execute(text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false'))
            holder.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": url.database},
            )
            holder.commit()
        else:
            holder.exec_driver_sql("BEGIN EXCLUSIVE")
        cut_done.set()

    try:
        yield cut
    finally:
        if cut_done.is_set():
            if postgres:
                holder.execute(text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true'))
                holder.commit()
            else:
                holder.exec_driver_sql("COMMIT")
        holder.close()
        engine.dispose()


@pytest.mark.slow
def test_the_database_gone_for_ten_seconds_in_a_rush_loses_nothing(
    fast_bot: BotHarness, db_url: str
) -> None:
    bot = fast_bot
    early, late = bot.tg.add_users(100), bot.tg.add_users(100)
    bot.tg.send_texts(early, "/start")
    with database_gone(db_url) as cut:
        cut()
        cut_at = time.monotonic()
        bot.tg.send_texts(late, "/start")
        bot.tg.wait_for(lambda: time.monotonic() - cut_at >= 10.0, timeout=15)
        answered_meanwhile = sum(1 for u in late if bot.tg.inbox(u))
    bot.tg.wait_for(lambda: all(bot.tg.inbox(u) for u in early + late), timeout=60)

    assert answered_meanwhile == 0, "a reply went out before its subscription was recorded"
    assert Counter(len(bot.tg.inbox(u)) for u in early + late) == {1: 200}
    assert {texts(bot.tg, u)[0] for u in early + late} == {WELCOME}
    assert bot.audience().subscribed == 200
    assert {tuple(kinds) for kinds in history(bot).values()} == {("joined",)}
    bot.tg.wait_for(lambda: owed_in_database(bot) == 0)
