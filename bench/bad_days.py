"""Issue #8: Telegram's bad days, played against the real bot.

Every scenario gets a fresh stand-in process with Telegram's limits ON (30/s per bot burst
10, ~1/s per chat burst 3, 1000/s paid burst 50) and 30-120 ms latency, a fresh database
(PostgreSQL on a throwaway server when its binaries are found, else SQLite, with a note),
and the real bot (Runtime + BotThread, polling: the code path of `pushbot run`). The admin
is played through /push -> Send; people through the stand-in's control endpoint.

1. outage: N subscribers; /push; some seconds after Send every Bot API method (getUpdates
   included) answers 502 for a while. Delivered, failed, purged, copies per chat, 502s,
   total time, and whether the bot's progress said "Telegram unreachable since" meanwhile
   (`runtime.broadcaster.progress(uuid).unreachable_since`, polled every 0.1 s). A user who
   sends /start during the outage must be answered afterwards.
2. transient: 5 % of sendMessage and copyMessage calls answer 502. New users /start (each
   must get exactly one reply), then a /push to them (each must get exactly one copy).
3. paid: PAID_BROADCAST=true, BROADCAST_RATE=1000. New users /start as fast as the driver
   can send them: 429s over every method, replies, time to the last reply, reply rate.
4. pace: a /push at Telegram's limits with the default (free) settings: msg/s, 429s over
   every method and 429s in the admin's chat.

Copies and replies are counted from the stand-in's own call log (status 200 only: an
injected 502 is never carried out), so they are what the people actually received.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any
from uuid import UUID

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
    postgres_database,
    postgres_database_named,
    rate,
    seed_audience,
    sqlite_database,
    statuses,
)
from push_pace import PACE_GOAL, paced_breakdown, push_through_bot, standin_args
from pushbot.bot import render
from pushbot.broadcast.engine import Broadcaster
from pushbot.broadcast.progress import Progress
from pushbot.db import queries
from tgstandin.remote import RemoteStandIn
from tgstandin.world import Call, JsonDict

SCENARIOS = ("outage", "transient", "paid", "pace")
UNREACHABLE_PHRASE = "Telegram unreachable since"
FINISHED_PHRASE = "Broadcast finished"
INJECT_THREADS = 4
WATCH_INTERVAL = 0.1
# After everything was answered: how long to keep looking for a second (duplicate) reply.
SETTLE_SECONDS = 2.0


# --- plumbing ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario contributes to the result."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


DatabaseFor = Callable[[str], str]


def postgres_available() -> bool:
    from tests.fixtures.postgres import EXTERNAL_URL_VARIABLE, find_server_binaries

    return bool(os.environ.get(EXTERNAL_URL_VARIABLE, "").strip()) or (
        find_server_binaries() is not None
    )


@contextlib.contextmanager
def databases(force_sqlite: bool) -> Iterator[tuple[str, DatabaseFor]]:
    """(what it is, name -> a fresh database URL): PostgreSQL databases on one throwaway
    server when possible, else a SQLite file per scenario."""
    with contextlib.ExitStack() as stack:
        if not force_sqlite and postgres_available():
            server_url = stack.enter_context(postgres_database("bad_days"))
            yield "PostgreSQL", lambda name: postgres_database_named(server_url, name)
            return
        if not force_sqlite:
            print(
                "note: no PostgreSQL server binaries (initdb, pg_ctl, postgres) and no "
                "PUSHBOT_TEST_POSTGRES_URL: the bot runs on SQLite instead",
                flush=True,
            )
        yield "SQLite", lambda name: stack.enter_context(sqlite_database())


@contextlib.contextmanager
def stand_in(args: argparse.Namespace) -> Iterator[tuple[StandInProcess, RemoteStandIn]]:
    """A stand-in process at Telegram's limits with the admin in it. A scenario that fails
    inside gets the stand-in's call counts attached to its error (the evidence)."""
    latency = (float(args.latency[0]), float(args.latency[1]))
    with StandInProcess(*standin_args(latency, args.seed)) as standin:
        tg = standin.tg
        assert tg is not None
        tg.add_user(ADMIN_ID, first_name="Ada", username="ada")
        try:
            yield standin, tg
        except Exception as exc:
            with contextlib.suppress(Exception):
                exc.add_note(f"stand-in calls so far: {flat_stats(tg.stats())}")
            raise


def flat_stats(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    return {f"{m} {s}": n for m, by_status in stats.items() for s, n in by_status.items()}


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Like common.wait_until, but says whether it happened instead of raising."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def send_starts(control_url: str, users: Sequence[int]) -> tuple[float, float]:
    """Every user sends /start once, as fast as INJECT_THREADS control connections go;
    returns (first sent, last sent), monotonic."""
    stamps: list[float] = []
    lock = threading.Lock()

    def send(chunk: Sequence[int]) -> None:
        with RemoteStandIn(control_url) as tg:
            for user in chunk:  # bounded: one call per user
                tg.send_text(user, "/start")
                with lock:
                    stamps.append(time.monotonic())

    first_try = time.monotonic()
    chunks = [users[i::INJECT_THREADS] for i in range(INJECT_THREADS)]
    workers = [threading.Thread(target=send, args=(c,), daemon=True) for c in chunks if c]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    if len(stamps) != len(users):
        raise RuntimeError(f"only {len(stamps)} of {len(users)} /start were sent")
    return (min(stamps, default=first_try), max(stamps, default=first_try))


def per_chat(calls: Sequence[Call], method: str, chats: Sequence[int]) -> dict[int, int]:
    """Successful calls of `method` per chat, for every chat in `chats` (0 included)."""
    wanted = set(chats)
    counts: Counter[int] = Counter()
    for call in calls:
        if call.method == method and call.status == 200 and call.chat_id in wanted:
            assert isinstance(call.chat_id, int)
            counts[call.chat_id] += 1
    return {chat: counts[chat] for chat in chats}


def spread(counts: dict[int, int]) -> str:
    """ "max 1, 0 chats ≠ 1 (0 with none, 0 with 2+)"."""
    none = sum(1 for n in counts.values() if n == 0)
    many = sum(1 for n in counts.values() if n > 1)
    return (
        f"max {max(counts.values(), default=0)}, {none + many} chats ≠ 1 "
        f"({none} with none, {many} with 2+)"
    )


def report_number(report: JsonDict, label: str) -> int | None:
    found = re.search(rf"{label}: (\d+)", report.get("text", ""))
    return int(found.group(1)) if found else None


def report_pace(report: JsonDict) -> float | None:
    found = re.search(r"· ([\d.]+) msg/s", report.get("text", ""))
    return float(found.group(1)) if found else None


def one_line(report: JsonDict) -> str:
    return " ".join(report.get("text", "").split())


def by_method(calls: Sequence[Call], status: int) -> dict[str, int]:
    counter: Counter[str] = Counter(c.method for c in calls if c.status == status)
    return dict(sorted(counter.items()))


def wait_for_job(broadcaster: Broadcaster, timeout: float = 30.0) -> UUID:
    found: list[UUID] = []

    def started() -> bool:
        active = broadcaster.active()
        if active is not None:
            found.append(active.uuid)
        return bool(found)

    if not poll_until(started, timeout, interval=0.02):
        raise TimeoutError(f"no broadcast job started within {timeout:g} s of Send")
    return found[0]


def all_429s(tg: RemoteStandIn) -> int:
    return sum(by_status.get("429", 0) for by_status in tg.stats().values())


def flood_evidence(calls: Sequence[Call], origin: float, limit: int = 4) -> list[str]:
    """What the stand-in's log shows around each 429 (at most `limit` of them): the free
    budget's calls it served just before (30/s with a burst of 10 is what it accepts), the
    largest gap among them (a stall) and how many came right after it (the bunch)."""
    free = [
        c.at
        for c in calls
        if c.method in PACED_METHODS
        and c.status == 200
        and c.params.get("allow_paid_broadcast") is not True
    ]
    lines: list[str] = []
    for flood in [c for c in calls if c.status == 429][:limit]:
        last_second = [t for t in free if flood.at - 1.0 <= t < flood.at]
        window = [t for t in free if flood.at - 2.0 <= t < flood.at]
        gap, gap_end = max(((b - a, b) for a, b in pairwise(window)), default=(0.0, flood.at))
        bunch = sum(1 for t in window if t >= gap_end)
        lines.append(
            f"  429 on {flood.method} to chat {flood.chat_id} at {flood.at - origin:.2f} s "
            f"(“{flood.description}”): the stand-in had served {len(last_second)} free-budget "
            f"calls in the second before it, "
            f"{sum(1 for t in last_second if t >= flood.at - 0.5)} in the last 0.5 s; the largest "
            f"gap among them in the 2 s before was {1000 * gap:.0f} ms, followed by {bunch} "
            f"calls in {flood.at - gap_end:.2f} s."
        )
    if lines:
        lines.append(
            f"  Densest second of free-budget calls in the whole run: {densest(free, 1.0)} "
            f"(densest 0.5 s: {densest(free, 0.5)})."
        )
    return lines


def densest(times: Sequence[float], width: float) -> int:
    best, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] < moment - width:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- 1. outage -----------------------------------------------------------------------------------


@dataclass
class Watch:
    """Polls the broadcaster's progress of one push on a thread (every WATCH_INTERVAL)."""

    broadcaster: Broadcaster
    uuid: UUID
    first_seen: float | None = None  # monotonic: first progress with unreachable_since set
    last_seen: float | None = None
    since: datetime | None = None
    rendered: str = ""  # the status text the bot would show at the first sighting
    failed_while_held: int = 0
    purged_while_held: int = 0
    samples: int = 0
    last: Progress | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watch:
        self._thread = threading.Thread(target=self._run, name="progress-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            progress = self.broadcaster.progress(self.uuid)
            if progress is None:
                continue
            self.samples += 1
            self.last = progress
            if progress.unreachable_since is None:
                continue
            now = time.monotonic()
            if self.first_seen is None:
                self.first_seen = now
                self.since = progress.unreachable_since
                self.rendered = render.render_progress(progress)
            self.last_seen = now
            self.failed_while_held = max(self.failed_while_held, progress.failed)
            self.purged_while_held = max(self.purged_while_held, progress.purged)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def wait_until_everyone_answered(tg: RemoteStandIn, users: list[int]) -> None:
    """Every user has had a reply recorded by the stand-in (bounded by a 30/s pace)."""
    wanted = set(users)

    def everyone_answered() -> bool:
        if tg.count("sendMessage", 200) < len(users):
            return False
        answered = {c.chat_id for c in tg.calls("sendMessage") if c.status == 200}
        return wanted <= answered

    poll_until(everyone_answered, len(users) / 20 + 120, interval=0.5)


def scenario_outage(args: argparse.Namespace, database_url: str, command: str) -> Outcome:
    size, outage, after = args.subscribers, args.outage, args.outage_after
    timeout = size / 20 + outage + 180
    with stand_in(args) as (standin, tg):
        recipients = tg.add_users(size)
        late_user = tg.add_user()
        bot = BotRun(tg, bot_settings(tg, database_url))
        seed_audience(bot.factory, recipients)
        with bot:
            broadcaster = bot.runtime.broadcaster
            confirm = bot.ask_push("Bad day: an outage")
            cpu = CpuMeter(standin.pid).start()
            pressed = bot.press(confirm, "push:send")
            uuid = wait_for_job(broadcaster)
            watch = Watch(broadcaster, uuid).start()
            try:
                sleep_until(pressed + after)
                sent_before = tg.count("copyMessage", 200)
                outage_wall = datetime.now(UTC)
                outage_at = time.monotonic()
                tg.start_outage(outage, kind="502")
                outage_end = outage_at + outage
                sleep_until(outage_at + outage / 2)
                late_sent = time.monotonic()
                tg.send_text(late_user, "/start")  # arrives while Telegram is down
                report = bot.wait_report(confirm["message_id"], FINISHED_PHRASE, timeout)
                finished = time.monotonic()
            finally:
                watch.stop()
            cpu.stop()
            final = broadcaster.progress(uuid)
            late_answered = poll_until(
                lambda: any(c.status == 200 for c in calls_to(tg, "sendMessage", late_user)),
                120.0,
            )
            time.sleep(1.0)  # trailing bookkeeping calls
            calls = tg.calls()
            with bot.factory.begin() as session:
                audience = queries.audience_counts(session)
    copies = per_chat(calls, "copyMessage", recipients)
    delivered = sum(1 for n in copies.values() if n >= 1)
    admin_copies = per_chat(calls, "copyMessage", [ADMIN_ID])[ADMIN_ID]
    n502 = count_status(calls, 502)
    failed = final.failed if final is not None else None
    purged = final.purged if final is not None else None
    failed_by_reason = final.failed_by_reason if final is not None else {}
    late_reply = min(
        (c.at for c in calls if c.method == "sendMessage" and c.chat_id == late_user), default=None
    )
    unreachable_edits = [
        f"{c.status} at {c.at - outage_at:+.1f} s"
        for c in calls
        if c.method == "editMessageText" and UNREACHABLE_PHRASE in str(c.params.get("text", ""))
    ]
    shown = watch.first_seen is not None and UNREACHABLE_PHRASE in watch.rendered
    copies_ok = all(n == 1 for n in copies.values())
    met = (
        copies_ok
        and failed == 0
        and purged == 0
        and audience.purged == 0
        and shown
        and late_answered
        and report_number(report, "Failed") == 0
    )
    if watch.first_seen is not None:
        seen = (
            f"yes, {watch.first_seen - outage_at:.1f} s into the outage until "
            f"{(watch.last_seen or watch.first_seen) - outage_end:+.1f} s after its end"
        )
    else:
        seen = "**no**"
    figure = (
        f"delivered {delivered}/{size}, failed {failed}, purged {purged}; copies per chat "
        f"{spread(copies)}; {n502} × 502; {finished - pressed:.1f} s Send → report; "
        f"“unreachable since” shown: {seen}"
    )
    row = Row(
        f"outage: {size} subscribers, every method 502 for {outage:g} s from {after:g} s "
        "after Send",
        figure,
        "everyone exactly once, 0 failed, 0 purged, “unreachable since” shown",
        met,
        command,
    )
    since_text = f"{watch.since:%H:%M:%S} UTC" if watch.since else "—"
    details = [
        f"- outage: {sent_before} copies were out when Telegram went down at "
        f"{outage_wall:%H:%M:%S} UTC for {outage:g} s; the breaker said unreachable since "
        f"{since_text}; while held, failed stayed at {watch.failed_while_held} and purged at "
        f"{watch.purged_while_held} ({watch.samples} progress samples).",
        f"  Status text at the first sighting: “{' / '.join(watch.rendered.splitlines())}”.",
        f"  Status edits carrying “unreachable since” (the admin sees them once answered): "
        f"{', '.join(unreachable_edits) or 'none'} (status at seconds from the outage's "
        "start).",
        f"  Report: “{one_line(report)[:200]}”. Failed by reason: {failed_by_reason or 'none'}; "
        f"chats purged in the database afterwards: {audience.purged}.",
        f"  copyMessage calls to the admin's chat: {admin_copies}.",
        f"  502s by method: {by_method(calls, 502)}.",
        "  A /start sent mid-outage ("
        + (
            f"answered {late_reply - outage_end:+.1f} s after the outage ended, "
            f"{late_reply - late_sent:.1f} s after it was sent"
            if late_reply is not None and late_answered
            else "**never answered**"
        )
        + ").",
        f"  First copy after the outage: {first_after(calls, recipients, outage_end)}; "
        f"{cpu.describe()}.",
        f"  All calls: {statuses(calls)}.",
    ]
    data = {
        "delivered": delivered,
        "failed": failed,
        "purged": purged,
        "copies_max": max(copies.values(), default=0),
        "chats_not_once": sum(1 for n in copies.values() if n != 1),
        "502": n502,
        "seconds": finished - pressed,
        "unreachable_shown": shown,
        "late_start_answered": late_answered,
    }
    return Outcome([row], details, data)


def calls_to(tg: RemoteStandIn, method: str, chat_id: int) -> list[Call]:
    return [c for c in tg.calls(method) if c.chat_id == chat_id]


def first_after(calls: Sequence[Call], recipients: Sequence[int], moment: float) -> str:
    wanted = set(recipients)
    after = [
        c.at
        for c in calls
        if c.method == "copyMessage" and c.status == 200 and c.chat_id in wanted and c.at >= moment
    ]
    return f"{min(after) - moment:+.1f} s after its end" if after else "none"


# --- 2. transient 502s ---------------------------------------------------------------------------


def scenario_transient(args: argparse.Namespace, database_url: str, command: str) -> Outcome:
    size, fault_rate = args.transient_users, args.fault_rate
    faulted = ("sendMessage", "copyMessage")
    with stand_in(args) as (_standin, tg):
        users = tg.add_users(size)
        bot = BotRun(tg, bot_settings(tg, database_url))
        with bot:
            tg.inject_faults(kind="502", rate=fault_rate, methods=faulted)
            first_sent, last_sent = send_starts(tg.control_url, users)
            wait_until_everyone_answered(tg, users)
            wanted = set(users)
            time.sleep(SETTLE_SECONDS)
            start_calls = tg.calls()
            confirm = bot.ask_push("Bad day: one request in twenty fails")
            pressed = bot.press(confirm, "push:send")
            report = bot.wait_report(confirm["message_id"], FINISHED_PHRASE, size / 20 + 180)
            finished = time.monotonic()
            time.sleep(SETTLE_SECONDS)
            tg.inject_faults(rate=0.0)
            calls = tg.calls()
    replies = per_chat(start_calls, "sendMessage", users)
    lost_replies = sum(1 for n in replies.values() if n == 0)
    double_replies = sum(1 for n in replies.values() if n > 1)
    last_reply = max(
        (c.at for c in start_calls if c.method == "sendMessage" and c.chat_id in wanted),
        default=math.nan,
    )
    start_502 = sum(
        1
        for c in start_calls
        if c.method == "sendMessage" and c.status == 502 and c.chat_id in wanted
    )
    copies = per_chat(calls, "copyMessage", users)
    lost_copies = sum(1 for n in copies.values() if n == 0)
    double_copies = sum(1 for n in copies.values() if n > 1)
    copy_502 = sum(
        1 for c in calls if c.method == "copyMessage" and c.status == 502 and c.at >= pressed
    )
    failed = report_number(report, "Failed")
    purged = report_number(report, "Purged from the audience")
    rows = [
        Row(
            f"transient: {fault_rate:.0%} of sendMessage 502, {size} new users /start",
            f"lost replies: {lost_replies}, duplicate replies: {double_replies} "
            f"({start_502} × 502 on replies)",
            "every user exactly one reply",
            lost_replies == 0 and double_replies == 0,
            command,
        ),
        Row(
            f"transient: {fault_rate:.0%} of copyMessage 502, /push to those {size}",
            f"lost recipients: {lost_copies}, duplicates: {double_copies}, failed {failed}, "
            f"purged {purged} ({copy_502} × 502 on copies)",
            "everyone exactly one copy, 0 failed",
            lost_copies == 0 and double_copies == 0 and failed == 0 and purged == 0,
            command,
        ),
    ]
    details = [
        f"- transient: the {size} /start were sent within {last_sent - first_sent:.2f} s; "
        f"the last reply came {last_reply - first_sent:.1f} s after the first /start.",
        f"  Report: “{one_line(report)[:200]}” ({finished - pressed:.1f} s Send → report).",
        f"  502s by method over the run: {by_method(calls, 502)}; 429s: "
        f"{by_method(calls, 429) or 'none'}.",
        f"  All calls: {statuses(calls)}.",
        *flood_evidence(calls, first_sent),
    ]
    if lost_replies or double_replies:
        details.append(
            "  Users without exactly one reply: "
            + ", ".join(f"{u}: {n}" for u, n in replies.items() if n != 1)[:400]
        )
    if lost_copies or double_copies:
        details.append(
            "  Recipients without exactly one copy: "
            + ", ".join(f"{u}: {n}" for u, n in copies.items() if n != 1)[:400]
        )
    data = {
        "lost_replies": lost_replies,
        "duplicate_replies": double_replies,
        "lost_recipients": lost_copies,
        "duplicate_copies": double_copies,
        "reply_502": start_502,
        "copy_502": copy_502,
    }
    return Outcome(rows, details, data)


# --- 3. paid broadcasts, a /start rush -----------------------------------------------------------


def scenario_paid(args: argparse.Namespace, database_url: str, command: str) -> Outcome:
    size = args.paid_users
    with stand_in(args) as (standin, tg):
        users = tg.add_users(size)
        settings = bot_settings(tg, database_url, paid_broadcast=True, broadcast_rate=1000.0)
        bot = BotRun(tg, settings)
        with bot:
            cpu = CpuMeter(standin.pid).start()
            first_sent, last_sent = send_starts(tg.control_url, users)
            wait_until_everyone_answered(tg, users)
            wanted = set(users)
            cpu.stop()
            time.sleep(SETTLE_SECONDS)
            calls = tg.calls()
            n429 = all_429s(tg)
    replies = per_chat(calls, "sendMessage", users)
    answered = sum(1 for n in replies.values() if n >= 1)
    doubles = sum(1 for n in replies.values() if n > 1)
    reply_times = sorted(
        c.at for c in calls if c.method == "sendMessage" and c.status == 200 and c.chat_id in wanted
    )
    first_reply, last_reply = (
        (reply_times[0], reply_times[-1]) if reply_times else (math.nan, math.nan)
    )
    reply_rate = rate(len(reply_times), first_reply, last_reply) if reply_times else 0.0
    row = Row(
        f"paid: PAID_BROADCAST=true, BROADCAST_RATE=1000; {size:,} new users /start in "
        f"{last_sent - first_sent:.1f} s",
        f"{n429} × 429 (every method); replies {answered:,}/{size:,}; last reply "
        f"{last_reply - first_sent:.1f} s after the first /start; {reply_rate:.1f} replies/s",
        f"0 × 429, {size:,} replies",
        n429 == 0 and answered == size and doubles == 0,
        command,
    )
    details = [
        f"- paid: first reply {first_reply - first_sent:.2f} s after the first /start; "
        f"{doubles} users got more than one reply; {cpu.describe()}.",
        f"  429s by method: {by_method(calls, 429) or 'none'}; all calls: {statuses(calls)}.",
        *flood_evidence(calls, first_sent),
    ]
    if answered < size:
        missing = [u for u, n in replies.items() if n == 0]
        details.append(f"  {len(missing)} users never got a reply, e.g. {missing[:10]}.")
    data = {
        "429": n429,
        "replies": answered,
        "duplicates": doubles,
        "last_reply_after": last_reply - first_sent,
        "reply_rate": reply_rate,
        "inject_span": last_sent - first_sent,
    }
    return Outcome([row], details, data)


# --- 4. the free pace ----------------------------------------------------------------------------


def scenario_pace(args: argparse.Namespace, database_url: str, command: str) -> Outcome:
    size = args.pace_recipients
    with stand_in(args) as (standin, tg):
        recipients = tg.add_users(size)
        bot = BotRun(tg, bot_settings(tg, database_url))
        # The admin is subscribed too: their chat gets the status, their own copy and the
        # progress edits within a second, which is where a 429 used to come from.
        seed_audience(bot.factory, [ADMIN_ID, *recipients])
        with bot:
            b = push_through_bot(bot, standin, recipients, [], 0.0, size / 20 + 120)
            time.sleep(SETTLE_SECONDS)
            calls = tg.calls()
    n429 = count_status(calls, 429)
    admin_calls = [c for c in calls if c.chat_id == ADMIN_ID]
    admin_429 = sum(1 for c in admin_calls if c.status == 429)
    copies = per_chat(calls, "copyMessage", recipients)
    pace = b.pace
    pace_in_report = report_pace(b.report)
    met = (
        pace >= PACE_GOAL and n429 == 0 and admin_429 == 0 and all(n == 1 for n in copies.values())
    )
    row = Row(
        f"pace: /push to {size} and the admin at Telegram's limits, 30-120 ms latency",
        f"{pace:.2f} msg/s ({len(b.copies)} copies in {b.last - b.first:.1f} s; report: "
        f"{pace_in_report} msg/s); {n429} × 429 (every method), {admin_429} × 429 in the "
        "admin's chat",
        f"≥ {PACE_GOAL:g} msg/s, 0 × 429, 0 in the admin's chat",
        met,
        command,
    )
    admin_summary = Counter(f"{c.method} {c.status}" for c in admin_calls)
    details = [
        f"- pace: {paced_breakdown(b)}; {b.cpu.describe()}.",
        f"  Report: “{one_line(b.report)[:200]}”; copies per chat {spread(copies)}.",
        f"  The admin's chat: {dict(sorted(admin_summary.items()))}.",
        f"  429s by method: {by_method(calls, 429) or 'none'}; all calls: {statuses(calls)}.",
        *flood_evidence(calls, b.pressed_at),
    ]
    if admin_429:
        first = min(c.at for c in admin_calls if c.status == 429)
        around = [c for c in admin_calls if abs(c.at - first) <= 3.0]
        details.append(
            "  The admin's chat around its first 429: "
            + "; ".join(
                f"{c.at - first:+.2f} s {c.method} {c.status}"
                + (f" ({c.description})" if c.description else "")
                for c in around
            )
        )
    data = {
        "pace": pace,
        "report_pace": pace_in_report,
        "429": n429,
        "admin_429": admin_429,
        "copies": len(b.copies),
    }
    return Outcome([row], details, data)


RUNNERS: dict[str, Callable[[argparse.Namespace, str, str], Outcome]] = {
    "outage": scenario_outage,
    "transient": scenario_transient,
    "paid": scenario_paid,
    "pace": scenario_pace,
}


def run_scenario(
    name: str, args: argparse.Namespace, database_for: DatabaseFor, command: str
) -> Outcome:
    """One scenario in a fresh stand-in and database; a failure becomes a FAILED row (with
    its traceback and the stand-in's call counts) and the next scenario still runs."""
    started = time.monotonic()
    print(f"  {name}: running…", flush=True)
    try:
        outcome = RUNNERS[name](args, database_for(f"bad_days_{name}"), command)
    except Exception as exc:
        text = "".join(traceback.format_exception_only(exc)).strip()
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        outcome = Outcome(
            [Row(f"{name}", f"FAILED: {text.splitlines()[0][:200]}", "—", False, command)],
            [f"- {name} failed: " + " / ".join(text.splitlines())],
            {"error": text},
        )
    elapsed = time.monotonic() - started
    outcome.details.append(f"  ({name} took {elapsed:.0f} s of wall time)")
    outcome.data["wall_seconds"] = elapsed
    print(f"  {name}: done in {elapsed:.0f} s", flush=True)
    return outcome


# --- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="in order"
    )
    parser.add_argument("--subscribers", type=int, default=800, help="outage: audience")
    parser.add_argument("--outage", type=float, default=20.0, help="outage: seconds of 502s")
    parser.add_argument(
        "--outage-after", type=float, default=5.0, help="outage: seconds after Send it starts"
    )
    parser.add_argument("--transient-users", type=int, default=500, help="transient: users")
    parser.add_argument(
        "--fault-rate", type=float, default=0.05, help="transient: share of sends answered 502"
    )
    parser.add_argument("--paid-users", type=int, default=3000, help="paid: /start rush size")
    parser.add_argument("--pace-recipients", type=int, default=300, help="pace: audience")
    parser.add_argument(
        "--latency", type=float, nargs=2, default=(0.03, 0.12), metavar=("LOW", "HIGH")
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite even if PostgreSQL is found")
    add_common_options(parser)
    return parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def apply_quick(args: argparse.Namespace) -> None:
    if not args.quick:
        return
    args.subscribers = min(args.subscribers, 200)
    args.outage = min(args.outage, 5.0)
    args.transient_users = min(args.transient_users, 100)
    args.paid_users = min(args.paid_users, 300)
    args.pace_recipients = min(args.pace_recipients, 100)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    apply_quick(args)
    command = command_line("bad_days.py", argv)
    print(f"# bad_days: `{command}`", flush=True)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with databases(args.sqlite) as (database_kind, database_for):
        print(f"  database: {database_kind}", flush=True)
        for name in args.scenarios:
            outcomes.append(run_scenario(name, args, database_for, command))
    elapsed = time.monotonic() - started
    details = [
        f"- `{command}`: stand-in processes at Telegram's limits (30/s, burst 10; 1/s per "
        f"chat, burst 3; paid 1000/s), latency {args.latency[0]:g}-{args.latency[1]:g} s; "
        f"the bot on {database_kind}; {elapsed:.0f} s in all.",
    ]
    data: dict[str, Any] = {"database": database_kind, "wall_seconds": elapsed}
    rows: list[Row] = []
    for name, outcome in zip(args.scenarios, outcomes, strict=True):
        rows += outcome.rows
        details += outcome.details
        data[name] = outcome.data
    emit(Result("bad_days", rows, details, None, data), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
