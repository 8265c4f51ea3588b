"""What handlers reach through `context.bot_data`: settings, the audience store, the outbox
of replies to users, the broadcast service and the statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telegram.ext import CallbackContext

from pushbot.bot.outbox import Outbox
from pushbot.bot.store import Store
from pushbot.bot.watchers import StatusWatchers
from pushbot.broadcast.service import BroadcastService
from pushbot.config import Settings
from pushbot.stats import StatsService

SERVICES_KEY = "pushbot.services"


@dataclass
class Services:
    settings: Settings
    store: Store
    broadcasts: BroadcastService
    stats: StatsService
    outbox: Outbox
    # The tasks keeping running broadcasts' status messages up to date.
    watchers: StatusWatchers = field(default_factory=StatusWatchers)


def services(context: CallbackContext[Any, Any, Any, Any]) -> Services:
    found = context.bot_data[SERVICES_KEY]
    assert isinstance(found, Services)
    return found
