"""Pending updates: one queue for getUpdates, or per-chat queues while a webhook is set.

Updates are serialised once, when they happen, so later changes to the world (edits,
ageing) cannot alter an update that is already queued. All methods must be called with the
world lock held; the asynchronous delivery side lives in `httpd.py`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tgstandin.errors import ApiError

# Telegram's default when allowed_updates is empty or never given.
DEFAULT_EXCLUDED = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

WEBHOOK_CONFLICT = ApiError(
    409,
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first",
)
POLL_CONFLICT = ApiError(
    409,
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
)


@dataclass(frozen=True, slots=True)
class QueuedUpdate:
    update_id: int
    chat_key: int
    body: str  # the JSON of the Update


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    generation: int
    last_error_date: int | None = None
    last_error_message: str | None = None
    per_chat: dict[int, deque[QueuedUpdate]] = field(default_factory=dict)
    # Chats with pending updates and no delivery worker, in the order they became ready.
    ready: deque[int] = field(default_factory=deque)
    active: set[int] = field(default_factory=set)
    pending: int = 0


class UpdateQueue:
    def __init__(self, first_update_id: int) -> None:
        self.next_update_id = first_update_id
        self.allowed: frozenset[str] | None = None  # None: Telegram's default set
        self.polling: deque[QueuedUpdate] = deque()
        self.webhook: Webhook | None = None
        # Held: updates queue up but none is handed out (benchmarks release a burst at once).
        self.held = False
        self._generation = 0

    # -- producing -------------------------------------------------------------------------

    def allocate_id(self) -> int:
        update_id = self.next_update_id
        self.next_update_id += 1
        return update_id

    def is_allowed(self, kind: str) -> bool:
        if self.allowed is None:
            return kind not in DEFAULT_EXCLUDED
        return kind in self.allowed

    def set_allowed(self, kinds: Iterable[str] | None) -> None:
        if kinds is None:
            return  # "If not specified, the previous setting will be used."
        chosen = frozenset(kinds)
        self.allowed = chosen or None

    def push(self, update: QueuedUpdate) -> None:
        webhook = self.webhook
        if webhook is None:
            self.polling.append(update)
            return
        self._enqueue_for_webhook(webhook, update)

    def pending_count(self) -> int:
        return self.webhook.pending if self.webhook is not None else len(self.polling)

    # -- getUpdates ------------------------------------------------------------------------

    def take(self, offset: int | None, limit: int) -> list[QueuedUpdate]:
        """Confirm updates below `offset` and return up to `limit` of the rest (kept until
        confirmed, as Telegram does)."""
        if self.webhook is not None:
            raise WEBHOOK_CONFLICT
        queue = self.polling
        if offset is not None and offset < 0:
            while len(queue) > -offset:
                queue.popleft()
        elif offset is not None:
            while queue and queue[0].update_id < offset:
                queue.popleft()
        if self.held:
            return []
        return [queue[i] for i in range(min(limit, len(queue)))]

    # -- webhook ---------------------------------------------------------------------------

    def set_webhook(
        self, url: str, secret_token: str | None, max_connections: int, drop_pending: bool
    ) -> None:
        pending = [] if drop_pending else self._all_pending()
        self._generation += 1
        previous = self.webhook
        webhook = Webhook(url, secret_token, max_connections, self._generation)
        if previous is not None and previous.url == url:
            webhook.last_error_date = previous.last_error_date
            webhook.last_error_message = previous.last_error_message
        self.webhook = webhook
        self.polling.clear()
        for update in pending:
            self._enqueue_for_webhook(webhook, update)

    def delete_webhook(self, drop_pending: bool) -> bool:
        was_set = self.webhook is not None
        pending = [] if drop_pending else self._all_pending()
        self._generation += 1
        self.webhook = None
        self.polling = deque(pending)
        return was_set

    def _all_pending(self) -> list[QueuedUpdate]:
        if self.webhook is None:
            return list(self.polling)
        return list(heapq.merge(*self.webhook.per_chat.values(), key=lambda u: u.update_id))

    def _enqueue_for_webhook(self, webhook: Webhook, update: QueuedUpdate) -> None:
        chat_queue = webhook.per_chat.get(update.chat_key)
        if chat_queue is None:
            chat_queue = webhook.per_chat[update.chat_key] = deque()
        if not chat_queue and update.chat_key not in webhook.active:
            webhook.ready.append(update.chat_key)
        chat_queue.append(update)
        webhook.pending += 1

    def next_for_chat(self, generation: int, chat_key: int) -> QueuedUpdate | None:
        """The head of a chat's queue for its delivery worker, or None when the worker should
        move on (queue empty, or the webhook changed under it)."""
        webhook = self.webhook
        if webhook is None or webhook.generation != generation:
            return None
        chat_queue = webhook.per_chat.get(chat_key)
        if chat_queue:
            return chat_queue[0]
        webhook.per_chat.pop(chat_key, None)
        webhook.active.discard(chat_key)
        return None

    def delivered(self, generation: int, update: QueuedUpdate) -> None:
        webhook = self.webhook
        if webhook is None or webhook.generation != generation:
            return
        chat_queue = webhook.per_chat.get(update.chat_key)
        if chat_queue and chat_queue[0] is update:
            chat_queue.popleft()
            webhook.pending -= 1

    def claim_ready_chat(self, generation: int) -> int | None:
        """A waiting chat for a free delivery worker, respecting max_connections."""
        webhook = self.webhook
        if webhook is None or webhook.generation != generation or not webhook.ready:
            return None
        if self.held or len(webhook.active) >= webhook.max_connections:
            return None
        chat_key = webhook.ready.popleft()
        webhook.active.add(chat_key)
        return chat_key

    def record_webhook_error(self, generation: int, when: int, message: str) -> None:
        webhook = self.webhook
        if webhook is not None and webhook.generation == generation:
            webhook.last_error_date = when
            webhook.last_error_message = message
