"""Who is an admin, asked once per update and as cheaply as possible.

`AdminsOnly` puts a set lookup in front of the admins' handlers (the /push and /undo
conversations, /stats, the job buttons): ptb asks every handler of a group in turn whether
it wants an update, and a ConversationHandler's answer is not cheap (it builds the
conversation key, looks up its state, then asks each entry point's and fallback's filters),
so every update of every user used to pay for the admins' flows. Their own filters stay in
place; the gate only answers "no" sooner for updates no admin sent. (Nothing of those
handlers can match a non-admin's update: their entry points and fallbacks require an admin,
and their states exist only in admins' conversations.)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from telegram import Update
from telegram.ext import Application, BaseHandler


def sent_by_admin(update: object, admin_ids: Collection[int]) -> bool:
    return (
        isinstance(update, Update)
        and (user := update.effective_user) is not None
        and user.id in admin_ids
    )


async def _delegated(update: Update, context: Any) -> None:
    raise AssertionError("AdminsOnly.handle_update hands updates to the wrapped handler")


class AdminsOnly(BaseHandler[Update, Any, Any]):
    """`handler`, asked only about updates an admin sent."""

    __slots__ = ("_admin_ids", "_handler")

    def __init__(self, handler: BaseHandler[Update, Any, Any], admin_ids: Collection[int]):
        # ConversationHandler has no callback of its own; handle_update below delegates.
        super().__init__(_delegated, block=handler.block)
        self._handler = handler
        self._admin_ids = frozenset(admin_ids)

    def check_update(self, update: object) -> bool | object | None:
        if not sent_by_admin(update, self._admin_ids):
            return None
        return self._handler.check_update(update)

    async def handle_update(
        self,
        update: Update,
        application: Application[Any, Any, Any, Any, Any, Any],
        check_result: object,
        context: Any,
    ) -> Any:
        return await self._handler.handle_update(update, application, check_result, context)
