"""The back-off of the engine's retry loops: how long to wait before the n-th retry.

Shared by a recipient's retries after transient failures (pushbot.broadcast.delivery) and
by the ledger writer's failed commits and failed page reads (pushbot.broadcast.ledger).

Why not tenacity (a dependency already; pushbot.startup uses it): its loop owns the attempt
count, the waiting and the giving up, and none of these loops can hand those over.

* A recipient's attempts are charged only while Telegram answers other requests (the
  gateway decides, per failure), a 429 retries without being an attempt and without a
  back-off (the gateway holds the chat or the budget), and each try first takes a ticket
  that must be answered exactly once. Tenacity would need a custom stop, wait and retry
  predicate sharing a hand-kept counter: the loop would still be ours, only harder to read.
* Every wait must end at once when the job stops (a `threading.Event`), or, for the writer,
  when shutdown sets a deadline while it waits (a `threading.Condition`); tenacity's `sleep`
  hook cannot end the loop, only raise out of it.
* The delivery loop runs once per message on the hot path: tenacity allocates a
  `RetryCallState` and its attempt objects on every call, also when the first try succeeds.

So each loop stays a few plain lines, and the delays they wait come from here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential: `base`, 2·`base`, 4·`base` … at most `cap`.

    With `jitter`, a delay is drawn from the upper half of that, so that senders that failed
    together do not retry together, yet none retries much sooner than the schedule says.
    """

    base: float
    cap: float
    jitter: bool = False

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling) if self.jitter else ceiling
