"""Issue #9, benchmark 2: a paid broadcast at Telegram's paid limit, and /start replies meanwhile.

The stand-in runs as a separate process with Telegram's limits on (30/s per bot; ~1/s per
chat; 1,000/s for sends with `allow_paid_broadcast`, burst 50) and 30-120 ms latency. The
real bot (Runtime + BotThread, PAID_BROADCAST=true, BROADCAST_RATE=1000, the workers and
the pool derived from them; PostgreSQL) broadcasts to N subscribed chats through the
admin's /push flow, while new users send /start at a steady rate.

Figures:
- broadcast pace = recipients / (last - first successful copyMessage, stand-in clock);
- 429s over every method and the whole run; copies per recipient (exactly one each);
- /start -> reply time (p50/p95) of the users who wrote while the broadcast ran, and the
  free budget's requests/s in that window (everything but the paid copies);
- CPU per copy: this process's CPU time (the bot, and the driver polling the stand-in a few
  times a second) over the broadcast / copies.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter

from bad_days import densest
from common import (
    ADMIN_ID,
    PACED_METHODS,
    BotRun,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    bot_settings,
    command_line,
    count_status,
    emit,
    percentile,
    postgres_database,
    rate,
    seed_audience,
    sqlite_database,
    statuses,
)
from push_pace import Broadcast, delivered_count, push_through_bot, standin_args
from tgstandin.world import Call

PACE_GOAL = 950.0
REPLY_P95_GOAL = 1.0
FREE_BUDGET = 30.0
DATABASES = {"postgresql": ("PostgreSQL", postgres_database), "sqlite": ("SQLite", sqlite_database)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="BROADCAST_RATE (paid)")
    parser.add_argument(
        "--newcomer-rate", type=float, default=5.0, help="new users sending /start per second"
    )
    parser.add_argument(
        "--latency", type=float, nargs=2, default=(0.03, 0.12), metavar=("LOW", "HIGH")
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="what-if: BROADCAST_WORKERS (default: derived from the rate)",
    )
    parser.add_argument("--database", choices=sorted(DATABASES), default="postgresql")
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default: scaled)")
    add_common_options(parser)
    return parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        args.recipients = min(args.recipients, 3000)
    if args.timeout is None:
        args.timeout = args.recipients / 200 + 120
    command = command_line("paid_pace.py", argv)
    _, database = DATABASES[args.database]
    latency = (float(args.latency[0]), float(args.latency[1]))
    with (
        StandInProcess(*standin_args(latency, args.seed)) as standin,
        database() as database_url,
    ):
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        recipients = tg.add_users(args.recipients)
        expected_seconds = args.recipients / args.rate + 10
        newcomers = tg.add_users(math.ceil(args.newcomer_rate * expected_seconds))
        overrides: dict[str, object] = {"paid_broadcast": True, "broadcast_rate": args.rate}
        if args.workers is not None:
            overrides["broadcast_workers"] = args.workers
        settings = bot_settings(tg, database_url, **overrides)
        bot = BotRun(tg, settings)
        seed_audience(bot.factory, recipients, bulk=True)
        with bot:
            b = push_through_bot(
                bot, standin, recipients, newcomers, args.newcomer_rate, args.timeout
            )
    result = describe(b, args, command, settings.effective_broadcast_workers)
    emit(result, args.json)
    return 0


def describe(b: Broadcast, args: argparse.Namespace, command: str, workers: int) -> Result:
    n429 = count_status(b.calls, 429)
    copies_per_chat = Counter(
        c.chat_id for c in b.calls if c.method == "copyMessage" and c.status == 200
    )
    not_once = [chat for chat in b.recipients if copies_per_chat.get(chat, 0) != 1]
    delivered = delivered_count(b.report)
    samples = b.reply_times()
    times = [t for _, t in samples if t is not None]
    unanswered = sum(1 for _, t in samples if t is None)
    p95 = percentile(times, 0.95)
    free = free_budget_rate(b.calls, b.first, b.last)
    cpu_ms = 1000 * b.cpu.own / len(b.copies)
    database, _ = DATABASES[args.database]
    pace_ok = b.pace >= PACE_GOAL and n429 == 0 and not not_once
    rows = [
        Row(
            f"paid /push, {args.recipients:,} recipients, BROADCAST_RATE={args.rate:g} "
            f"({workers} workers), Telegram's limits, 30-120 ms latency, {database}",
            f"{b.pace:,.0f} msg/s ({len(b.copies):,} copies in {b.last - b.first:.1f} s; "
            f"{cpu_ms:.3f} ms CPU per copy), {n429} × 429, "
            f"{len(b.recipients) - len(not_once):,}/{len(b.recipients):,} reached exactly once",
            f"≥ {PACE_GOAL:g} msg/s, 0 × 429, everyone once",
            pace_ok,
            command,
        ),
        Row(
            f"/start → reply during that paid /push ({args.newcomer_rate:g} new users/s)",
            f"p50 {percentile(times, 0.5):.2f} s, p95 {p95:.2f} s, max "
            f"{max(times, default=math.nan):.2f} s (n={len(times)}, {unanswered} unanswered); "
            f"free budget {free:.1f} requests/s",
            f"p95 ≤ {REPLY_P95_GOAL:g} s, free budget ≤ {FREE_BUDGET:g}/s, 0 × 429",
            p95 <= REPLY_P95_GOAL and free <= FREE_BUDGET and n429 == 0 and not unanswered,
            command,
        ),
    ]
    details = [
        f"- `{command}`: {b.cpu.describe()}.",
        f"  Report: “{' '.join(b.report.get('text', '').split())[:160]}” (delivered {delivered}).",
        f"  Press → first copy {b.first - b.pressed_at:.2f} s; all calls: {statuses(b.calls)}.",
    ]
    if not_once:
        details.append(f"  {len(not_once)} recipients not reached exactly once: {not_once[:10]}")
    details += paid_flood_evidence(b.calls)
    data = {
        "pace": b.pace,
        "copies": len(b.copies),
        "span": b.last - b.first,
        "429": n429,
        "not_once": len(not_once),
        "reply_p50": percentile(times, 0.5),
        "reply_p95": p95,
        "reply_samples": len(times),
        "unanswered": unanswered,
        "free_budget_rate": free,
        "cpu_ms_per_copy": cpu_ms,
        "workers": workers,
    }
    return Result("paid_pace", rows, details, None, data)


def paid_flood_evidence(calls: list[Call], limit: int = 4) -> list[str]:
    """What the stand-in's log shows around each 429 (at most `limit`): the paid copies it
    served in the 50 ms before (its bucket takes 1,000/s with a burst of 50), and the densest
    50 ms of paid copies in the whole run."""
    paid = sorted(
        c.at
        for c in calls
        if c.method == "copyMessage" and c.status == 200 and c.params.get("allow_paid_broadcast")
    )
    lines = [
        f"  429 on {flood.method} to chat {flood.chat_id} (“{flood.description}”): "
        f"{sum(1 for t in paid if flood.at - 0.05 <= t < flood.at)} paid copies in the 50 ms "
        "before it"
        for flood in [c for c in calls if c.status == 429][:limit]
    ]
    if paid:
        lines.append(f"  Densest 50 ms of paid copies at the stand-in: {densest(paid, 0.05)}.")
    return lines


def free_budget_rate(calls: list[Call], first: float, last: float) -> float:
    """Requests/s of the per-bot free budget between `first` and `last`: every paced call
    but the copies sent with allow_paid_broadcast."""
    spent = sum(
        1
        for c in calls
        if first <= c.at <= last
        and c.method in PACED_METHODS
        and not c.params.get("allow_paid_broadcast")
    )
    return rate(spent, first, last)


if __name__ == "__main__":
    sys.exit(main())
