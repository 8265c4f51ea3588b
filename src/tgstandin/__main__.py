"""Process mode: `python -m tgstandin --port P --users N [--blocked k] ...`.

Serves the Bot API and the JSON control endpoint until SIGINT/SIGTERM, after printing one
line `STANDIN base_url=... control_url=... token=...` once it accepts connections.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from tgstandin.config import StandInConfig
from tgstandin.server import StandIn


def build_parser() -> argparse.ArgumentParser:
    defaults = StandInConfig()
    parser = argparse.ArgumentParser(prog="python -m tgstandin", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=defaults.token)
    parser.add_argument("--users", type=int, default=0, help="private users to create")
    parser.add_argument("--blocked", type=int, default=0, help="of those, how many blocked")
    parser.add_argument("--deactivated", type=int, default=0, help="and how many deactivated")
    parser.add_argument("--start-id", type=int, default=None, help="first user id")
    parser.add_argument("--groups", type=int, default=0, help="groups with the bot as member")
    parser.add_argument("--no-limits", action="store_true", help="switch flood limits off")
    parser.add_argument("--global-rate", type=float, default=defaults.global_rate)
    parser.add_argument("--global-burst", type=int, default=defaults.global_burst)
    parser.add_argument("--per-chat-rate", type=float, default=defaults.per_chat_rate)
    parser.add_argument("--per-chat-burst", type=int, default=defaults.per_chat_burst)
    parser.add_argument("--group-per-minute", type=int, default=defaults.group_per_minute)
    parser.add_argument("--retry-after-penalty", type=int, default=0)
    parser.add_argument(
        "--latency", type=float, nargs=2, default=(0.0, 0.0), metavar=("LOW", "HIGH")
    )
    parser.add_argument("--timeout-hold", type=float, default=defaults.timeout_hold)
    parser.add_argument("--seed", type=int, default=None)
    return parser


def config_from(args: argparse.Namespace) -> StandInConfig:
    return StandInConfig(
        token=args.token,
        host=args.host,
        port=args.port,
        global_rate=args.global_rate,
        global_burst=args.global_burst,
        per_chat_rate=args.per_chat_rate,
        per_chat_burst=args.per_chat_burst,
        group_per_minute=args.group_per_minute,
        limits_enabled=not args.no_limits,
        retry_after_penalty=args.retry_after_penalty,
        latency=(args.latency[0], args.latency[1]),
        timeout_hold=args.timeout_hold,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    standin = StandIn(config_from(args))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    standin.start()
    try:
        standin.add_users(
            args.users, blocked=args.blocked, deactivated=args.deactivated, start_id=args.start_id
        )
        for index in range(args.groups):
            standin.add_group(f"Group {index + 1}")
        print(
            f"STANDIN base_url={standin.base_url} control_url={standin.control_url} "
            f"token={standin.token}",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
