"""A Telegram Bot API stand-in for tests, the demo and benchmarks (loopback only)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tgstandin.config import StandInConfig
    from tgstandin.server import StandIn
    from tgstandin.world import Call

__all__ = ["Call", "StandIn", "StandInConfig"]

# Imported lazily so `python -m tgstandin.spec` does not load its own module twice.
_HOMES = {
    "Call": "tgstandin.world",
    "StandIn": "tgstandin.server",
    "StandInConfig": "tgstandin.config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tgstandin' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
