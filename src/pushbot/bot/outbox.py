"""Replies to users: recorded with what they answer, sent in order at Telegram's pace.

A user's /start, /stop, /help or unknown command is answered through the outbox. The
handler's write and its reply are committed together (`Store.write`: the reply is a row of
the `outbox` table in the same group commit), the handler returns, and the reply waits here
for its turn: `OUTBOX_SENDERS` tasks send the queue in order, each chat's replies one after
another, through the Application's bot and so through the token's gateway (the free
budget shared with the broadcaster, Telegram's per-chat limits, 429s and outages). Once
Telegram took a reply (or refused it for good: blocked, chat not found) its row is deleted.

So 3,000 people sending /start in one second are all recorded within that second, while
their welcomes drain at ~30/s; and the handlers never hold one of the update slots while
they wait for a slot of Telegram's budget.

What jumps the queue: everything said to an admin (`Outbox.answer` replies directly) and
everything the admins' flows send (previews, status edits, button answers, reports) goes
straight to the gateway, where it waits behind at most `BOOKED_AHEAD` seconds of replies
(the senders book a slot of the free budget only when few are booked), never behind the
queue. Their updates also skip the update processor's bound (pushbot.bot.ordering).

Bounded: at most `limit` replies are owed at once. When the outbox is full, users' updates
wait before they are handled (`wait_for_room`, called by the update processor): nothing is
dropped. In webhook mode the update is acknowledged only once handled, so Telegram holds
the rest; in polling mode ptb keeps fetching and the waiting updates sit in memory.

A crash: every reply still owed is in the table and is sent at the next start, in order.
A reply that Telegram took just before the crash, whose row was not deleted yet, is sent a
second time: at most one per sender (a sender deletes its reply's row before it takes the
next one).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from telegram import Bot, Message
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBUserWarning

from pushbot.bot.store import Change, Store
from pushbot.broadcast.backoff import Backoff
from pushbot.config import DEFAULT_REPLY_QUEUE_LIMIT
from pushbot.db.queries import OutgoingReply, OwedReply

logger = logging.getLogger(__name__)

# Sends in flight at once. At Telegram's ~30/s and its 50-500 ms per request, 16 keep the
# budget busy.
OUTBOX_SENDERS = 16
# A sender books its slot of the free budget only once the slots already booked ahead of it
# end within this many seconds, so that what jumps the queue (an admin's reply, a status
# edit) waits behind at most this much of the outbox, not behind all 16 senders (half a
# second at 30/s). 0.2 s (6 slots) still covers Telegram's latency: the budget never idles.
BOOKED_AHEAD = 0.2
DEFAULT_LIMIT = DEFAULT_REPLY_QUEUE_LIMIT
# A reply that failed past the gateway's own retries (Telegram down for over a minute) is
# tried again after 1 s, 2 s … at most 60 s; the chat's later replies wait behind it.
RESEND_BACKOFF = Backoff(1.0, 60.0)
STOP_DEADLINE = 10.0


# Bot.send_message would parse Telegram's answer into a Message (0.06 ms of CPU a reply,
# a tenth of a /start's budget here) that nobody reads. do_api_request("sendMessage")
# returns the answer as it came, through the same ExtBot path (rate limiter, errors); ptb
# asks, with a warning silenced below, to use send_message for methods it knows.
SEND_MESSAGE = "sendMessage"
warnings.filterwarnings(
    "ignore", message=r"Please use 'Bot\.sendMessage' instead", category=PTBUserWarning
)


def send_message_parameters(reply: OutgoingReply) -> dict[str, object]:
    """sendMessage's parameters for a reply, as `message.reply_text` under the bot's
    Defaults (no link previews; a reply to a deleted message is sent anyway) sends them."""
    parameters: dict[str, object] = {
        "chat_id": reply.chat_id,
        "text": reply.text,
        "link_preview_options": {"is_disabled": True},
    }
    if reply.reply_to_message_id is not None:
        parameters["reply_parameters"] = {
            "message_id": reply.reply_to_message_id,
            "allow_sending_without_reply": True,
        }
    if reply.message_thread_id is not None:
        parameters["message_thread_id"] = reply.message_thread_id
    return parameters


def reply_to(message: Message, text: str) -> OutgoingReply:
    """What `message.reply_text(text)` would send: quoted in groups (ptb's default without
    Defaults.do_quote), into the message's forum topic."""
    quoted = message.message_id if message.chat.type != message.chat.PRIVATE else None
    topic = message.message_thread_id if message.is_topic_message else None
    return OutgoingReply(message.chat.id, text, quoted, topic)


class Outbox:
    def __init__(
        self,
        store: Store,
        limit: int = DEFAULT_LIMIT,
        senders: int = OUTBOX_SENDERS,
        booked: Callable[[], float] | None = None,
    ) -> None:
        """`booked()`: seconds of the free budget already booked ahead (Pacer.booked_ahead)."""
        self._store = store
        self._booked = booked
        self._limit = limit
        self._senders_wanted = senders
        # Per chat, its owed replies in order; `_ready`: chats whose head may be sent now, in
        # the order they became ready (a chat being sent is in neither until it is done).
        self._chats: dict[int, deque[OwedReply]] = {}
        self._ready: deque[int] = deque()
        self._owed = 0
        # Senders with nothing to send wait on a future of their own: waking one costs a
        # set_result, which matters at a thousand replies a second.
        self._idle: deque[asyncio.Future[None]] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._bot: Bot | None = None

    @property
    def owed(self) -> int:
        """Replies waiting or being sent."""
        return self._owed

    # --- lifecycle (on the Application's loop) --------------------------------------------

    async def start(self, bot: Bot) -> int:
        """Take up what a previous run left owed, and start sending; returns how many."""
        self._bot = bot
        left = await self._store.load_owed_replies()
        self._add(left)
        if left:
            logger.info("sending %d replies owed since before the restart", len(left))
        self._tasks = [
            asyncio.create_task(self._send_forever(), name=f"pushbot-outbox-{n}")
            for n in range(self._senders_wanted)
        ]
        return len(left)

    async def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Let the sends in flight finish (and their rows go), then stop; what is still owed
        stays in the table for the next start."""
        self._stopping = True
        self._wake_idle(len(self._idle))
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=deadline)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    # --- owing ----------------------------------------------------------------------------

    async def answer(
        self,
        message: Message,
        change: Change | None,
        say: Callable[[Any], str | None],
        *,
        urgent: bool,
    ) -> Any:
        """Record `change`, then say `say(result)` in the message's chat; returns the
        result. Urgent (an admin): the reply goes out at once, ahead of the queue;
        otherwise it is owed in the same commit as the change and queued."""
        if urgent:
            result = (await self._store.write(change)).result if change is not None else None
            text = say(result)
            if text is not None:
                await message.reply_text(text)
            return result

        def reply_for(result: Any) -> OutgoingReply | None:
            text = say(result)
            return None if text is None else reply_to(message, text)

        written = await self._store.write(change, reply_for)
        if written.owed is not None:
            self._add((written.owed,))
        return written.result

    async def wait_for_room(self) -> None:
        """Return once fewer than `limit` replies are owed (at once, usually)."""
        while self._owed >= self._limit:
            self._room.clear()
            await self._room.wait()

    def _add(self, owed: Iterable[OwedReply]) -> None:
        for row in owed:
            chat = self._chats.get(row.reply.chat_id)
            if chat is None:
                chat = self._chats[row.reply.chat_id] = deque()
                self._make_ready(row.reply.chat_id)
            chat.append(row)
            self._owed += 1

    def _make_ready(self, chat_id: int) -> None:
        self._ready.append(chat_id)
        self._wake_idle(1)

    def _wake_idle(self, count: int) -> None:
        for _ in range(min(count, len(self._idle))):
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # --- sending --------------------------------------------------------------------------

    async def _next_chat(self) -> int | None:
        """The next chat to send to, or None when stopping."""
        while not self._ready:
            if self._stopping:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter
        return None if self._stopping else self._ready.popleft()

    async def _send_forever(self) -> None:
        while (chat_id := await self._next_chat()) is not None:
            queue = self._chats[chat_id]
            row = queue[0]
            failures = 0
            while not await self._send(row):
                failures += 1
                if self._stopping:
                    self._ready.appendleft(chat_id)  # still owed: the next start sends it
                    return
                await asyncio.sleep(RESEND_BACKOFF.delay(failures))
            await self._store.settle_replies((row.id,))
            queue.popleft()
            self._owed -= 1
            if self._owed < self._limit:
                self._room.set()
            if queue:
                self._make_ready(chat_id)  # at the back: other chats' first replies first
            else:
                del self._chats[chat_id]

    async def _send(self, row: OwedReply) -> bool:
        """Send one reply; False if it should be tried again later."""
        assert self._bot is not None
        reply = row.reply
        if self._booked is not None:
            while (ahead := self._booked() - BOOKED_AHEAD) > 0:
                await asyncio.sleep(ahead)
        try:
            await self._bot.do_api_request(SEND_MESSAGE, api_kwargs=send_message_parameters(reply))
        except (Forbidden, BadRequest) as exc:
            # Blocked, deactivated, chat gone: no retry can deliver it (my_chat_member
            # updates keep the audience true, not failed replies).
            logger.info("reply to chat %s dropped: %s", reply.chat_id, exc)
        except (NetworkError, RetryAfter) as exc:
            # The gateway already retried for a minute: Telegram is down. Keep it.
            logger.warning("reply to chat %s not sent yet, will retry: %s", reply.chat_id, exc)
            return False
        except TelegramError as exc:
            logger.warning("reply to chat %s dropped: %s", reply.chat_id, exc)
        except Exception:
            # Not Telegram's answer (a bug, the request shut down under us): keep the reply.
            logger.exception("reply to chat %s not sent, will retry", reply.chat_id)
            return False
        return True
