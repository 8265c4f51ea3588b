"""`pushbot demo`: the real bot at work against a simulated Telegram, no token needed.

It starts the Bot API stand-in with a crowd of simulated people, runs the real bot
(the same code path as `pushbot run`) against it on an embedded SQLite database, plays the
people and an admin through /start, /stop, /push, /edit, /undo, a silent push scheduled for
the German speakers, and /stats, and prints what they saw.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pushbot.config import Settings
from pushbot.db.queries import AudienceCounts
from pushbot.logs import configure_logging, token_secrets
from pushbot.runtime import BotThread, Runtime
from tgstandin.server import StandIn, StandInConfig

ADMIN_ID = 1000
WAIT = 120.0
STATUS_SAMPLE_SECONDS = 4.0
# A scheduled start within this of its time is on time (the demo polls the stand-in).
ON_TIME_SECONDS = 1.0


def say(who: str, text: str) -> None:
    indented = text.replace("\n", "\n" + " " * 14)
    print(f"{who:>12}: {indented}")


def run_demo(users: int = 500, fast: bool = False) -> int:
    config = StandInConfig(latency=(0.0, 0.0) if fast else (0.03, 0.12), limits_enabled=not fast)
    with tempfile.TemporaryDirectory(prefix="pushbot-demo-") as workdir, StandIn(config) as tg:
        settings = Settings(
            bot_token=tg.token,
            admin_ids=frozenset({ADMIN_ID}),
            database_url=f"sqlite:///{Path(workdir) / 'pushbot.sqlite3'}",
            telegram_base_url=tg.base_url,
            broadcast_rate=1000.0 if fast else 29.8,
            log_level="WARNING",
        )
        configure_logging(settings.log_level, token_secrets(settings.bot_token))
        runtime = Runtime.create(settings)
        try:
            tg.add_user(ADMIN_ID, first_name="Ada", username="ada_admin")
            with BotThread(runtime):
                _play(tg, runtime, users)
        finally:
            runtime.close()
    return 0


def _play(tg: StandIn, runtime: Runtime, users: int) -> None:
    print(
        f"== A simulated Telegram on {tg.base_url.rsplit('/', 1)[0]} with {users} people "
        "and one admin; the real bot polls it.\n"
    )
    people = tg.add_users(users, start_id=5000)
    german = people[1 : 1 + max(1, users // 8)]
    for user_id in german:
        tg.set_user_language(user_id, "de")
    _step(f"Everyone sends /start ({len(german)} of them use Telegram in German)")
    first = tg.send_text(people[0], "/start")
    del first
    for user_id in people[1:]:
        tg.send_text(user_id, "/start")
    say("Alice", "/start")
    say("bot", tg.wait_for_message(people[0], timeout=WAIT)["text"])
    _wait_until(
        lambda: all(tg.inbox(u) for u in people),
        "every /start answered",
        lambda: sum(1 for u in people if tg.inbox(u)),
        len(people),
    )
    blocked, deactivated, stopped = people[-20:], people[-30:-20], people[-35:-30]
    _step(
        f"{len(stopped)} send /stop, {len(blocked)} block the bot, {len(deactivated)} delete "
        "their accounts (Telegram tells the bot nothing about those)"
    )
    for user_id in stopped:
        tg.send_text(user_id, "/stop")
    for user_id in blocked:
        tg.set_user_state(user_id, "blocked")
    for user_id in deactivated:
        tg.set_user_state(user_id, "deactivated", notify=False)
    _wait_until(
        lambda: _audience(runtime).subscribed == users - 25,
        "the audience to settle",
        lambda: _audience(runtime).subscribed,
        users - 25,
    )
    counts = _audience(runtime)
    print(
        f"   audience: {counts.subscribed} subscribed, {counts.unsubscribed} unsubscribed, "
        f"{counts.purged} purged\n"
    )

    _step("The admin broadcasts with /push")
    tg.send_text(ADMIN_ID, "/push")
    say("Ada", "/push")
    say("bot", tg.wait_for_message(ADMIN_ID, timeout=WAIT)["text"])
    announcement = "🎉 Version 2 is out! Reply /help to see what is new."
    tg.send_text(ADMIN_ID, announcement)
    say("Ada", announcement)
    confirm = tg.wait_for_message(ADMIN_ID, lambda m: "reply_markup" in m, timeout=WAIT)
    say("bot", "[preview] " + announcement)
    say("bot", confirm["text"] + "   [✅ Send] [✖️ Cancel]")
    tg.press_button(ADMIN_ID, ADMIN_ID, confirm["message_id"], "push:send")
    say("Ada", "presses ✅ Send")
    started = time.monotonic()
    report = _await_report(tg, "Broadcast finished", confirm["message_id"])
    say("bot", report["text"])
    exact = _one_copy_each(tg, people, stopped + blocked + deactivated)
    print(f"   ({time.monotonic() - started:.1f} s; exactly one copy per subscriber: {exact})\n")
    say("Bob", "receives: " + tg.inbox(people[1])[-1].get("text", ""))
    counts = _audience(runtime)
    print(
        f"   audience now: {counts.subscribed} subscribed, {counts.purged} purged "
        "(the deactivated accounts were purged by the broadcast)\n"
    )

    carol = people[2]
    _step("Carol deletes her copy; the admin spots a mistake and replies /edit to the report")
    tg.user_deletes_message(carol, tg.inbox(carol)[-1]["message_id"])
    _wait_stored(tg, runtime, report["message_id"])
    tg.send_text(ADMIN_ID, "/edit", reply_to_message_id=report["message_id"])
    say("Ada", "/edit  (as a reply to the report)")
    ask = tg.wait_for_message(ADMIN_ID, lambda m: "corrected text" in m.get("text", ""), WAIT)
    say("bot", ask["text"])
    correction = "🎉 Version 2 is out! Send /help to see what is new."
    tg.send_text(ADMIN_ID, correction)
    say("Ada", correction)
    apply = tg.wait_for_message(ADMIN_ID, lambda m: "Apply the" in m.get("text", ""), WAIT)
    say("bot", "[preview] " + correction)
    say("bot", apply["text"] + "   [✅ Apply] [✖️ Cancel]")
    tg.press_button(ADMIN_ID, ADMIN_ID, apply["message_id"], "edit:apply")
    say("Ada", "presses ✅ Apply")
    edited = _await_report(tg, "Broadcast edited", apply["message_id"])
    say("bot", edited["text"])
    say("Bob", "now reads: " + tg.inbox(people[1])[-1].get("text", ""))
    print("   (Carol's deleted copy counts as unchanged; nobody got a second message)\n")

    _step("The admin replies /undo to the edit's report")
    _wait_stored(tg, runtime, edited["message_id"])
    tg.send_text(ADMIN_ID, "/undo", reply_to_message_id=edited["message_id"])
    say("Ada", "/undo  (as a reply to the report)")
    ask = tg.wait_for_message(ADMIN_ID, lambda m: "Delete it" in m.get("text", ""), timeout=WAIT)
    say("bot", ask["text"] + "   [🗑 Retract] [✖️ Keep]")
    data = ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    tg.press_button(ADMIN_ID, ADMIN_ID, ask["message_id"], data)
    say("Ada", "presses 🗑 Retract")
    done = _await_report(tg, "retracted", ask["message_id"])
    say("bot", done["text"])
    left = sum(1 for u in people if any(m.get("copied_from") for m in tg.inbox(u)))
    print(f"   copies still visible anywhere: {left}\n")
    _schedule_for_german_speakers(tg, runtime)

    _step("`pushbot history` now shows")
    _print_history(runtime)
    print()

    _step("The admin asks for /stats")
    mark = max(m["message_id"] for m in tg.inbox(ADMIN_ID))
    tg.send_text(ADMIN_ID, "/stats")
    say("Ada", "/stats")
    numbers = tg.wait_for_message(
        ADMIN_ID, lambda m: m["message_id"] > mark and "Statistics" in m.get("text", ""), WAIT
    )
    say("bot", numbers["text"])
    chart = tg.wait_for_message(ADMIN_ID, lambda m: m["message_id"] > mark and "photo" in m, WAIT)
    say("bot", f"[photo: {chart.get('caption', '')}]")
    print("\n== Done: that was the real bot, end to end, over HTTP on loopback.")


def _schedule_for_german_speakers(tg: StandIn, runtime: Runtime) -> None:
    _step("The admin schedules a silent push to the German speakers, a few seconds ahead")
    mark = max(m["message_id"] for m in tg.inbox(ADMIN_ID))
    text = "Guten Tag! Version 2 ist da."
    tg.send_text(ADMIN_ID, f"/push {text}")
    say("Ada", f"/push {text}")
    confirm = tg.wait_for_message(
        ADMIN_ID, lambda m: m["message_id"] > mark and "Send it?" in m.get("text", ""), WAIT
    )
    confirm_id = confirm["message_id"]
    _press(tg, confirm_id, "push:audience", "Who should receive it?")
    say("Ada", "presses 👥 Audience")
    say("bot", _with_buttons(tg.message(ADMIN_ID, confirm_id) or {}))
    _press(tg, confirm_id, "push:seg:language:de", "Send it?")
    say("Ada", "presses “language de” and 🔔 Silent")
    shown = _press(tg, confirm_id, "push:silent", "🔕")
    say("bot", shown)
    _press(tg, confirm_id, "push:schedule", "When should it go out?")
    say("Ada", "presses 🗓 Schedule…")
    say("bot", (tg.message(ADMIN_ID, confirm_id) or {}).get("text", ""))
    mark = max(m["message_id"] for m in tg.inbox(ADMIN_ID))
    tg.send_text(ADMIN_ID, "in 10s")
    say("Ada", "in 10s")
    scheduled = tg.wait_for_message(
        ADMIN_ID,
        lambda m: m["message_id"] > mark and m.get("text", "").startswith("🗓 Scheduled"),
        WAIT,
    )
    say("bot", _with_buttons(scheduled))
    _wait_stored(tg, runtime, scheduled["message_id"])
    push = runtime.broadcasts.find_by_message(ADMIN_ID, scheduled["message_id"])
    assert push is not None and push.scheduled_at is not None
    started = tg.wait_for_message(
        ADMIN_ID,
        lambda m: m["message_id"] > scheduled["message_id"] and "starts now" in m.get("text", ""),
        WAIT,
    )
    started_at = datetime.now(UTC)
    say("bot", started["text"])
    late = (started_at - push.scheduled_at).total_seconds()
    verdict = "on time" if late < ON_TIME_SECONDS else "late"
    print(
        f"   due {push.scheduled_at:%H:%M:%S} UTC, started {started_at:%H:%M:%S} UTC "
        f"({late:+.1f} s): {verdict}"
    )
    report = _await_report(tg, "Broadcast finished", scheduled["message_id"])
    say("bot", report["text"])
    print()


def _press(tg: StandIn, message_id: int, data: str, until: str) -> str:
    """The admin presses a button; the message's text once it shows `until`."""
    tg.press_button(ADMIN_ID, ADMIN_ID, message_id, data)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = str((tg.message(ADMIN_ID, message_id) or {}).get("text", ""))
        if until in text:
            return text
        time.sleep(0.05)
    raise TimeoutError(f"the message never showed {until!r}")


def _with_buttons(message: dict[str, Any]) -> str:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    labels = "\n".join(" ".join(f"[{b['text']}]" for b in row) for row in rows)
    return str(message.get("text", "")) + ("\n" + labels if labels else "")


def _audience(runtime: Runtime) -> AudienceCounts:
    return runtime.broadcasts.audience()


def _await_report(tg: StandIn, phrase: str, status_message_id: int) -> dict[str, Any]:
    """Show the live status message as the admin sees it, until the report arrives."""
    shown = ""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        report = _newest(
            tg, lambda m: phrase in m.get("text", "") and m["message_id"] > status_message_id
        )
        if report is not None:
            return report
        status = tg.message(ADMIN_ID, status_message_id) or {}
        text = status.get("text", "")
        if text != shown and "msg/s" in text:
            say("bot (live)", text)
            shown = text
        time.sleep(STATUS_SAMPLE_SECONDS)
    raise TimeoutError(f"no report containing {phrase!r}")


def _wait_stored(tg: StandIn, runtime: Runtime, report_message_id: int) -> None:
    """The bot records a report's (or a scheduled push's) message id right after posting
    it; a person replies later than that, the demo could look sooner."""
    tg.wait_for(
        lambda: runtime.broadcasts.find_by_message(ADMIN_ID, report_message_id) is not None,
        timeout=WAIT,
    )


def _newest(tg: StandIn, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((m for m in reversed(tg.inbox(ADMIN_ID)) if match(m)), None)


def _print_history(runtime: Runtime) -> None:
    from pushbot.bot.render import edited_line, excerpt, push_labels

    for row in runtime.broadcasts.recent(5):
        edited = edited_line(row.push)
        print(
            f"   {row.push.created_at:%H:%M:%S}  {row.push.status:10} delivered "
            f"{row.counts.sent}, failed {row.counts.failed}, removed {row.counts.retracted}  "
            f"{push_labels(row.push):24} "
            f"{excerpt(row.push.current_text, row.push.content_type, 40)}"
            + ("" if edited is None else f"  ({edited})")
        )


def _one_copy_each(tg: StandIn, people: list[int], excluded: list[int]) -> bool:
    copies: dict[int, int] = {}
    for call in tg.calls("copyMessage"):
        if call.status == 200 and isinstance(call.chat_id, int):
            copies[call.chat_id] = copies.get(call.chat_id, 0) + 1
    gone = set(excluded)
    return all(copies.get(u, 0) == (0 if u in gone else 1) for u in people)


def _step(title: str) -> None:
    print(f"-- {title}")


def _wait_until(done: Callable[[], bool], what: str, count: Callable[[], int], total: int) -> None:
    deadline = time.monotonic() + WAIT
    live = sys.stdout.isatty()
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        if live:
            print(f"\r   waiting for {what}: {count()}/{total}", end="", flush=True)
        time.sleep(0.5)
    print(("\r" if live else "") + f"   {what}: {count()}/{total}" + " " * 10)
