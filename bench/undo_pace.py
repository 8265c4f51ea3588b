"""Issue #4: /undo pace at Telegram's limits.

Same set-up as push_pace.py (stand-in process with Telegram's limits and 30-120 ms latency,
the real bot with default settings on SQLite, N subscribed chats): the admin broadcasts
with /push, then replies /undo to the report and presses Retract.

Figures: deletion pace = successful deleteMessage calls / (last - first, stand-in clock),
and 429s (every method) from the /undo on. By default nobody else writes to the bot.
"""

from __future__ import annotations

import argparse
import sys
import time

import push_pace
from common import (
    CpuMeter,
    Result,
    Row,
    StandInProcess,
    command_line,
    count_status,
    emit,
    rate,
    retract_button,
    sqlite_database,
    statuses,
)
from push_pace import (
    PACE_GOAL,
    Newcomers,
    paced_breakdown_of,
    prepare,
    push_through_bot,
    standin_args,
    standin_url,
)


def build_parser() -> argparse.ArgumentParser:
    parser = push_pace.build_parser()
    parser.description = __doc__
    parser.set_defaults(newcomer_rate=0.0, idle_samples=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        args.recipients = min(args.recipients, 120)
    if args.timeout is None:
        args.timeout = args.recipients / 20 + 60
    command = command_line("undo_pace.py", argv)
    with (
        StandInProcess(*standin_args(args.latency, args.seed)) as standin,
        sqlite_database() as database_url,
    ):
        bot, recipients, newcomers, _ = prepare(args, standin, database_url)
        tg = bot.tg
        with bot:
            pushed = push_through_bot(bot, standin, recipients, [], 0.0, args.timeout)
            bot.wait_push_recorded(pushed.report["message_id"])
            ask = bot.ask_undo(pushed.report)
            # New users (if asked for) write while the retraction runs.
            crowd = Newcomers(standin_url(standin), newcomers, args.newcomer_rate)
            cpu = CpuMeter(standin.pid).start()
            crowd.start()
            try:
                undo_at = bot.press(ask, retract_button(ask))
                done = bot.wait_report(ask["message_id"], "Removed:", args.timeout)
            finally:
                crowd.stop()
            cpu.stop()
            time.sleep(0.5)  # the report's own bookkeeping calls
            calls = tg.calls()
    wanted = set(recipients)
    deletes = sorted(
        c.at
        for c in calls
        if c.method == "deleteMessage"
        and c.status == 200
        and c.chat_id in wanted
        and c.at >= undo_at
    )
    if len(deletes) < 2:
        raise RuntimeError(f"only {len(deletes)} deletions: {statuses(calls, undo_at)}")
    first, last = deletes[0], deletes[-1]
    pace = rate(len(deletes), first, last)
    n429 = count_status(calls, 429, since=undo_at)
    n429_all = count_status(calls, 429)
    removed_all = f"Removed: {len(recipients)}" in done.get("text", "")
    met = pace >= PACE_GOAL and n429 == 0 and removed_all
    row = Row(
        f"/undo pace, {len(recipients)} copies"
        + (f", {args.newcomer_rate:g} new user/s" if args.newcomer_rate > 0 else ""),
        f"{pace:.2f} deletions/s ({len(deletes)} in {last - first:.1f} s), {n429} × 429",
        f"≥ {PACE_GOAL:g} deletions/s, 0 × 429",
        met,
        command,
    )
    details = [
        f"- `{command}`: {paced_breakdown_of(calls, first, last)}; {cpu.describe()}.",
        f"  Report: “{' '.join(done.get('text', '').split())[:160]}”.",
        f"  The /push before it: {pushed.pace:.2f} msg/s. 429s over the whole run: {n429_all}.",
        f"  Press → first deletion {first - undo_at:.2f} s; calls since the press: "
        f"{statuses(calls, undo_at)}.",
    ]
    data = {
        "pace": pace,
        "deletions": len(deletes),
        "span": last - first,
        "429": n429,
        "push_pace": pushed.pace,
    }
    emit(Result("undo_pace", [row], details, None, data), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
