"""The real bot in a process of its own, for bench/scale_out.py: `pushbot run`'s code path
(Runtime + BotThread), with Settings built directly so that the benchmark may lift the
pace beyond what `load_settings` accepts for Telegram. Prints READY once the bot runs, and
stops on SIGTERM. Arguments are Settings fields: `--set name=value` (repeatable).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from pushbot.config import Settings
from pushbot.logs import configure_logging, token_secrets
from pushbot.runtime import BotThread, Runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    values = dict(item.split("=", 1) for item in args.set)
    settings = Settings.model_validate(values)
    configure_logging(settings.log_level, token_secrets(settings.bot_token))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    runtime = Runtime.create(settings)
    bot = BotThread(runtime).start(timeout=60.0)
    print("READY", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        bot.stop(timeout=60.0)
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
