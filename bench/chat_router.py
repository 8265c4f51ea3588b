"""A reverse proxy that routes Telegram's webhook POSTs by chat: what docs/scaling.md asks of
the proxy in front of several bot processes, as a process of its own for bench/scale_out.py.

`python bench/chat_router.py --port P --backend http://127.0.0.1:A/hook --backend ...`:
each update goes to backend[chat id mod N] (the chat of the message or of the button's
message; the user, for updates without a chat), with its headers (the secret token) and
body as they came, and the backend's answer goes back to Telegram: a backend that answers
only once the update is handled keeps doing so through the proxy. Prints READY when it
listens. (nginx or HAProxy would route by a header Telegram does not send, so a real
deployment needs this logic in the proxy too: a Lua/njs snippet, or this script.)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import aiohttp
import orjson
from aiohttp import web

CHAT_CARRIERS = ("message", "edited_message", "channel_post", "my_chat_member", "chat_member")


def chat_of(update: dict[str, Any]) -> int:
    """The id the bot keeps in order (pushbot.bot.ordering.ordering_key's choice)."""
    for kind in CHAT_CARRIERS:
        if kind in update:
            return int(update[kind]["chat"]["id"])
    query = update.get("callback_query")
    if query is not None:
        message = query.get("message")
        return int(message["chat"]["id"]) if message else int(query["from"]["id"])
    for value in update.values():
        if isinstance(value, dict) and "from" in value:
            return int(value["from"]["id"])
    return 0


async def serve(port: int, backends: list[str]) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
    )
    forwarded = {"X-Telegram-Bot-Api-Secret-Token", "Content-Type"}

    async def route(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        backend = backends[chat_of(orjson.loads(body)) % len(backends)]
        headers = {k: v for k, v in request.headers.items() if k in forwarded}
        async with session.post(backend, data=body, headers=headers) as answer:
            return web.Response(status=answer.status, body=await answer.read())

    runner = web.ServerRunner(web.Server(route, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
