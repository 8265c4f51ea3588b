"""The error a Bot API call ends with, shaped exactly like Telegram's error responses."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """A Bot API failure: HTTP status == error_code, plus Telegram's description and, where
    Telegram sends them, its `parameters` (retry_after, migrate_to_chat_id)."""

    def __init__(
        self,
        code: int,
        description: str,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters: dict[str, int] = {}
        if retry_after is not None:
            self.parameters["retry_after"] = retry_after
        if migrate_to_chat_id is not None:
            self.parameters["migrate_to_chat_id"] = migrate_to_chat_id

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body

    def body(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":")).encode()


def bad_request(problem: str) -> ApiError:
    return ApiError(400, f"Bad Request: {problem}")


def forbidden(problem: str) -> ApiError:
    return ApiError(403, f"Forbidden: {problem}")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)


def upgraded_to_supergroup(new_chat_id: int) -> ApiError:
    return ApiError(
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=new_chat_id,
    )


NOT_FOUND = ApiError(404, "Not Found")
UNAUTHORIZED = ApiError(401, "Unauthorized")
CHAT_NOT_FOUND = "chat not found"
