"""SIGKILL the real bot process mid-job (the next start carries on from the ledger) and with
replies still queued (the next start sends them from the outbox); SIGTERM it mid-job (it
stops at once, and the next start carries on)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from pushbot.bot.outbox import OUTBOX_SENDERS
from pushbot.bot.users import WELCOME
from pushbot.db import queries
from tests.fixtures.process import BotProcess
from tgstandin.server import StandIn

ADMIN = 1000
WORKERS = 30
RECIPIENTS = 300


def _seed_audience(factory: sessionmaker[Session], user_ids: list[int]) -> None:
    with factory.begin() as session:
        for user_id in user_ids:
            queries.subscribe_chat(
                session, queries.ChatInfo(id=user_id, type="private"), now=datetime.now(UTC)
            )


def _copies(tg: StandIn) -> Counter[int]:
    return Counter(
        c.chat_id
        for c in tg.calls("copyMessage")
        if c.status == 200 and isinstance(c.chat_id, int) and c.chat_id != ADMIN
    )


def _start_bot(tg: StandIn, proc: BotProcess, db_url: str) -> None:
    proc.env.update(
        BOT_TOKEN=tg.token,
        TELEGRAM_BASE_URL=tg.base_url,
        ADMIN_IDS=str(ADMIN),
        DATABASE_URL=db_url,
        BROADCAST_WORKERS=str(WORKERS),
        LOG_LEVEL="INFO",
    )
    proc.start()


def _launch_push(tg: StandIn) -> int:
    tg.send_text(ADMIN, "/push Survive a crash")
    confirm = tg.wait_for_message(ADMIN, lambda m: "Send it?" in m.get("text", ""), timeout=30)
    tg.press_button(ADMIN, ADMIN, confirm["message_id"], "push:send")
    return int(confirm["message_id"])


def _wait_until_report_stored(
    tg: StandIn, factory: sessionmaker[Session], report_message_id: int
) -> None:
    """The bot stores a report's id once Telegram returned it; an admin cannot reply to the
    report sooner than that, a test can (and its /undo or /edit would find no broadcast)."""

    def stored() -> bool:
        with factory.begin() as session:
            found = queries.find_push_by_message(session, ADMIN, report_message_id)
        return found is not None

    tg.wait_for(stored)


def test_sigkill_mid_broadcast_loses_nobody_and_duplicates_at_most_the_workers(
    standin: StandIn, bot_process: BotProcess, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    standin.add_user(ADMIN)
    users = standin.add_users(RECIPIENTS)
    _seed_audience(session_factory, users)
    _start_bot(standin, bot_process, db_url)
    _launch_push(standin)
    standin.wait_for(lambda: len(_copies(standin)) >= RECIPIENTS // 3, timeout=60)
    bot_process.kill()
    delivered_before = len(_copies(standin))
    assert delivered_before < RECIPIENTS, "the kill should land mid-broadcast"

    _start_bot(standin, bot_process, db_url)
    standin.wait_for_message(ADMIN, lambda m: "resuming" in m.get("text", ""), timeout=60)
    report = standin.wait_for_message(
        ADMIN, lambda m: "Broadcast finished" in m.get("text", ""), timeout=90
    )

    copies = _copies(standin)
    assert set(copies) == set(users), "every recipient got the message"
    duplicates = sum(n - 1 for n in copies.values())
    assert duplicates <= WORKERS, f"{duplicates} duplicates"
    # The report counts the whole push, the copies sent before the kill included.
    assert f"Delivered: {RECIPIENTS}" in report["text"].splitlines()
    with session_factory.begin() as session:
        (push,) = queries.recent_pushes(session, 1)
    assert push.push.status == "done"
    assert push.counts.sent == RECIPIENTS and push.counts.pending == 0


def test_sigterm_mid_broadcast_stops_at_once_and_the_next_start_carries_on(
    standin: StandIn, bot_process: BotProcess, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    """At Telegram's 30/s these recipients take 100 s: the bot must not wait for the
    broadcast to end before it exits (a service manager would SIGKILL it after its timeout)."""
    recipients = 3000
    standin.add_user(ADMIN)
    users = standin.add_users(recipients)
    _seed_audience(session_factory, users)
    _start_bot(standin, bot_process, db_url)
    _launch_push(standin)
    standin.wait_for(lambda: len(_copies(standin)) >= 60, timeout=60)
    stopped_at = time.monotonic()
    bot_process.runs[-1].send_signal(signal.SIGTERM)
    assert bot_process.runs[-1].wait(30) == 0
    assert time.monotonic() - stopped_at < 15, "the bot waited for its broadcast"

    # A clean stop leaves no copy in doubt: what went out is recorded, the rest is pending.
    delivered = _copies(standin)
    assert max(delivered.values()) == 1
    with session_factory.begin() as session:
        (push,) = queries.recent_pushes(session, 1)
    assert push.push.status == "running"
    assert push.counts.sent == len(delivered) < recipients
    assert push.counts.pending == recipients - len(delivered)

    _start_bot(standin, bot_process, db_url)
    standin.wait_for_message(ADMIN, lambda m: "resuming" in m.get("text", ""), timeout=60)
    standin.wait_for(lambda: len(_copies(standin)) >= len(delivered) + 30, timeout=60)
    assert max(_copies(standin).values()) == 1, "a copy sent before the stop went out again"


def test_sigkill_mid_undo_carries_on_with_only_what_is_left(
    standin: StandIn, bot_process: BotProcess, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    standin.add_user(ADMIN)
    users = standin.add_users(RECIPIENTS)
    _seed_audience(session_factory, users)
    _start_bot(standin, bot_process, db_url)
    status_id = _launch_push(standin)
    report = standin.wait_for_message(
        ADMIN,
        lambda m: "Broadcast finished" in m.get("text", "") and m["message_id"] > status_id,
        timeout=90,
    )

    _wait_until_report_stored(standin, session_factory, report["message_id"])
    standin.send_text(ADMIN, "/undo", reply_to_message_id=report["message_id"])
    ask = standin.wait_for_message(ADMIN, lambda m: "Delete it" in m.get("text", ""), timeout=30)
    standin.press_button(
        ADMIN,
        ADMIN,
        ask["message_id"],
        ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
    )

    def deletes() -> int:
        return sum(1 for c in standin.calls("deleteMessage") if c.status == 200)

    standin.wait_for(lambda: deletes() >= RECIPIENTS // 3, timeout=60)
    bot_process.kill()
    assert deletes() < RECIPIENTS

    _start_bot(standin, bot_process, db_url)
    standin.wait_for_message(
        ADMIN,
        lambda m: "retracted" in m.get("text", "").lower() and "Removed" in m.get("text", ""),
        timeout=90,
    )
    assert all(not any(m.get("copied_from") for m in standin.inbox(u)) for u in users)
    per_chat = Counter(c.params["chat_id"] for c in standin.calls("deleteMessage"))
    assert sum(n - 1 for n in per_chat.values()) <= WORKERS
    with session_factory.begin() as session:
        (row,) = queries.recent_pushes(session, 1)
    assert row.push.status == "retracted" and row.push.deleted
    assert row.counts.retracted == RECIPIENTS


def test_sigkill_mid_edit_resumes_with_only_what_is_left(
    standin: StandIn, bot_process: BotProcess, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    standin.add_user(ADMIN)
    users = standin.add_users(RECIPIENTS)
    _seed_audience(session_factory, users)
    _start_bot(standin, bot_process, db_url)
    status_id = _launch_push(standin)
    report = standin.wait_for_message(
        ADMIN,
        lambda m: "Broadcast finished" in m.get("text", "") and m["message_id"] > status_id,
        timeout=90,
    )

    _wait_until_report_stored(standin, session_factory, report["message_id"])
    standin.send_text(ADMIN, "/edit", reply_to_message_id=report["message_id"])
    standin.wait_for_message(ADMIN, lambda m: "corrected text" in m.get("text", ""), timeout=30)
    standin.send_text(ADMIN, "Survived a crash, corrected")
    confirm = standin.wait_for_message(
        ADMIN, lambda m: "Apply the correction?" in m.get("text", ""), timeout=30
    )
    standin.press_button(ADMIN, ADMIN, confirm["message_id"], "edit:apply")

    def edits() -> Counter[int]:
        return Counter(
            int(c.params["chat_id"])
            for c in standin.calls("editMessageText")
            if c.status == 200 and int(c.params["chat_id"]) != ADMIN
        )

    standin.wait_for(lambda: sum(edits().values()) >= RECIPIENTS // 3, timeout=60)
    bot_process.kill()
    assert sum(edits().values()) < RECIPIENTS, "the kill should land mid-edit"

    _start_bot(standin, bot_process, db_url)
    standin.wait_for_message(ADMIN, lambda m: "resuming the edit" in m.get("text", ""), timeout=60)
    edited = standin.wait_for_message(
        ADMIN, lambda m: "Broadcast edited" in m.get("text", ""), timeout=90
    )

    # Every copy edited exactly once: an edit sent again after the crash (at most the
    # workers' in flight) answers "not modified" and counts as unchanged.
    assert edits() == Counter(users)
    for user in users:
        [copy] = [m for m in standin.inbox(user) if m.get("copied_from")]
        assert copy["text"] == "Survived a crash, corrected"
    with session_factory.begin() as session:
        (row,) = queries.recent_pushes(session, 1)
    assert row.push.status == "done" and row.push.edited_at is not None
    counts = row.counts
    assert counts.edited + counts.edit_unchanged == RECIPIENTS and counts.edit_failed == 0
    assert counts.edit_unchanged <= WORKERS
    assert set(counts.edit_unchanged_by_reason) <= {"already had this text"}
    assert f"Edited {counts.edited} · Unchanged {counts.edit_unchanged}" in edited["text"]


def test_sigkill_with_replies_queued_sends_them_after_the_restart(
    standin: StandIn, bot_process: BotProcess, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    """A rush at Telegram's 30/s: every /start is recorded (with its welcome owed) long
    before the welcomes are sent. Killed then, the bot sends the rest at its next start: no
    user without a welcome, none told "already subscribed", at most one reply per outbox
    sender twice (sent just before the kill, its row not yet gone)."""
    standin.add_user(ADMIN)
    users = standin.add_users(RECIPIENTS)
    _start_bot(standin, bot_process, db_url)
    standin.wait_for(lambda: standin.count("setMyCommands", 200) >= 1, timeout=60)
    standin.send_texts(users, "/start")

    def recorded() -> int:
        with session_factory.begin() as session:
            return queries.audience_size(session)

    standin.wait_for(lambda: recorded() == RECIPIENTS, timeout=60)
    standin.wait_for(lambda: standin.count("sendMessage", 200) >= 30, timeout=30)
    bot_process.kill()
    sent_before = standin.count("sendMessage", 200)
    with session_factory.begin() as session:
        owed = queries.owed_replies(session)
    assert sent_before < RECIPIENTS and owed, "the kill should land with replies queued"

    _start_bot(standin, bot_process, db_url)
    standin.wait_for(lambda: all(standin.inbox(u) for u in users), timeout=90)

    per_user = {u: [m["text"] for m in standin.inbox(u)] for u in users}
    assert all(text == WELCOME for texts in per_user.values() for text in texts)
    duplicates = sum(len(texts) - 1 for texts in per_user.values())
    assert duplicates <= OUTBOX_SENDERS, f"{duplicates} welcomes sent twice"
    standin.wait_for(lambda: not _owed(session_factory), timeout=30)
    assert "sending" in bot_process.output() and "owed since before the restart" in (
        bot_process.output()
    )


def _owed(factory: sessionmaker[Session]) -> list[queries.OwedReply]:
    with factory.begin() as session:
        return queries.owed_replies(session)
