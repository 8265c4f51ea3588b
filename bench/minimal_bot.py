"""The anchors of bench/inbound.py: minimal ptb bots that answer /start, nothing else.

Run by bench/inbound.py as a process of its own (`bench/minimal_bot.py --shape NAME ...`),
against the stand-in, in webhook mode through ptb's own `run_webhook` (tornado). No
database, no pacing, no ordering: the floor a ptb bot of that shape stands on. Shapes:

- `ptb-defaults`: `ApplicationBuilder().token(...).build()` and nothing more: HTTPXRequest,
  one update at a time (ptb's defaults);
- `ptb-64-httpx`: 64 concurrent updates and HTTPXRequest(connection_pool_size=16), the shape
  pushbot had before issue 9;
- `ptb-64-aiohttp`: 64 concurrent updates and pushbot's AiohttpRequest(32).

It prints READY once ptb's start-up is done (the webhook is set right after); the driver
holds the stand-in's updates until then.
"""

from __future__ import annotations

import argparse
import sys

from telegram import Update
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from pushbot.transport import AiohttpRequest

SHAPES = ("ptb-defaults", "ptb-64-httpx", "ptb-64-aiohttp")
WELCOME = "👋 Welcome! You are subscribed to announcements."
SECRET = "bench-secret_token"


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(WELCOME)


async def ready(app: Application) -> None:  # type: ignore[type-arg]
    print("READY", flush=True)


def build(shape: str, token: str, base_url: str) -> Application:  # type: ignore[type-arg]
    builder = ApplicationBuilder().token(token).base_url(base_url).post_init(ready)
    if shape == "ptb-64-httpx":
        builder = builder.concurrent_updates(64).request(HTTPXRequest(connection_pool_size=16))
    elif shape == "ptb-64-aiohttp":
        builder = builder.concurrent_updates(64).request(AiohttpRequest(connection_pool_size=32))
    app = builder.build()
    app.add_handler(CommandHandler("start", start))
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = build(args.shape, args.token, args.base_url)
    app.run_webhook(
        listen="127.0.0.1",
        port=args.port,
        url_path="hook",
        webhook_url=f"http://127.0.0.1:{args.port}/hook",
        secret_token=SECRET,
        allowed_updates=["message"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
