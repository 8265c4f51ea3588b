"""A minimal Bot API server for bench/transport.py (a helper, not a benchmark itself).

`python bench/minimal_botapi.py [--port 0]` serves on 127.0.0.1 and prints one line
`MINIMAL_BOTAPI base_url=http://127.0.0.1:PORT/bot` once it accepts connections; it runs
until SIGINT/SIGTERM. Every POST to /bot<token>/<method> is answered at once with
`{"ok": true, "result": …}`: a canned Message for sendMessage, a MessageId for copyMessage,
the bot for getMe, `true` for anything else. The request body is read (as Telegram would)
but not parsed, and nothing is checked: the point is that the server costs the least CPU
per call, so that the client is what the benchmark measures. aiohttp's low-level server
(no router) on uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from typing import Any

from aiohttp import web

BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
MESSAGE = {
    "message_id": 1,
    "from": BOT_USER,
    "chat": {"id": 10_000_001, "first_name": "B", "type": "private"},
    "date": 1_700_000_000,
    "text": "Hello from the benchmark",
}
RESULTS: dict[str, Any] = {
    "getMe": BOT_USER,
    "sendMessage": MESSAGE,
    "copyMessage": {"message_id": 2},
}
ANSWERS = {method: json.dumps({"ok": True, "result": r}).encode() for method, r in RESULTS.items()}
TRUE_ANSWER = json.dumps({"ok": True, "result": True}).encode()


async def answer(request: web.BaseRequest) -> web.Response:
    await request.read()
    method = request.path.rsplit("/", 1)[-1]
    return web.Response(body=ANSWERS.get(method, TRUE_ANSWER), content_type="application/json")


async def serve(port: int) -> None:
    server = web.Server(answer, access_log=None)
    runner = web.ServerRunner(server)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    print(f"MINIMAL_BOTAPI base_url=http://127.0.0.1:{sock.getsockname()[1]}/bot", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
