"""The numbers behind /stats and `pushbot stats`: one service for the bot and the CLI.

`report()` gathers everything in one read transaction (all SQL is in pushbot.db.queries);
`chart()` draws the audience of the last 90 days as a PNG. Both block — the bot calls them
through `asyncio.to_thread`, never on its event loop.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.queries import AudienceChanges, AudienceCounts, AudiencePoint, BroadcastStats

WINDOWS_DAYS = (7, 30)
CHART_DAYS = 90
RECENT_BROADCASTS = 5

CHART_SIZE_INCHES = (10.0, 5.0)
CHART_DPI = 100  # 1000 x 500 pixels: legible in Telegram's photo viewer on a phone
AUDIENCE_COLOUR = "#2a7ab0"
BROADCAST_COLOUR = "#e07b00"
HEADROOM = 1.15

# Matplotlib shares font caches and settings between figures; one drawing at a time keeps
# two admins' /stats (two worker threads) from racing in them.
_DRAWING = threading.Lock()


@dataclass(frozen=True)
class Window:
    days: int
    changes: AudienceChanges


@dataclass(frozen=True)
class StatsReport:
    at: datetime  # UTC
    audience: AudienceCounts
    windows: tuple[Window, ...]  # the last 7 and 30 days
    broadcasts: list[BroadcastStats]  # the latest, newest first
    history: list[AudiencePoint]  # the audience at the end of each day, oldest first
    broadcast_times: list[datetime]  # every broadcast of the chart's period

    @property
    def chart_caption(self) -> str:
        return f"Audience over the last {len(self.history)} days (UTC), broadcasts marked"


class StatsService:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def report(self, now: datetime | None = None) -> StatsReport:
        at = (now or datetime.now(UTC)).astimezone(UTC)
        chart_start = datetime.combine(
            at.date() - timedelta(days=CHART_DAYS - 1), time(), tzinfo=UTC
        )
        with self._factory.begin() as session:
            return StatsReport(
                at=at,
                audience=queries.audience_counts(session),
                windows=tuple(
                    Window(days, queries.audience_changes(session, at - timedelta(days=days)))
                    for days in WINDOWS_DAYS
                ),
                broadcasts=queries.broadcast_stats(session, RECENT_BROADCASTS),
                history=queries.audience_history(session, CHART_DAYS, at),
                broadcast_times=queries.broadcast_times(session, chart_start),
            )

    def chart(self, report: StatsReport) -> bytes:
        """The audience chart as PNG bytes."""
        return render_chart(report)


def render_chart(report: StatsReport) -> bytes:
    # Imported here: matplotlib takes about half a second to load, and only /stats needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # The x axis counts days from the chart's first midnight (UTC), with our own date labels:
    # matplotlib.dates has no type hints, and this keeps the ticks on days people read.
    origin = datetime.combine(report.history[0].day, time(), tzinfo=UTC)
    # A point is the audience at the end of its day; today's is the audience now.
    days = [_days_since(origin, _end_of(point, report.at)) for point in report.history]
    sizes = [point.size for point in report.history]
    ticks = _date_ticks(report.history[0].day, report.history[-1].day)
    with _DRAWING:
        # A Figure with its own Agg canvas, no pyplot: nothing global, no display needed.
        figure = Figure(figsize=CHART_SIZE_INCHES, dpi=CHART_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(days, sizes, color=AUDIENCE_COLOUR, linewidth=2, label="subscribed chats")
        axes.fill_between(days, sizes, color=AUDIENCE_COLOUR, alpha=0.12)
        for index, started in enumerate(report.broadcast_times):
            axes.axvline(
                _days_since(origin, started),
                color=BROADCAST_COLOUR,
                linewidth=1,
                linestyle="--",
                alpha=0.8,
                label="broadcast" if index == 0 else None,
            )
        axes.annotate(
            f"{sizes[-1]} now",
            (days[-1], sizes[-1]),
            textcoords="offset points",
            xytext=(-8, 8),
            ha="right",
            fontsize=11,
            fontweight="bold",
        )
        axes.set_xticks(
            [_days_since(origin, datetime.combine(d, time(), tzinfo=UTC)) for d in ticks],
            [f"{d:%b %d}" for d in ticks],
        )
        axes.set_xlim(days[0], days[-1])
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        # From zero, so a dip of a few chats does not look like a collapse; room on top for
        # the label of today's number.
        axes.set_ylim(0, max(sizes) * HEADROOM + 1)
        axes.set_title(report.chart_caption, fontsize=13)
        axes.set_ylabel("subscribed chats")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _days_since(origin: datetime, moment: datetime) -> float:
    return (moment - origin).total_seconds() / 86_400


def _end_of(point: AudiencePoint, now: datetime) -> datetime:
    end = datetime.combine(point.day + timedelta(days=1), time(), tzinfo=UTC)
    return min(end, now)


def _date_ticks(first: date, last: date) -> list[date]:
    """The 1st and the 15th of each month in the range."""
    return [
        first + timedelta(days=offset)
        for offset in range((last - first).days + 1)
        if (first + timedelta(days=offset)).day in (1, 15)
    ]
