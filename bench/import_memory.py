"""Issue #10: what the engine's resident memory is made of before a broadcast starts.

The 100,000-recipient run (bench/engine_overhead.py) reports the engine's peak RSS
(VmHWM); most of it is the libraries loaded before the first recipient. This script
imports them one at a time in a fresh interpreter, in the order the engine loads them,
and prints what each adds to VmRSS, so that a change in the peak can be told apart from
a change in what a broadcast holds.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# pushbot's dependencies first, then pushbot itself: each line is what that import adds.
MODULES = (
    "sqlalchemy",
    "telegram",
    "telegram.ext",
    "psycopg2",
    "pydantic",
    "pydantic_settings",
    "aiohttp",
    "uvloop",
    "orjson",
    "pushbot.broadcast.service",
    "pushbot.bot.app",
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=MODULES, help="modules, in order")
    args = parser.parse_args()
    print(f"{'interpreter':<28} {rss_mb():6.1f} MB")
    for name in args.modules:
        before = rss_mb()
        importlib.import_module(name)
        after = rss_mb()
        print(f"+ {name:<26} {after - before:+6.1f} MB  (total {after:6.1f} MB)")


if __name__ == "__main__":
    main()
