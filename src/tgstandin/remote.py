"""`RemoteStandIn`: the stand-in's control operations for a stand-in in another process.

Process mode (`python -m tgstandin ...`) keeps the stand-in off the bot's GIL in
benchmarks. This client inherits every operation of `StandInControl` unchanged; each call
goes, as its name and JSON arguments, to the stand-in's control endpoint
(`POST /_standin/<name>`), where the same method runs.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from tgstandin.control import StandInControl, bound_arguments, decode_result

_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "TypeError": TypeError,
    "AttributeError": AttributeError,
    "AssertionError": AssertionError,
}


class RemoteError(RuntimeError):
    """The remote stand-in failed in a way that has no local exception type."""


class RemoteStandIn(StandInControl):
    poll_interval = 0.05  # every look is an HTTP round trip

    def __init__(self, control_url: str, timeout: float = 30.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._http = httpx.Client(timeout=timeout, trust_env=False)
        info = self.info()
        self.base_url = str(info["base_url"])
        self.token = str(info["token"])

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteStandIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _perform(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the operation in the stand-in's process."""
        arguments = bound_arguments(name, args, kwargs)
        response = self._http.post(f"{self.control_url}/{name}", json=arguments)
        payload = response.json()
        if response.status_code != 200:
            error = _ERRORS.get(payload.get("type", ""), RemoteError)
            raise error(payload.get("error", response.text))
        return decode_result(name, payload["result"])
