"""What handlers reach through `context.bot_data`: settings, the audience store, the outbox
of replies to users, the broadcast service and the statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from telegram.ext import CallbackContext

from pushbot.bot.outbox import Outbox
from pushbot.bot.store import Store
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
    # Broadcasts whose status message is being kept up to date by a watcher task.
    watched: set[UUID] = field(default_factory=set)


def services(context: CallbackContext[Any, Any, Any, Any]) -> Services:
    found = context.bot_data[SERVICES_KEY]
    assert isinstance(found, Services)
    return found
