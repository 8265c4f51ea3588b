"""Segments of the audience: parsed and named in one place, and each one a query that reaches
exactly its chats (both backends). Scheduled pushes in the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.queries import ChatInfo, PushDraft
from pushbot.db.segments import EVERYONE, InvalidSegment, Segment, SegmentKind
from tests.db.conftest import StatementLog

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ADMINS = frozenset({900, 901, 902})  # 902 never wrote to the bot
Factory = sessionmaker[Session]


@pytest.mark.parametrize(
    ("raw", "segment", "words"),
    [
        ("all", EVERYONE, "everyone"),
        ("private", Segment(SegmentKind.PRIVATE), "private chats"),
        ("GROUPS", Segment(SegmentKind.GROUPS), "groups"),
        ("admins", Segment(SegmentKind.ADMINS), "admins only (test)"),
        ("language:DE", Segment(SegmentKind.LANGUAGE, "de"), "language de"),
        (" language:pt-br ", Segment(SegmentKind.LANGUAGE, "pt-br"), "language pt-br"),
    ],
)
def test_segments_parse_render_and_read(raw: str, segment: Segment, words: str) -> None:
    parsed = Segment.parse(raw)
    assert parsed == segment
    assert Segment.parse(str(parsed)) == parsed
    assert parsed.describe() == words


@pytest.mark.parametrize("raw", ["everyone", "language", "language:", "private:x", "language:e"])
def test_an_unknown_segment_is_one_clear_line(raw: str) -> None:
    with pytest.raises(InvalidSegment) as refused:
        Segment.parse(raw)
    assert "\n" not in str(refused.value)


def _draft(segment: Segment = EVERYONE, **extra: object) -> PushDraft:
    return PushDraft("Hi", "text", 900, 1, 900, segment=segment, **extra)  # type: ignore[arg-type]


def _audience(factory: Factory) -> dict[str, list[int]]:
    """Private chats in English and German, groups, admins, and chats outside the audience."""
    chats = {
        "en": [1, 2, 3],
        "de": [4, 5],
        "none": [6],  # Telegram reported no language
        "groups": [-10, -11],
        "supergroups": [-1001],
        "stopped_de": [7],
        "blocked_en": [8],
        "admin_stopped": [900],  # an admin who sent /stop: still reached by a test send
        "admin_subscribed": [901],
    }
    with factory.begin() as session:
        for lang, ids in (("en", chats["en"]), ("de", chats["de"]), ("de", chats["stopped_de"])):
            for chat_id in ids:
                chat = ChatInfo(chat_id, "private", language_code=lang)
                queries.subscribe_chat(session, chat, T0)
        queries.subscribe_chat(session, ChatInfo(6, "private"), T0)
        queries.subscribe_chat(session, ChatInfo(8, "private", language_code="en"), T0)
        for chat_id in chats["groups"]:
            queries.subscribe_chat(session, ChatInfo(chat_id, "group", title="g"), T0)
        queries.subscribe_chat(session, ChatInfo(-1001, "supergroup", title="s"), T0)
        for admin in (900, 901):
            queries.subscribe_chat(session, ChatInfo(admin, "private", language_code="en"), T0)
        queries.unsubscribe_chat(session, 7, T0)
        queries.unsubscribe_chat(session, 900, T0)
        queries.purge_chat(session, 8, "blocked", T0)
    return chats


EXPECTED = {
    "all": {1, 2, 3, 4, 5, 6, -10, -11, -1001, 901},
    "private": {1, 2, 3, 4, 5, 6, 901},
    "groups": {-10, -11, -1001},
    "language:en": {1, 2, 3, 901},
    "language:de": {4, 5},
    "language:fr": set(),
    "admins": {900, 901},
}


@pytest.mark.parametrize("raw", list(EXPECTED))
def test_each_segment_reaches_exactly_its_chats(session_factory: Factory, raw: str) -> None:
    _audience(session_factory)
    segment = Segment.parse(raw)
    with session_factory.begin() as session:
        push = queries.create_push(session, _draft(segment), T0)
        size = queries.audience_size(session, segment, ADMINS)
        enqueued = queries.enqueue_recipients(session, push.uuid, T0, admin_ids=ADMINS)
        recipients = set(
            queries.pending_chat_ids(session, push.uuid, after_chat_id=None, limit=100)
        )
        stored = queries.get_push(session, push.uuid)
    assert recipients == EXPECTED[raw]
    assert size == enqueued == len(EXPECTED[raw])
    assert stored is not None and stored.segment == segment and stored.audience_size == size


def test_a_segment_is_one_insert_select_not_a_copy_made_in_python(
    session_factory: Factory, sql_log: StatementLog
) -> None:
    _audience(session_factory)
    with session_factory.begin() as session:
        push = queries.create_push(session, _draft(Segment.parse("language:de")), T0)
    sql_log.clear()
    with session_factory.begin() as session:
        queries.enqueue_recipients(session, push.uuid, T0)
    inserts = [s for s in sql_log.touching("push_notifications") if s.verb == "INSERT"]
    assert len(inserts) == 1 and "SELECT" in inserts[0].sql and not inserts[0].executemany


def test_the_admins_segment_without_admins_reaches_nobody(session_factory: Factory) -> None:
    _audience(session_factory)
    with session_factory.begin() as session:
        assert queries.audience_size(session, Segment(SegmentKind.ADMINS)) == 0
        assert queries.admins_on_record(session, ADMINS) == {900, 901}
        assert queries.admins_on_record(session, ()) == set()


def test_the_languages_of_the_audience_with_their_chats(session_factory: Factory) -> None:
    _audience(session_factory)
    with session_factory.begin() as session:
        queries.subscribe_chat(session, ChatInfo(20, "private", language_code="PT-BR"), T0)
        languages = queries.audience_languages(session)
    assert [(lang.code, lang.chats) for lang in languages] == [("en", 4), ("de", 2), ("pt-br", 1)]


def test_a_language_change_moves_a_user_between_language_segments(
    session_factory: Factory,
) -> None:
    _audience(session_factory)
    german = Segment.parse("language:de")
    with session_factory.begin() as session:
        assert queries.set_chat_language(session, 1, "de")
        assert not queries.set_chat_language(session, 1, "de"), "unchanged: nothing written"
        assert not queries.set_chat_language(session, 12345, "de"), "not on record: no row"
        assert queries.audience_size(session, german) == 3
        assert queries.audience_size(session, Segment.parse("language:en")) == 3
        # A later message without a language (a group's) keeps the one the user reported.
        queries.record_chat(session, ChatInfo(1, "private"), T0)
        assert queries.get_chat(session, 1).language_code == "de"  # type: ignore[union-attr]


def test_options_and_schedule_are_stored_with_the_push(session_factory: Factory) -> None:
    due = T0 + timedelta(hours=2)
    draft = _draft(
        Segment(SegmentKind.GROUPS),
        disable_notification=True,
        protect_content=True,
        scheduled_at=due,
    )
    with session_factory.begin() as session:
        created = queries.create_push(session, draft, T0)
        stored = queries.get_push(session, created.uuid)
    assert stored == created
    assert stored.status is PushStatus.SCHEDULED and stored.scheduled_at == due
    assert stored.copy_options == {"disable_notification": True, "protect_content": True}
    with session_factory.begin() as session:
        plain = queries.create_push(session, _draft(), T0)
    assert plain.status is PushStatus.RUNNING and plain.copy_options == {}


def _scheduled(factory: Factory, due: datetime) -> UUID:
    with factory.begin() as session:
        return queries.create_push(session, _draft(scheduled_at=due), T0).uuid


def test_scheduled_pushes_soonest_first_and_those_due(session_factory: Factory) -> None:
    later = _scheduled(session_factory, T0 + timedelta(hours=3))
    sooner = _scheduled(session_factory, T0 + timedelta(hours=1))
    with session_factory.begin() as session:
        queries.create_push(session, _draft(), T0)  # sent at once: not scheduled
        assert [p.uuid for p in queries.scheduled_pushes(session)] == [sooner, later]
        due = queries.scheduled_pushes(session, due_by=T0 + timedelta(hours=1))
        assert [p.uuid for p in due] == [sooner]
        assert queries.scheduled_pushes(session, due_by=T0) == []
        assert [p.uuid for p in queries.scheduled_pushes(session, limit=1)] == [sooner]


def test_starting_a_scheduled_push_is_a_compare_and_set_that_dates_it_from_its_start(
    session_factory: Factory,
) -> None:
    push_uuid = _scheduled(session_factory, T0 + timedelta(hours=1))
    started_at = T0 + timedelta(hours=1, seconds=2)
    with session_factory.begin() as session:
        first = queries.change_push_status(
            session, push_uuid, PushStatus.RUNNING, expected={PushStatus.SCHEDULED}, now=started_at
        )
        second = queries.change_push_status(
            session, push_uuid, PushStatus.RUNNING, expected={PushStatus.SCHEDULED}, now=started_at
        )
        stored = queries.get_push(session, push_uuid)
    assert (first, second) == (True, False)
    assert stored is not None and stored.status is PushStatus.RUNNING
    # Telegram's 48 hours, the pace and the history count from the start.
    assert stored.created_at == started_at
    assert stored.scheduled_at == T0 + timedelta(hours=1)
    with session_factory.begin() as session:
        # A pause and resume later does not move it again.
        queries.change_push_status(session, push_uuid, PushStatus.PAUSED, now=started_at)
        queries.change_push_status(session, push_uuid, PushStatus.RUNNING, now=T0 + timedelta(1))
        assert queries.get_push(session, push_uuid).created_at == started_at  # type: ignore[union-attr]


def test_a_cancelled_scheduled_push_cannot_start(session_factory: Factory) -> None:
    push_uuid = _scheduled(session_factory, T0 + timedelta(hours=1))
    with session_factory.begin() as session:
        assert queries.change_push_status(
            session, push_uuid, PushStatus.CANCELLED, expected={PushStatus.SCHEDULED}
        )
        assert not queries.change_push_status(
            session, push_uuid, PushStatus.RUNNING, expected={PushStatus.SCHEDULED}
        )
        assert queries.scheduled_pushes(session) == []
