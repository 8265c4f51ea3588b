"""pushbot: a Telegram bot with built-in admin broadcasts."""

__version__ = "0.1.0"
