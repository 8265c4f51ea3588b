"""A Broadcaster alone in its own OS process, for the SIGKILL and memory tests.

    python -m tests.broadcast.engine_process DB_URL BASE_URL TOKEN WORKERS RATE PUSH_UUID
        [--pause-after SECONDS]

Launches the push and prints one line `RESULT {json}` (final state, counts, peak RSS in MB)
when the job ends, or when it was paused after SECONDS. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from uuid import UUID

from pushbot.broadcast.engine import Broadcaster
from pushbot.broadcast.pacing import Pacer
from pushbot.config import Settings
from pushbot.db.session import create_db_engine, create_session_factory


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    for name in ("db_url", "base_url", "token"):
        parser.add_argument(name)
    parser.add_argument("workers", type=int)
    parser.add_argument("rate", type=float)
    parser.add_argument("push_uuid", type=UUID)
    parser.add_argument("--pause-after", type=float, default=None)
    args = parser.parse_args(argv)

    settings = Settings(
        bot_token=args.token,
        telegram_base_url=args.base_url,
        broadcast_workers=args.workers,
        broadcast_pool_size=args.workers,
        broadcast_rate=args.rate,
    )
    engine = create_db_engine(args.db_url)
    broadcaster = Broadcaster(settings, create_session_factory(engine), pacer=Pacer(args.rate))
    broadcaster.start()
    handle = broadcaster.launch_push(args.push_uuid)
    print("STARTED", flush=True)
    if args.pause_after is not None:
        time.sleep(args.pause_after)
        broadcaster.pause(args.push_uuid)
    report = handle.wait()
    broadcaster.shutdown()
    peak_rss_mb = peak_rss_kib() / 1024
    result = {
        "state": report.state.value,
        "total": report.total,
        "sent": report.sent,
        "failed": report.failed,
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    print("RESULT " + json.dumps(result), flush=True)
    engine.dispose()
    return 0


def peak_rss_kib() -> int:
    """VmHWM of this process. Not getrusage's ru_maxrss: after fork+exec that still counts
    the parent's (pytest's) pages."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
