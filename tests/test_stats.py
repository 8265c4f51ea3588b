"""The statistics service: one report from the database, and the chart as a real PNG."""

from __future__ import annotations

import struct
import threading
import zlib
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.queries import (
    AudienceChanges,
    AudienceCounts,
    AudiencePoint,
    ChatInfo,
    PushDraft,
)
from pushbot.stats import CHART_DAYS, StatsReport, StatsService, Window, render_chart

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first and be intact."""
    assert png[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    header = png[16 : 16 + length]
    (crc,) = struct.unpack(">I", png[16 + length : 20 + length])
    assert zlib.crc32(kind + header) == crc
    width, height = struct.unpack(">II", header[:8])
    return width, height


def report(history: list[AudiencePoint], broadcasts: list[datetime]) -> StatsReport:
    quiet = AudienceChanges()
    return StatsReport(
        at=NOW,
        audience=AudienceCounts(history[-1].size, 0, 0),
        windows=(Window(7, quiet), Window(30, quiet)),
        broadcasts=[],
        history=history,
        broadcast_times=broadcasts,
    )


def growing(days: int) -> list[AudiencePoint]:
    return [
        AudiencePoint(NOW.date() - timedelta(days=days - 1 - n), 100 + 3 * n) for n in range(days)
    ]


def test_the_chart_is_a_complete_png_of_the_intended_size() -> None:
    png = render_chart(report(growing(CHART_DAYS), [NOW - timedelta(days=10)]))

    assert png_size(png) == (1000, 500)
    assert png.endswith(b"IEND\xaeB`\x82"), "the image is complete"
    assert 10_000 < len(png) < 1_000_000


def test_a_new_bot_without_history_still_gets_a_chart() -> None:
    empty = [AudiencePoint(NOW.date() - timedelta(days=n), 0) for n in range(CHART_DAYS)][::-1]

    assert png_size(render_chart(report(empty, []))) == (1000, 500)


def test_charts_drawn_at_once_in_several_threads_are_all_whole() -> None:
    results: list[bytes] = []

    def draw() -> None:
        results.append(render_chart(report(growing(CHART_DAYS), [])))

    threads = [threading.Thread(target=draw) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 3
    assert all(png_size(png) == (1000, 500) for png in results)


def test_the_report_gathers_every_number(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        for chat_id in range(1, 6):
            queries.subscribe_chat(
                session, ChatInfo(id=chat_id, type="private"), NOW - timedelta(days=chat_id * 4)
            )
        queries.unsubscribe_chat(session, 1, now=NOW - timedelta(days=1))
        queries.purge_chat(session, 2, "blocked", NOW - timedelta(days=10))
        push = queries.create_push(
            session, PushDraft("Hi", "text", 900, 1, 900), NOW - timedelta(days=3)
        )

    stats = StatsService(session_factory).report(NOW)

    assert stats.audience == AudienceCounts(subscribed=3, unsubscribed=1, purged=1)
    seven, thirty = stats.windows
    assert (seven.days, seven.changes) == (7, AudienceChanges(joined=1, left=1))
    assert (thirty.days, thirty.changes) == (
        30,
        AudienceChanges(joined=5, left=1, purged_by_reason={"blocked": 1}),
    )
    assert [b.push.uuid for b in stats.broadcasts] == [push.uuid]
    assert stats.broadcast_times == [push.created_at]
    assert len(stats.history) == CHART_DAYS and stats.history[-1].size == 3
    assert png_size(StatsService(session_factory).chart(stats)) == (1000, 500)
