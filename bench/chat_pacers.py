"""Micro-benchmark: the cost of the per-chat budget look-up as chats grow.

`ChatBudgets` (shared by the Application and the broadcaster) keeps one slot time per chat
and, once it holds CHAT_BUDGETS_SOFT_LIMIT (1024) of them, sweeps the idle ones; it sweeps
again only once the map has doubled, so a burst of new chats within one second (which the
inbound goal of 1,500 updates/s implies) pays O(1) per request on average. This measures
the booking (what every request does before sending) for the first chats and for the chats
past the limit, all within one second.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import Result, Row, add_common_options, command_line, emit
from pushbot.broadcast.pacing import CHAT_BUDGETS_SOFT_LIMIT, ChatBudgets


def per_call_micros(chats: ChatBudgets, first_chat: int, count: int) -> float:
    started = time.perf_counter()
    for chat_id in range(first_chat, first_chat + count):  # bounded: `count` calls
        chats.reserve(chat_id)
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
    chats = ChatBudgets()
    below = per_call_micros(chats, 1, CHAT_BUDGETS_SOFT_LIMIT - 24)
    beyond = per_call_micros(chats, CHAT_BUDGETS_SOFT_LIMIT, args.beyond)
    row = Row(
        "per-chat budget booking in ChatBudgets (micro-benchmark)",
        f"{below:.1f} µs per request below {CHAT_BUDGETS_SOFT_LIMIT} busy chats, "
        f"{beyond:.0f} µs past it",
        "reported (see the analysis)",
        None,
        command,
    )
    details = [
        f"- `{command}`: {CHAT_BUDGETS_SOFT_LIMIT - 24} chats, then {args.beyond} more, "
        f"all booked within the same second; {len(chats)} chats kept at the "
        f"end. At {beyond:.0f} µs per request, 1,500 new chats/s would spend "
        f"{1500 * beyond / 1e6:.2f} s of CPU per second in the look-up alone."
    ]
    emit(Result("chat_pacers", [row], details, None, {"below": below, "beyond": beyond}), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
