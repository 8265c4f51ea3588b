"""A scene for engine tests: the stand-in (real HTTP on loopback), a database from the
`session_factory` fixture (SQLite and PostgreSQL), an admin with a message to broadcast, and
Broadcasters that are always shut down afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pushbot.broadcast.engine import Broadcaster, EngineOptions
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobReport
from pushbot.config import Settings
from tests.broadcast import helpers
from tgstandin import StandIn, StandInConfig

# Tests must not sit out production back-offs and timeouts.
FAST = EngineOptions(
    backoff_base=0.01,
    backoff_cap=0.05,
    request_timeout=2.0,
    flush_interval=0.2,
    close_deadline=2.0,
)
UNPACED = 100_000.0


@dataclass
class Scene:
    tg: StandIn
    factory: sessionmaker[Session]
    admin: int
    source_message_id: int
    broadcasters: list[Broadcaster] = field(default_factory=list)

    def settings(
        self, workers: int = 8, rate: float = UNPACED, paid: bool = False, token: str | None = None
    ) -> Settings:
        return Settings(
            bot_token=token or self.tg.token,
            telegram_base_url=self.tg.base_url,
            broadcast_workers=workers,
            broadcast_pool_size=workers,
            broadcast_rate=rate,
            paid_broadcast=paid,
        )

    def broadcaster(
        self,
        workers: int = 8,
        rate: float = UNPACED,
        options: EngineOptions = FAST,
        on_finished: Callable[[JobReport], None] | None = None,
        paid: bool = False,
        token: str | None = None,
        gateway: TelegramGateway | None = None,
    ) -> Broadcaster:
        broadcaster = Broadcaster(
            self.settings(workers, rate, paid, token),
            self.factory,
            gateway=gateway if gateway is not None else TelegramGateway(Pacer(rate)),
            on_finished=on_finished,
            options=options,
        )
        self.broadcasters.append(broadcaster)
        broadcaster.start()
        return broadcaster

    def users(self, count: int, blocked: int = 0, deactivated: int = 0) -> list[int]:
        """People known to the stand-in, all subscribed in the database."""
        ids = self.tg.add_users(count, blocked=blocked, deactivated=deactivated)
        helpers.subscribe(self.factory, ids)
        return ids

    def push(self) -> UUID:
        return helpers.create_push(self.factory, self.admin, self.source_message_id)

    def deliveries(self, chat_ids: Iterable[int]) -> dict[int, int]:
        return {chat_id: self.tg.deliveries(chat_id) for chat_id in chat_ids}

    def sent_so_far(self) -> int:
        return self.tg.count("copyMessage", 200)

    def wait_until_sent(self, count: int, timeout: float = 30.0) -> None:
        self.tg.wait_for(lambda: self.sent_so_far() >= count, timeout=timeout)


def budget_floods(caplog: pytest.LogCaptureFixture) -> int:
    """How many times the gateway closed a whole budget's gate for a flood (it logs each
    flood once, when the gate closes; a flood in one chat is logged differently)."""
    return sum(
        1
        for record in caplog.records
        if record.name == "pushbot.broadcast.gateway"
        and record.getMessage().startswith("flood control for the ")
    )


def post_as_admin(tg: StandIn, admin: int, text: str) -> int:
    """The admin writes to the bot; returns that message's id (the broadcast source)."""
    sent: dict[str, Any] = tg.send_text(admin, text)
    message = sent.get("message", sent)  # an Update or the Message itself
    return int(message["message_id"])


@pytest.fixture
def scene(
    standin_factory: Callable[..., StandIn], session_factory: sessionmaker[Session]
) -> Iterator[Scene]:
    tg = standin_factory(StandInConfig(limits_enabled=False))
    admin = tg.add_user(helpers.ADMIN_ID)
    source = post_as_admin(tg, admin, "Big news, everyone!")
    built = Scene(tg, session_factory, admin, source)
    yield built
    for broadcaster in built.broadcasters:
        broadcaster.shutdown()
