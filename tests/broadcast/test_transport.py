"""The engine's transport alone: its own loop and Bot, the request object from a factory, the
deadline of a call, and the outage probe."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from telegram.error import TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from pushbot.broadcast.transport import REQUEST_DEADLINE_FACTOR, Transport
from pushbot.config import Settings
from tgstandin import StandIn


def settings_for(tg: StandIn) -> Settings:
    return Settings(bot_token=tg.token, telegram_base_url=tg.base_url)


class NeverAnswers(BaseRequest):
    """A request object whose requests never get an answer (until they are cancelled)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


def test_the_request_object_comes_from_the_factory(standin: StandIn) -> None:
    made: list[BaseRequest] = []

    def factory() -> BaseRequest:
        request = HTTPXRequest(connection_pool_size=2)
        made.append(request)
        return request

    transport = Transport(settings_for(standin), request_timeout=2.0, request_factory=factory)
    transport.start()
    try:
        me = transport.call(transport.bot.get_me())
        assert me.is_bot
        assert len(made) == 1
        assert transport.telegram_answers()
    finally:
        transport.close()
    assert standin.count("getMe", 200) == 2


def test_a_request_without_an_answer_is_given_up_at_the_deadline(standin: StandIn) -> None:
    never = NeverAnswers()
    timeout = 0.1
    transport = Transport(
        settings_for(standin), request_timeout=timeout, request_factory=lambda: never
    )
    transport.start()
    try:
        with pytest.raises(TimedOut):
            transport.call(transport.bot.get_me())
        assert never.cancelled.wait(REQUEST_DEADLINE_FACTOR * timeout + 10)
        assert not transport.telegram_answers()  # no answer at all: Telegram is not up
    finally:
        transport.close()


def test_the_probe_says_whether_telegram_answers_at_all(standin: StandIn) -> None:
    transport = Transport(settings_for(standin), request_timeout=2.0)
    transport.start()
    try:
        standin.start_outage(3600, kind="502")
        assert not transport.telegram_answers()
        standin.end_outage()
        assert transport.telegram_answers()
    finally:
        transport.close()

    # A rejected token is an answer too: Telegram is up, whatever it thinks of the token.
    rejected = Settings(bot_token="123456:not-the-right-token", telegram_base_url=standin.base_url)
    transport = Transport(rejected, request_timeout=2.0)
    transport.start()
    try:
        assert transport.telegram_answers()
    finally:
        transport.close()


def test_a_transport_that_was_not_started_has_no_bot(standin: StandIn) -> None:
    transport = Transport(settings_for(standin), request_timeout=2.0)
    with pytest.raises(RuntimeError):
        _ = transport.bot
    transport.close()  # nothing to close: no error
