"""A Telegram Bot API stand-in for tests, the demo and benchmarks (loopback only)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pushbot.standin.config import StandInConfig
    from pushbot.standin.server import StandIn
    from pushbot.standin.world import Call

__all__ = ["Call", "StandIn", "StandInConfig"]

# Imported lazily so `python -m pushbot.standin.spec` does not load its own module twice.
_HOMES = {
    "Call": "pushbot.standin.world",
    "StandIn": "pushbot.standin.server",
    "StandInConfig": "pushbot.standin.config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pushbot.standin' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
