"""Helpers shared by the stand-in tests (pytest-asyncio is not used: `run` drives coroutines)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import httpx
from telegram import Bot
from telegram.request import HTTPXRequest

from tgstandin import StandIn

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Endpoint(Protocol):
    """StandIn or RemoteStandIn: where a bot connects."""

    token: str
    base_url: str


def make_bot(standin: Endpoint, read_timeout: float = 5.0) -> Bot:
    """An unmodified ptb Bot pointed at the stand-in (use as `async with make_bot(s) as bot`)."""
    request = HTTPXRequest(connection_pool_size=8, read_timeout=read_timeout)
    return Bot(standin.token, base_url=standin.base_url, request=request)


def raw(standin: StandIn, method: str, **params: Any) -> httpx.Response:
    """A form-encoded call, the way ptb encodes: strings as-is, everything else as JSON."""
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        return client.post(f"{standin.base_url}{standin.token}/{method}", data=_form(params))


def raw_json(standin: StandIn, method: str, **params: Any) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        return client.post(f"{standin.base_url}{standin.token}/{method}", json=params)


def _form(params: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
