"""The long-lived pieces every entry point shares: database, gateway, broadcaster, bot.

`pushbot run`, the CLI's push/undo/history, the demo, the tests and the benchmarks all
assemble the bot the same way through here, so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pushbot.bot.app import AnyApp, ReportRelay, build_application
from pushbot.bot.store import Store
from pushbot.broadcast.engine import Broadcaster
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.service import BroadcastService, utc_now
from pushbot.config import Settings
from pushbot.db.session import create_db_engine, create_session_factory, upgrade_database
from pushbot.stats import StatsService

# Connections beyond the broadcaster's: handlers' to_thread calls and the ledger writer.
EXTRA_DB_CONNECTIONS = 8


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    gateway: TelegramGateway
    # The engine, for observing it (tests, benchmarks); everything that changes a push goes
    # through `broadcasts`.
    broadcaster: Broadcaster
    broadcasts: BroadcastService
    store: Store
    stats: StatsService
    relay: ReportRelay = field(default_factory=ReportRelay)

    @classmethod
    def create(
        cls,
        settings: Settings,
        migrate: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> Runtime:
        """`clock`: the time scheduled pushes are due by (tests pass one they move)."""
        if migrate:
            upgrade_database(settings.database_url)
        engine = create_db_engine(
            settings.database_url,
            pool_size=settings.effective_broadcast_pool_size + EXTRA_DB_CONNECTIONS,
        )
        factory = create_session_factory(engine)
        # One gateway per token: the broadcaster and the Application share its budgets.
        gateway = TelegramGateway.for_settings(settings)
        relay = ReportRelay()
        broadcaster = Broadcaster(settings, factory, gateway=gateway, on_finished=relay)
        broadcasts = BroadcastService(
            factory, broadcaster, admin_ids=settings.admin_ids, clock=clock or utc_now
        )
        return cls(
            settings,
            engine,
            factory,
            gateway,
            broadcaster,
            broadcasts,
            Store(factory),
            StatsService(factory),
            relay,
        )

    def build_bot(self) -> AnyApp:
        return build_application(
            self.settings, self.store, self.broadcasts, self.gateway, self.relay, self.stats
        )

    def close(self) -> None:
        self.engine.dispose()


class BotThread:
    """Runs the real bot (post_init, polling or webhook, post_shutdown) on a thread of its own.

    Used by the demo, tests and benchmarks: the exact code path of `pushbot run`, minus the
    signal handlers, which only the main thread may install.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = runtime.build_bot()
        self._thread = threading.Thread(target=self._run, name="pushbot-bot", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        from pushbot.bot.app import run

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        original_post_init = self.app.post_init

        async def post_init_and_signal(app: Any) -> None:
            if original_post_init is not None:
                await original_post_init(app)
            self._ready.set()

        self.app.post_init = post_init_and_signal
        try:
            run(self.app, self.runtime.settings, stop_signals=None)
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            raise

    def start(self, timeout: float = 20.0) -> BotThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the bot did not start in time")
        # post_init has run; the updater (polling or webhook) and the app start right after.
        deadline = time.monotonic() + timeout
        while not self.app.running and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.error is not None:
            raise RuntimeError("the bot failed to start") from self.error
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.app.stop_running)
        self._thread.join(timeout)

    def __enter__(self) -> BotThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
