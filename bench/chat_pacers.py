"""Micro-benchmark: the cost of SharedRateLimiter's per-chat pacer look-up as chats grow.

`SharedRateLimiter._pacer_for_chat` keeps one Pacer per chat and, once it holds
PER_CHAT_PACERS_SOFT_LIMIT (1024) of them, scans them all for idle ones before adding a new
chat. A private chat's pacer stays busy for about a second after a message, so when more
than 1024 different chats get a message within a second (a burst of new users, which the
inbound goal of 1,500 updates/s implies), every request to a new chat pays a full scan that
frees nothing. This measures the look-up plus the slot booking (what `process_request` does
per request before sending) for the first chats and for the chats past the limit, all
within one second.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import Result, Row, add_common_options, command_line, emit
from pushbot.broadcast.pacing import PER_CHAT_PACERS_SOFT_LIMIT, Pacer, SharedRateLimiter


def per_call_micros(limiter: SharedRateLimiter, first_chat: int, count: int) -> float:
    started = time.perf_counter()
    for chat_id in range(first_chat, first_chat + count):  # bounded: `count` calls
        pacer = limiter._pacer_for_chat(chat_id)
        assert pacer is not None
        pacer.reserve()
    return (time.perf_counter() - started) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--beyond", type=int, default=1000, help="chats measured past the limit (default 1000)"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.beyond = min(args.beyond, 300)
    command = command_line("chat_pacers.py", argv)
    limiter = SharedRateLimiter(Pacer(1e9))
    below = per_call_micros(limiter, 1, PER_CHAT_PACERS_SOFT_LIMIT - 24)
    beyond = per_call_micros(limiter, PER_CHAT_PACERS_SOFT_LIMIT, args.beyond)
    row = Row(
        "per-chat pacer look-up + booking in SharedRateLimiter (micro-benchmark)",
        f"{below:.1f} µs per request below {PER_CHAT_PACERS_SOFT_LIMIT} busy chats, "
        f"{beyond:.0f} µs past it",
        "reported (see the analysis)",
        None,
        command,
    )
    details = [
        f"- `{command}`: {PER_CHAT_PACERS_SOFT_LIMIT - 24} chats, then {args.beyond} more, "
        f"all booked within the same second; {len(limiter._chat_pacers)} pacers kept at the "
        f"end. At {beyond:.0f} µs per request, 1,500 new chats/s would spend "
        f"{1500 * beyond / 1e6:.2f} s of CPU per second in the look-up alone."
    ]
    emit(Result("chat_pacers", [row], details, None, {"below": below, "beyond": beyond}), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
