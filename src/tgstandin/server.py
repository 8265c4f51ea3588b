"""`StandIn`: the stand-in in this process — its HTTP server and the world it simulates.

The HTTP server runs on its own thread and event loop; every control operation (inherited
from `StandInControl`, see control.py) may be called from any other thread. The same
operations are served to other processes on the control endpoint (`RemoteStandIn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Any

from tornado.netutil import bind_sockets

from tgstandin.config import StandInConfig
from tgstandin.control import OPERATIONS, StandInControl, to_jsonable
from tgstandin.httpd import CONTROL_PREFIX, HttpServer
from tgstandin.methods import BotApi
from tgstandin.spec import Spec, load_spec
from tgstandin.world import Call, World


class StandIn(StandInControl):
    def __init__(self, config: StandInConfig | None = None, spec: Spec | None = None) -> None:
        self.config = config or StandInConfig()
        self.token = self.config.token
        self.spec = spec or load_spec()
        self._world = World(self.config)
        self._api = BotApi(self._world)
        self._world.notify = self._notify
        self._server = HttpServer(self._world, self._api, self.spec, self._control_call)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.base_url = ""
        self.control_url = ""

    def start(self) -> StandIn:
        if self._thread is not None:
            raise RuntimeError("the stand-in is already running")
        # A fresh HTTP side, so a stopped stand-in can be started again with its world intact.
        self._server = HttpServer(self._world, self._api, self.spec, self._control_call)
        sockets = bind_sockets(self.config.port, self.config.host)
        self.port = sockets[0].getsockname()[1]
        root = f"http://{_url_host(self.config.host)}:{self.port}"
        self.base_url = f"{root}/bot"
        self.control_url = f"{root}{CONTROL_PREFIX.rstrip('/')}"
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sockets, ready), name=f"standin:{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10.0):
            raise RuntimeError("the stand-in server did not start within 10 s")
        return self

    def _run(self, sockets: list[socket.socket], ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._server.listen(sockets))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop)
        try:
            future.result(timeout=10.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10.0)
            self._loop = None
            self._thread = None

    def __enter__(self) -> StandIn:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _notify(self) -> None:
        """The world changed updates or their routing: wake long polls, pump the webhook."""
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop is shutting down; nobody is waiting for updates any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._server.on_updates_changed)

    def _control_call(self, name: str, kwargs: dict[str, Any]) -> Any:
        """A call that came in on the control endpoint."""
        if name not in OPERATIONS:
            raise AttributeError(f"{name!r} is not a control operation of the stand-in")
        return to_jsonable(getattr(self, name)(**kwargs))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["Call", "StandIn", "StandInConfig"]
