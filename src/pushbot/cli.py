"""`pushbot run | push [--at WHEN] [--segment SEGMENT] [--silent] [--protected] | edit |
undo | history | stats | demo`.

Bad settings end the command with one line naming the variable (exit code 2), never a
traceback; so does a database that cannot be used, and a token Telegram rejects. `pushbot run`
waits for a Telegram it cannot reach (see pushbot.startup).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from telegram import Bot, Message

from pushbot.config import ConfigError, Settings, load_settings
from pushbot.db.errors import (
    DatabaseUnavailable,
    explain_database_error,
    find_database_error,
    is_connection_error,
)
from pushbot.logs import configure_logging, token_secrets
from pushbot.transport import make_request

if TYPE_CHECKING:
    from pushbot.broadcast.engine import JobHandle
    from pushbot.broadcast.progress import JobReport, Progress
    from pushbot.runtime import Runtime

EXIT_CONFIG = 2
EXIT_REFUSED = 3
PROGRESS_REFRESH_SECONDS = 0.5


# The DATABASE_URL of the running command, for explaining a database error that reaches
# main() from any command (its handler loaded the settings, main() did not).
_database_url: str | None = None


def main(argv: Sequence[str] | None = None) -> int:
    from pushbot.startup import StartupStopped

    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"pushbot: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseUnavailable as exc:
        print(f"pushbot: database error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupStopped:
        return 0  # SIGTERM before the bot started: nothing to wind down
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A database that cannot be reached (or disappears) in any command: one line too.
        # Other database errors (a constraint, SQL) are bugs and keep their traceback.
        found = find_database_error(exc)
        if found is None or _database_url is None or not is_connection_error(found):
            raise
        reason = explain_database_error(found, _database_url)
        print(
            f"pushbot: database error: {DatabaseUnavailable(_database_url, reason)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushbot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", help="run the bot (polling, or webhook when WEBHOOK_URL is set)"
    ).set_defaults(handler=cmd_run)
    push = commands.add_parser(
        "push", help="broadcast a text to every subscriber (or a segment), now or scheduled"
    )
    push.add_argument("text", nargs="?", help="the text (read from stdin when omitted)")
    push.add_argument(
        "--at",
        metavar="WHEN",
        default=None,
        help="schedule it instead of sending now: 'in 2h', 'in 90m', '18:30' or "
        "'2026-12-01 09:00' (in DEFAULT_TIMEZONE); the running bot (`pushbot run`) sends it",
    )
    push.add_argument(
        "--segment",
        metavar="SEGMENT",
        default="all",
        help="who gets it: all (default), private, groups, language:<code> (e.g. language:de) "
        "or admins (a test send to the ADMIN_IDS chats on record)",
    )
    push.add_argument("--silent", action="store_true", help="send without a notification sound")
    push.add_argument(
        "--protected", action="store_true", help="forbid forwarding and saving the copies"
    )
    push.add_argument(
        "--admin-chat",
        type=int,
        default=None,
        help="admin chat that holds the source message and the report "
        "(default: the lowest of ADMIN_IDS)",
    )
    push.set_defaults(handler=cmd_push)
    edit = commands.add_parser("edit", help="correct a broadcast's text in every chat")
    edit.add_argument("uuid", type=UUID)
    edit.add_argument(
        "text", nargs="?", help="the corrected text or caption (read from stdin when omitted)"
    )
    edit.set_defaults(handler=cmd_edit)
    undo = commands.add_parser("undo", help="retract a broadcast from every chat")
    undo.add_argument("uuid", type=UUID)
    undo.set_defaults(handler=cmd_undo)
    history = commands.add_parser("history", help="recent broadcasts with their counts")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(handler=cmd_history)
    stats = commands.add_parser(
        "stats", help="the audience, its changes and the latest broadcasts in numbers"
    )
    stats.add_argument(
        "--chart",
        type=Path,
        metavar="FILE",
        default=None,
        help="also write the 90-day audience chart (PNG) to FILE",
    )
    stats.set_defaults(handler=cmd_stats)
    demo = commands.add_parser("demo", help="the bot at work against a simulated Telegram")
    demo.add_argument("--users", type=int, default=500)
    demo.add_argument("--fast", action="store_true", help="lift Telegram's limits in the demo")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _settings(require_token: bool = True) -> Settings:
    global _database_url
    settings = load_settings(require_token=require_token)
    configure_logging(settings.log_level, token_secrets(settings.bot_token))
    _database_url = settings.database_url
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from pushbot.bot.app import run
    from pushbot.db.errors import database_errors
    from pushbot.runtime import Runtime
    from pushbot.startup import (
        check_database,
        fetch_bot_user,
        keep_trying,
        quiet_ptb_noise,
    )

    settings = _settings()
    log = logging.getLogger("pushbot")
    # The database first: its problems are the operator's to fix, so they end start-up at
    # once (one line, nothing else printed), before any wait for Telegram.
    check_database(settings)
    quiet_ptb_noise()
    migrated = False

    def start_and_serve() -> None:
        """One attempt: getMe, then the bot until it is stopped. A network failure in
        either (also in ptb's own start-up calls: initialize's getMe, deleteWebhook,
        setWebhook) is raised to `keep_trying`, which waits and calls this again."""
        nonlocal migrated
        me = fetch_bot_user(settings)
        # A new Runtime per attempt: a failed start shut its broadcaster down for good.
        with database_errors(settings.database_url):
            runtime = Runtime.create(settings, migrate=not migrated)
        migrated = True
        log.info(
            "starting @%s: %s mode, %d admin(s), database %s",
            me.username,
            "webhook" if settings.uses_webhook else "polling",
            len(settings.admin_ids),
            settings.database_url.split("://", 1)[0],
        )
        # A loop of our own, closed afterwards: ptb's run leaves its loop open (with its
        # signal handlers installed) otherwise, and a retry needs a clean slate.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            run(runtime.build_bot(), settings)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            runtime.close()

    keep_trying(settings, start_and_serve)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from pushbot.bot.render import push_labels, render_push_report
    from pushbot.broadcast.engine import BroadcastBusy
    from pushbot.broadcast.schedule import InvalidTime, parse_when
    from pushbot.broadcast.service import utc_now
    from pushbot.db.queries import PushDraft
    from pushbot.db.segments import InvalidSegment, Segment
    from pushbot.runtime import Runtime

    settings = _settings()
    try:
        segment = Segment.parse(args.segment)
    except InvalidSegment as exc:
        return _bad_argument("--segment", str(exc))
    scheduled_at = None
    if args.at is not None:
        try:
            scheduled_at = parse_when(args.at, utc_now(), settings.default_timezone)
        except InvalidTime as exc:
            return _bad_argument("--at", str(exc))
    text = args.text if args.text is not None else sys.stdin.read().strip()
    if not text.strip():
        raise ConfigError("text", "the message to broadcast is empty")
    admin_chat = _admin_chat(settings, args.admin_chat)
    runtime = Runtime.create(settings)
    broadcasts = runtime.broadcasts
    options = {
        "segment": segment,
        "disable_notification": args.silent,
        "protect_content": args.protected,
    }
    if scheduled_at is not None:
        try:
            return _schedule_push(settings, runtime, admin_chat, text, scheduled_at, options)
        finally:
            broadcasts.shutdown()
            runtime.close()
    try:
        # The same rule as /push, across processes (the broadcast lease): a bot process or
        # another terminal that is sending or retracting keeps this one from starting,
        # before anything is sent to the admin.
        active = broadcasts.busy()
        if active is not None:
            return _refuse_busy(active)
        # The admin's copy is the source every recipient's copy is made from.
        source = _call_bot(settings, lambda bot: bot.send_message(admin_chat, text))
        broadcasts.start()
        draft = PushDraft(
            text=text,
            content_type="text",
            source_chat_id=admin_chat,
            source_message_id=source.message_id,
            admin_id=admin_chat,
            preview_message_id=source.message_id,
            **options,
        )
        try:
            handle = broadcasts.push(draft)
        except BroadcastBusy as busy:
            return _refuse_busy(busy.active)
        push = broadcasts.get(handle.uuid)
        print(f"broadcast {handle.uuid}" + (f" to {push_labels(push)}" if push else ""))
        summary = render_push_report(_follow(handle), push)
        print(summary)
        sent = _call_bot(settings, lambda bot: bot.send_message(admin_chat, summary))
        broadcasts.report_posted(handle.uuid, sent.message_id)
        return 0
    finally:
        broadcasts.shutdown()
        runtime.close()


def _schedule_push(
    settings: Settings,
    runtime: Runtime,
    admin_chat: int,
    text: str,
    scheduled_at: datetime,
    options: dict[str, Any],
) -> int:
    """Store the push as scheduled (the source message goes to the admin's chat now, with a
    message to Cancel or Send it now from the bot); the running bot sends it on time."""
    from pushbot.bot.render import push_labels, render_scheduled, scheduled_keyboard
    from pushbot.broadcast.schedule import describe_when
    from pushbot.db.queries import PushDraft

    broadcasts = runtime.broadcasts
    source = _call_bot(settings, lambda bot: bot.send_message(admin_chat, text))
    push = broadcasts.schedule(
        PushDraft(
            text=text,
            content_type="text",
            source_chat_id=admin_chat,
            source_message_id=source.message_id,
            admin_id=admin_chat,
            preview_message_id=source.message_id,
            scheduled_at=scheduled_at,
            **options,
        )
    )
    zone, now = settings.default_timezone, broadcasts.clock()
    shown = render_scheduled(push, zone, broadcasts.audience_size(push.segment), now)
    posted = _call_bot(
        settings,
        lambda bot: bot.send_message(
            admin_chat,
            shown,
            reply_to_message_id=source.message_id,
            reply_markup=scheduled_keyboard(push.uuid),
        ),
    )
    broadcasts.show_status_in(push.uuid, admin_chat, posted.message_id)
    print(
        f"scheduled {push.uuid} for {describe_when(scheduled_at, zone, now)} "
        f"to {push_labels(push)}; the running bot (`pushbot run`) sends it then"
    )
    return 0


def _bad_argument(name: str, problem: str) -> int:
    print(f"pushbot: {name}: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def _refuse_busy(active: Progress) -> int:
    from pushbot.broadcast.engine import UNKNOWN_PUSH
    from pushbot.broadcast.progress import JobKind

    if active.uuid == UNKNOWN_PUSH:
        print("pushbot: another broadcast is running; one at a time.", file=sys.stderr)
    else:
        doing = {JobKind.RETRACT: "retracting", JobKind.EDIT: "being edited"}.get(
            active.kind, "running"
        )
        print(f"pushbot: broadcast {active.uuid} is still {doing}; one at a time.", file=sys.stderr)
    return EXIT_REFUSED


def cmd_edit(args: argparse.Namespace) -> int:
    from pushbot.bot.render import render_edit_report
    from pushbot.broadcast.engine import BroadcastBusy
    from pushbot.broadcast.service import (
        CannotEdit,
        EditCheck,
        EditVerdict,
        InvalidEditText,
        UnknownBroadcast,
        edit_text_problem,
    )
    from pushbot.runtime import Runtime

    refusals = {
        EditVerdict.ALREADY_RETRACTED: "it is retracted: nothing left to edit",
        EditVerdict.NOT_DONE: "it is not finished yet",
        EditVerdict.CANCELLED: "it was cancelled part-way: retract it and push the corrected one",
        EditVerdict.NO_TEXT: "it has no text or caption to correct",
        EditVerdict.NOTHING_DELIVERED: "no copy was delivered: nothing to edit",
    }

    def refuse(check: EditCheck) -> int:
        print(f"pushbot: broadcast {args.uuid}: {refusals[check.verdict]}", file=sys.stderr)
        return EXIT_REFUSED

    settings = _settings()
    text = args.text if args.text is not None else sys.stdin.read().strip()
    runtime = Runtime.create(settings)
    broadcasts = runtime.broadcasts
    try:
        try:
            check = broadcasts.check_edit(args.uuid)
        except UnknownBroadcast:
            print(f"pushbot: no broadcast {args.uuid}", file=sys.stderr)
            return EXIT_REFUSED
        if check.verdict is not EditVerdict.EDIT:
            return refuse(check)
        problem = edit_text_problem(check.push.content_type, text)
        if problem is not None:
            raise ConfigError("text", problem)
        # The same rule as /edit, across processes: one job at a time.
        active = broadcasts.busy()
        if active is not None:
            return _refuse_busy(active)
        broadcasts.start()
        try:
            handle = broadcasts.edit(args.uuid, text)
        except CannotEdit as refused:
            return refuse(refused.check)
        except InvalidEditText as invalid:
            raise ConfigError("text", str(invalid)) from None
        except BroadcastBusy as busy:
            return _refuse_busy(busy.active)
        report = _follow(handle)
        print(render_edit_report(report, text))
        return 0
    finally:
        broadcasts.shutdown()
        runtime.close()


def cmd_undo(args: argparse.Namespace) -> int:
    from pushbot.bot.render import render_retract_report
    from pushbot.broadcast.engine import BroadcastBusy
    from pushbot.broadcast.service import CannotRetract, UndoCheck, UndoVerdict, UnknownBroadcast
    from pushbot.runtime import Runtime

    def refuse(check: UndoCheck) -> int:
        if check.verdict is UndoVerdict.ALREADY_RETRACTED:
            print(f"broadcast {args.uuid} is already retracted")
            return 0
        if check.verdict is UndoVerdict.NOTHING_DELIVERED:
            print(f"broadcast {args.uuid} delivered no copy: nothing to retract")
            return 0
        print(
            "pushbot: older than 48 hours: Telegram no longer lets bots delete it",
            file=sys.stderr,
        )
        return EXIT_REFUSED

    settings = _settings()
    runtime = Runtime.create(settings)
    broadcasts = runtime.broadcasts
    try:
        try:
            check = broadcasts.check_undo(args.uuid)
        except UnknownBroadcast:
            print(f"pushbot: no broadcast {args.uuid}", file=sys.stderr)
            return EXIT_REFUSED
        if check.verdict is not UndoVerdict.RETRACT:
            return refuse(check)
        broadcasts.start()
        try:
            handle = broadcasts.undo(args.uuid)
        except CannotRetract as refused:
            return refuse(refused.check)
        except BroadcastBusy as exc:
            print(
                f"pushbot: broadcast {exc.active.uuid} is still being sent; one at a time.",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        print(render_retract_report(_follow(handle)))
        return 0
    finally:
        broadcasts.shutdown()
        runtime.close()


def cmd_history(args: argparse.Namespace) -> int:
    from pushbot.bot.render import edited_line, excerpt, push_labels
    from pushbot.db.models import PushStatus
    from pushbot.runtime import Runtime

    runtime = Runtime.create(_settings(require_token=False))
    try:
        rows = runtime.broadcasts.recent(args.limit)
    finally:
        runtime.close()
    if not rows:
        print("no broadcasts yet")
        return 0
    print(
        f"{'created (UTC)':16}  {'uuid':36}  {'status':10}  {'sent':>6}  {'failed':>6}  "
        f"{'removed':>7}  {'audience':32}  text"
    )
    for row in rows:
        push, counts = row.push, row.counts
        edited = edited_line(push)
        audience = push_labels(push)
        if push.status is PushStatus.SCHEDULED and push.scheduled_at is not None:
            audience += f" · due {push.scheduled_at:%Y-%m-%d %H:%M}"
        print(
            f"{push.created_at:%Y-%m-%d %H:%M}  {push.uuid!s:36}  {push.status:10}  "
            f"{counts.sent:>6}  {counts.failed:>6}  {counts.retracted:>7}  {audience:32}  "
            f"{excerpt(push.current_text, push.content_type, 40)}"
            + ("" if edited is None else f"  ({edited})")
        )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from pushbot.bot.render import render_stats
    from pushbot.runtime import Runtime

    runtime = Runtime.create(_settings(require_token=False))
    try:
        report = runtime.stats.report()
    finally:
        runtime.close()
    print(render_stats(report))
    if args.chart is None:
        return 0
    chart = runtime.stats.chart(report)
    try:
        args.chart.write_bytes(chart)
    except OSError as exc:
        print(f"pushbot: cannot write the chart to {args.chart}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"\nChart: {args.chart} ({report.chart_caption})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pushbot.demo import run_demo

    return run_demo(users=args.users, fast=args.fast)


def _admin_chat(settings: Settings, chosen: int | None) -> int:
    if chosen is not None:
        return chosen
    if not settings.admin_ids:
        raise ConfigError(
            "ADMIN_IDS", "is required for `pushbot push`: the report goes to an admin"
        )
    return min(settings.admin_ids)


def _call_bot(settings: Settings, call: Callable[[Bot], Awaitable[Message]]) -> Message:
    async def go() -> Message:
        bot = Bot(
            settings.bot_token,
            base_url=settings.telegram_base_url,
            request=make_request(settings.telegram_transport, pool_size=1),
        )
        async with bot:
            return await call(bot)

    return asyncio.run(go())


def _follow(handle: JobHandle) -> JobReport:
    """Draw a progress bar in the terminal until the job ends; return its report."""
    from pushbot.bot.render import counts_known, fraction_done, progress_bar

    while not handle.done():
        progress = handle.progress()
        if counts_known(progress):
            line = (
                f"\r{progress_bar(fraction_done(progress))}  done {progress.sent}  "
                f"failed {progress.failed}  left {progress.left}  {progress.rate:5.1f}/s"
            )
        else:
            line = "\rstarting…"
        if progress.unreachable_since is not None:
            line += f"  Telegram unreachable since {progress.unreachable_since:%H:%M:%S} UTC"
        print(line, end="", file=sys.stderr, flush=True)
        time.sleep(PROGRESS_REFRESH_SECONDS)
    print(file=sys.stderr)
    return handle.wait()
