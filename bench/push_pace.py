"""Issue #3, benchmark 1: broadcast pace at Telegram's limits, and /start replies meanwhile.

The stand-in runs as a separate process with Telegram's flood limits on (30/s per bot,
~1/s per chat) and 30-120 ms latency. The real bot (Runtime + BotThread, default settings:
broadcast_rate 29.8, SQLite in a temp dir) broadcasts to N subscribed chats through the
admin's /push flow, while new users send /start at a steady rate.

Figures:
- broadcast pace = recipients / (last - first successful copyMessage, stand-in clock);
- 429 count over every method and the whole run;
- /start -> reply time (p50/p95) of the users who wrote while the broadcast ran; the reply
  time is the stand-in's record of the bot's sendMessage to that user.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field

from common import (
    ADMIN_ID,
    PACED_METHODS,
    BotRun,
    CpuMeter,
    Result,
    Row,
    StandInProcess,
    add_common_options,
    bot_settings,
    command_line,
    count_status,
    emit,
    percentile,
    rate,
    seed_audience,
    sqlite_database,
    statuses,
    wait_until,
)
from pushbot.config import DEFAULT_BROADCAST_RATE
from tgstandin.remote import RemoteStandIn
from tgstandin.world import Call, JsonDict

PACE_GOAL = 29.0


@dataclass
class Newcomers:
    """New users sending /start at `per_second`, from their own control connection."""

    control_url: str
    users: list[int]
    per_second: float
    sent: list[tuple[int, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Newcomers:
        if self.per_second > 0 and self.users:
            self._thread = threading.Thread(target=self._run, name="newcomers", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / self.per_second
        next_at = time.monotonic()
        with RemoteStandIn(self.control_url) as tg:
            for user in self.users:  # bounded: at most len(users) sends
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    return
                sent_at = time.monotonic()
                tg.send_text(user, "/start")
                self.sent.append((user, sent_at))
                next_at += interval

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


@dataclass
class Broadcast:
    report: JsonDict
    pressed_at: float
    recipients: list[int]
    copies: list[float]  # stand-in times of the successful copies to recipients, sorted
    newcomers_sent: list[tuple[int, float]]
    cpu: CpuMeter
    calls: list[Call]
    idle_times: list[float]

    @property
    def first(self) -> float:
        return self.copies[0]

    @property
    def last(self) -> float:
        return self.copies[-1]

    @property
    def pace(self) -> float:
        return rate(len(self.copies), self.first, self.last)

    def reply_times(self) -> list[tuple[float, float | None]]:
        """(sent_at, seconds to the reply or None) of the newcomers who wrote while the
        broadcast ran (between its first and last copy)."""
        replied: dict[int, float] = {}
        for call in self.calls:
            if call.method == "sendMessage" and call.status == 200:
                chat = call.chat_id
                if isinstance(chat, int) and chat not in replied:
                    replied[chat] = call.at
        samples: list[tuple[float, float | None]] = []
        for user, sent_at in self.newcomers_sent:
            if self.first <= sent_at <= self.last:
                reply = replied.get(user)
                samples.append((sent_at, None if reply is None else reply - sent_at))
        return samples


def idle_reply_times(tg: RemoteStandIn, users: list[int], timeout: float = 30.0) -> list[float]:
    """/start -> reply with nothing else going on, one user at a time (the baseline)."""
    times: list[float] = []
    for user in users:
        sent_at = time.monotonic()
        tg.send_text(user, "/start")
        deadline = sent_at + timeout
        while True:
            replies = [
                c.at for c in tg.calls("sendMessage") if c.chat_id == user and c.status == 200
            ]
            if replies:
                times.append(min(replies) - sent_at)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to /start of {user} within {timeout:g} s")
            time.sleep(0.05)
        time.sleep(0.2)
    return times


def push_through_bot(
    bot: BotRun,
    standin: StandInProcess,
    recipients: list[int],
    newcomers: list[int],
    newcomer_rate: float,
    timeout: float,
    idle_users: list[int] | None = None,
) -> Broadcast:
    """(Baseline /start replies of an idle bot), then the admin's /push -> Send; new users
    /start meanwhile; wait for the report."""
    tg = bot.tg
    idle_times = idle_reply_times(tg, idle_users or [])
    confirm = bot.ask_push("Benchmark broadcast: please ignore")
    crowd = Newcomers(standin_url(standin), newcomers, newcomer_rate)
    cpu = CpuMeter(standin.pid).start()
    crowd.start()
    try:
        pressed_at = bot.press(confirm, "push:send")
        report = bot.wait_report(confirm["message_id"], "Broadcast finished", timeout)
    finally:
        crowd.stop()
    cpu.stop()
    # Every /start sent gets its answer (bounded wait).
    expected = {user for user, _ in crowd.sent}

    def all_answered() -> bool:
        answered = {c.chat_id for c in tg.calls("sendMessage") if c.status == 200}
        return expected <= answered

    wait_until(all_answered, 60.0, "the newcomers' replies", interval=0.5)
    calls = tg.calls()
    wanted = set(recipients)
    copies = sorted(
        c.at for c in calls if c.method == "copyMessage" and c.status == 200 and c.chat_id in wanted
    )
    if len(copies) < 2:
        raise RuntimeError(f"only {len(copies)} copies were delivered: {statuses(calls)}")
    return Broadcast(
        report, pressed_at, recipients, copies, list(crowd.sent), cpu, calls, idle_times
    )


def delivered_count(report: JsonDict) -> int:
    """The report's "Delivered: N" (new users who subscribed before the launch count too)."""
    found = re.search(r"Delivered: (\d+)", report.get("text", ""))
    return int(found.group(1)) if found else 0


def standin_url(standin: StandInProcess) -> str:
    assert standin.tg is not None
    return standin.tg.control_url


def standin_args(latency: tuple[float, float], seed: int) -> list[str]:
    """Telegram's limits (the stand-in defaults: 30/s burst 10, 1/s per chat burst 3)."""
    return ["--latency", str(latency[0]), str(latency[1]), "--seed", str(seed)]


def paced_breakdown(b: Broadcast) -> str:
    return paced_breakdown_of(b.calls, b.first, b.last)


def paced_breakdown_of(calls: list[Call], first: float, last: float) -> str:
    """How much of the per-bot budget the bot spent between `first` and `last`, and on what."""
    window = [c for c in calls if first <= c.at <= last and c.method in PACED_METHODS]
    by_method: dict[str, int] = {}
    for call in window:
        by_method[call.method] = by_method.get(call.method, 0) + 1
    shown = ", ".join(f"{m} {n}" for m, n in sorted(by_method.items()))
    return (
        f"{rate(len(window), first, last):.2f} requests/s spent from the per-bot budget "
        f"in that window ({shown})"
    )


def prepare(
    args: argparse.Namespace, standin: StandInProcess, database_url: str
) -> tuple[BotRun, list[int], list[int], list[int]]:
    """The admin, the recipients (seeded as subscribed), the newcomers and the users of the
    idle baseline in the stand-in; the bot (not started yet)."""
    tg = standin.tg
    assert tg is not None
    tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
    recipients = tg.add_users(args.recipients)
    expected_seconds = args.recipients / DEFAULT_BROADCAST_RATE + 15
    newcomer_count = min(args.max_newcomers, math.ceil(args.newcomer_rate * expected_seconds))
    newcomers = tg.add_users(newcomer_count) if newcomer_count else []
    idle_users = tg.add_users(args.idle_samples) if args.idle_samples else []
    overrides = {} if args.workers is None else {"broadcast_workers": args.workers}
    bot = BotRun(tg, bot_settings(tg, database_url, **overrides))
    seed_audience(bot.factory, recipients)
    return bot, recipients, newcomers, idle_users


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument(
        "--newcomer-rate", type=float, default=1.0, help="new users sending /start per second"
    )
    parser.add_argument("--max-newcomers", type=int, default=300, help="upper bound on them")
    parser.add_argument(
        "--idle-samples",
        type=int,
        default=10,
        help="/start replies timed before the broadcast (idle bot), one at a time",
    )
    parser.add_argument(
        "--latency", type=float, nargs=2, default=(0.03, 0.12), metavar=("LOW", "HIGH")
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="what-if: BROADCAST_WORKERS for the bot (default: the setting's default, 30)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default: scaled)")
    add_common_options(parser)
    return parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.recipients = min(args.recipients, 120)
        args.idle_samples = min(args.idle_samples, 3)
    if args.timeout is None:
        args.timeout = args.recipients / 20 + 60


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    apply_quick(args)
    command = command_line("push_pace.py", argv)
    with (
        StandInProcess(*standin_args(args.latency, args.seed)) as standin,
        sqlite_database() as database_url,
    ):
        bot, recipients, newcomers, idle_users = prepare(args, standin, database_url)
        with bot:
            b = push_through_bot(
                bot,
                standin,
                recipients,
                newcomers,
                args.newcomer_rate,
                args.timeout,
                idle_users if args.newcomer_rate > 0 else None,
            )
    result = describe(b, args, command)
    emit(result, args.json)
    return 0


def describe(b: Broadcast, args: argparse.Namespace, command: str) -> Result:
    n429 = count_status(b.calls, 429)
    delivered_all = delivered_count(b.report) >= len(b.recipients)
    samples = b.reply_times()
    times = [t for _, t in samples if t is not None]
    label = (
        f"/push pace, {args.recipients} recipients, {args.newcomer_rate:g} new user/s"
        if args.newcomer_rate > 0
        else f"/push pace, {args.recipients} recipients, no other traffic"
    )
    if args.workers is not None:
        label += f", what-if: {args.workers} broadcast workers"
    pace_ok = b.pace >= PACE_GOAL and n429 == 0 and delivered_all
    rows = [
        Row(
            label,
            f"{b.pace:.2f} msg/s ({len(b.copies)} copies in {b.last - b.first:.1f} s), "
            f"{n429} × 429",
            f"≥ {PACE_GOAL:g} msg/s, 0 × 429",
            pace_ok,
            command,
        )
    ]
    if args.newcomer_rate > 0:
        rows.append(
            Row(
                "/start → reply during a /push (limits on, 30-120 ms latency)",
                f"p50 {percentile(times, 0.5):.2f} s, p95 {percentile(times, 0.95):.2f} s, "
                f"max {max(times, default=math.nan):.2f} s (n={len(times)}); idle bot: "
                f"p50 {percentile(b.idle_times, 0.5):.2f} s, "
                f"max {max(b.idle_times, default=math.nan):.2f} s (n={len(b.idle_times)})",
                "reported (see #5)",
                None,
                command,
            )
        )
    unanswered = sum(1 for _, t in samples if t is None)
    details = [
        f"- `{command}`: {paced_breakdown(b)}; {b.cpu.describe()}.",
        f"  Report: “{' '.join(b.report.get('text', '').split())[:160]}”.",
        f"  Press → first copy {b.first - b.pressed_at:.2f} s; all calls: {statuses(b.calls)}.",
    ]
    if unanswered:
        details.append(f"  {unanswered} newcomer(s) got no reply.")
    data = {
        "pace": b.pace,
        "copies": len(b.copies),
        "span": b.last - b.first,
        "429": n429,
        "reply_p50": percentile(times, 0.5),
        "reply_p95": percentile(times, 0.95),
        "reply_samples": len(times),
        "idle_reply_times": b.idle_times,
        "delivered_all": delivered_all,
    }
    return Result("push_pace", rows, details, None, data)


if __name__ == "__main__":
    sys.exit(main())
