"""Process mode: `python -m tgstandin [--port P] [--latency LOW HIGH] [--no-limits] ...`.

Serves the Bot API and the JSON control endpoint until SIGINT/SIGTERM, after printing one
line `STANDIN base_url=... control_url=... token=...` once it accepts connections. People,
groups, limits and faults are then set up through the control endpoint (`RemoteStandIn`).
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
    parser.add_argument("--no-limits", action="store_true", help="switch flood limits off")
    parser.add_argument(
        "--latency", type=float, nargs=2, default=(0.0, 0.0), metavar=("LOW", "HIGH")
    )
    parser.add_argument("--seed", type=int, default=None)
    return parser


def config_from(args: argparse.Namespace) -> StandInConfig:
    return StandInConfig(
        token=args.token,
        host=args.host,
        port=args.port,
        limits_enabled=not args.no_limits,
        latency=(args.latency[0], args.latency[1]),
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
