"""pushbot: a Telegram bot with built-in admin broadcasts."""

import os

# Opt in to ptb's coming timedelta durations (RetryAfter.retry_after and friends): our
# code reads both forms, and otherwise ptb warns on every 429 it builds.
os.environ.setdefault("PTB_TIMEDELTA", "true")

__version__ = "0.1.0"
