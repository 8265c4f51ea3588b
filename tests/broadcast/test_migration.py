"""A group upgraded to a supergroup while it was owed a copy: the broadcast follows it.

No Application runs here, so nobody hears Telegram's service messages: the 400 "group chat
was upgraded" answer to the copy is all the engine learns (both backends).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from pushbot.broadcast.progress import JobState
from pushbot.db import queries
from pushbot.db.models import DeliveryStatus
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene


def chat_row(factory: sessionmaker[Session], chat_id: int) -> queries.ChatRow | None:
    with factory.begin() as session:
        return queries.get_chat(session, chat_id)


def test_the_copy_goes_to_the_supergroup_in_the_same_broadcast(scene: Scene) -> None:
    tg, factory = scene.tg, scene.factory
    users = scene.users(3)
    group = tg.add_group("Readers")
    with factory.begin() as session:
        queries.subscribe_chat(session, queries.ChatInfo(group, "group", "Readers"))
    supergroup = tg.migrate_to_supergroup(group)
    broadcaster = scene.broadcaster()

    push_uuid = scene.push()
    report = broadcaster.launch_push(push_uuid).wait(timeout=60)

    assert report.state is JobState.DONE
    assert (report.total, report.sent, report.failed, report.purged) == (4, 4, 0, 0)
    assert scene.deliveries([supergroup, *users]) == dict.fromkeys([supergroup, *users], 1)
    assert [c.status for c in tg.calls("copyMessage") if c.chat_id == group] == [400]
    # The ledger knows the copy under the new id (that is where /undo must delete it) ...
    rows = helpers.notifications(factory, push_uuid)
    assert group not in rows and rows[supergroup].status == DeliveryStatus.SENT.value
    copy = tg.message(supergroup, rows[supergroup].telegram_message_id)
    assert copy is not None and copy["text"] == "Big news, everyone!"
    # ... and the chat itself moved: same subscription, new id, nobody purged.
    assert chat_row(factory, group) is None
    moved = chat_row(factory, supergroup)
    assert moved is not None and moved.in_audience
    assert (moved.type, moved.title) == ("supergroup", "Readers")
    assert helpers.purged(factory) == {}

    retraction = broadcaster.launch_retract(push_uuid).wait(timeout=60)
    assert (retraction.state, retraction.sent, retraction.failed) == (JobState.RETRACTED, 4, 0)
    assert tg.inbox(supergroup) == []


def test_a_supergroup_with_its_own_row_gets_one_copy(scene: Scene) -> None:
    """Both ids in the audience (the supergroup was seen before the move): one copy, and the
    old id's row is the one that fails, without a purge."""
    tg, factory = scene.tg, scene.factory
    group = tg.add_group("Readers")
    supergroup = tg.migrate_to_supergroup(group)
    helpers.subscribe(factory, [group, supergroup])
    broadcaster = scene.broadcaster()

    push_uuid = scene.push()
    report = broadcaster.launch_push(push_uuid).wait(timeout=60)

    assert report.state is JobState.DONE
    assert tg.deliveries(supergroup) == 1
    assert report.failed_by_reason == {"migrated to supergroup": 1} and report.purged == 0
    rows = helpers.notifications(factory, push_uuid)
    assert rows[group].status == DeliveryStatus.FAILED.value
    assert rows[supergroup].status == DeliveryStatus.SENT.value
    assert helpers.purged(factory) == {}
