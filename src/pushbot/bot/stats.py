"""/stats: the audience and the latest broadcasts in numbers, and a chart of 90 days.

Admins only; anyone else gets the answer to an unknown command (the fallback handler), as
for /push. The numbers and the chart come from pushbot.stats, the service `pushbot stats`
uses too; both run in a worker thread, the drawing included.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telegram import Update
from telegram.ext import CommandHandler, ContextTypes, filters

from pushbot.bot import render
from pushbot.bot.services import services


async def show_stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    assert message is not None
    stats = services(context).stats
    report = await asyncio.to_thread(stats.report)
    await message.reply_text(render.render_stats(report))
    chart = await asyncio.to_thread(stats.chart, report)
    await message.reply_photo(chart, caption=report.chart_caption)


def stats_handler(admin_filter: filters.BaseFilter) -> CommandHandler[Any, Any]:
    return CommandHandler("stats", show_stats, filters=admin_filter)
