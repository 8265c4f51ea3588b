"""Concurrent update handling that keeps each chat in order (the real Application)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from telegram import Update
from telegram.ext import ContextTypes, TypeHandler

from pushbot.bot.ordering import ordering_key
from tests.fixtures.bot import BotHarness

CHATTY_MESSAGES = 50
OTHER_CHATS = 1000


class Recorder:
    """A test-only handler in front of the bot's own: notes when each update runs."""

    def __init__(self) -> None:
        self.handled: dict[int, list[str]] = defaultdict(list)
        self.running: dict[int, int] = defaultdict(int)
        self.overlaps = 0
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = ordering_key(update)
        if chat is None or update.message is None or update.message.text is None:
            return
        self.running[chat] += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.running[chat] > 1:
            self.overlaps += 1
        # A handler that awaits (as every real one does) is where races would show.
        await asyncio.sleep(random.uniform(0, 0.01))
        self.handled[chat].append(update.message.text)
        self.running[chat] -= 1
        self.in_flight -= 1

    def install(self) -> Callable[[Any], None]:
        return lambda app: app.add_handler(TypeHandler(Update, self), group=-1)


def test_one_chat_stays_in_order_while_a_thousand_others_run_concurrently(
    bot_factory: Callable[..., BotHarness],
) -> None:
    recorder = Recorder()
    bot = bot_factory(setup=recorder.install())
    bot.tg.set_limits(enabled=False)
    chatty = bot.tg.add_user(first_name="Chatty")
    others = bot.tg.add_users(OTHER_CHATS)
    numbered = iter(range(CHATTY_MESSAGES))
    for index, other in enumerate(others):
        bot.tg.send_text(other, f"hello {index}")
        if index % (OTHER_CHATS // CHATTY_MESSAGES) == 0:
            bot.tg.send_text(chatty, f"#{next(numbered)}")
    for rest in numbered:
        bot.tg.send_text(chatty, f"#{rest}")

    deadline = time.monotonic() + 60
    while sum(len(v) for v in recorder.handled.values()) < OTHER_CHATS + CHATTY_MESSAGES:
        assert time.monotonic() < deadline, "not every update was handled"
        time.sleep(0.05)

    assert recorder.handled[chatty] == [f"#{n}" for n in range(CHATTY_MESSAGES)]
    assert recorder.overlaps == 0, "two updates of one chat overlapped"
    assert recorder.peak > 10, f"chats were not handled concurrently (peak {recorder.peak})"
