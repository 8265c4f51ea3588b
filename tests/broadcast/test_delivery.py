"""The delivery policy alone: one recipient at a time through the real transport and gateway to
the stand-in, with its faults injected; the outcomes land in a recording sink, not a ledger."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pytest

from pushbot.broadcast.backoff import Backoff
from pushbot.broadcast.delivery import Delivery
from pushbot.broadcast.gateway import TelegramGateway
from pushbot.broadcast.health import TelegramHealth
from pushbot.broadcast.jobs import Job
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobKind, JobState
from pushbot.broadcast.transport import Transport
from pushbot.config import Settings
from pushbot.db import queries
from tests.broadcast import helpers
from tests.broadcast.conftest import UNPACED, post_as_admin
from tests.tgstandin.support import raw
from tgstandin import StandIn, StandInConfig

OutcomeT = TypeVar("OutcomeT")
QUICK = Backoff(0.01, 0.02, jitter=True)


class Recorded(Generic[OutcomeT]):
    """An OutcomeSink that keeps what it is given."""

    def __init__(self) -> None:
        self.outcomes: list[OutcomeT] = []
        self.given_back = 0

    def submit(self, outcome: OutcomeT) -> None:
        self.outcomes.append(outcome)

    def give_back_slot(self) -> None:
        self.given_back += 1


@dataclass
class Rig:
    tg: StandIn
    transport: Transport
    gateway: TelegramGateway
    admin: int
    source: int
    fatal: list[tuple[Job, str]] = field(default_factory=list)
    # What follow_migration is asked (old id, new id), and what it answers.
    follows: list[tuple[int, int]] = field(default_factory=list)
    may_follow: bool = True

    def follow(self, job: Job, old_chat_id: int, new_chat_id: int) -> bool:
        self.follows.append((old_chat_id, new_chat_id))
        return self.may_follow

    def delivery(self, max_attempts: int = 3, backoff: Backoff = QUICK) -> Delivery:
        return Delivery(
            self.transport,
            self.gateway,
            max_attempts=max_attempts,
            backoff=backoff,
            paid_copies=False,
            on_fatal=lambda job, reason: self.fatal.append((job, reason)),
            follow_migration=self.follow,
        )

    def copy_to(
        self, delivery: Delivery, job: Job, chat_id: int, source: int | None = None
    ) -> Recorded[queries.DeliveryOutcome]:
        sink: Recorded[queries.DeliveryOutcome] = Recorded()
        delivery.deliver_copy(job, sink, chat_id, self.admin, source or self.source)
        return sink


@pytest.fixture
def rig(standin_factory: Callable[..., StandIn]) -> Iterator[Rig]:
    tg = standin_factory(StandInConfig(limits_enabled=False))
    admin = tg.add_user(helpers.ADMIN_ID)
    source = post_as_admin(tg, admin, "Big news, everyone!")
    settings = Settings(bot_token=tg.token, telegram_base_url=tg.base_url)
    transport = Transport(settings, request_timeout=2.0)
    # Production probing backs off up to 10 s; a test's outage is over in seconds.
    health = TelegramHealth(backoff_base=0.1, backoff_cap=0.3)
    gateway = TelegramGateway(Pacer(UNPACED), health=health)
    transport.start()
    gateway.set_probes(sync_probe=transport.telegram_answers)
    yield Rig(tg, transport, gateway, admin, source)
    transport.close()


def push_job() -> Job:
    return Job(uuid.uuid4(), JobKind.PUSH)


def in_a_thread(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_copy_is_recorded_with_its_message_id(rig: Rig) -> None:
    user = rig.tg.add_user()
    job = push_job()
    sink = rig.copy_to(rig.delivery(), job, user)

    [outcome] = sink.outcomes
    assert (outcome.chat_id, outcome.error, outcome.purge) == (user, None, False)
    assert outcome.message_id is not None
    copy = rig.tg.message(user, outcome.message_id)
    assert copy is not None and copy["text"] == "Big news, everyone!"
    assert job.make_report().sent == 1 and sink.given_back == 0


def test_a_chat_that_fails_while_telegram_answers_others_is_failed_after_its_attempts(
    rig: Rig,
) -> None:
    healthy, broken = rig.tg.add_user(), rig.tg.add_user()
    delivery = rig.delivery(max_attempts=3)
    job = push_job()
    rig.copy_to(delivery, job, healthy)  # Telegram has just been seen answering
    rig.tg.inject_faults(kind="500", rate=1.0, methods={"copyMessage"}, chat_ids={broken})
    sink = rig.copy_to(delivery, job, broken)

    [outcome] = sink.outcomes
    assert (outcome.chat_id, outcome.message_id) == (broken, None)
    assert (outcome.error, outcome.purge) == ("network error", False)
    assert rig.tg.count("copyMessage", 500) == 3  # each one charged, none more
    assert job.make_report().failed_by_reason == {"network error": 1}


def test_an_outage_holds_the_copy_and_charges_nobody(rig: Rig) -> None:
    user = rig.tg.add_user()
    delivery = rig.delivery(max_attempts=1)  # one charged failure would fail the chat
    job = push_job()
    rig.tg.start_outage(3600, kind="500")
    sink: Recorded[queries.DeliveryOutcome] = Recorded()
    sending = in_a_thread(lambda: delivery.deliver_copy(job, sink, user, rig.admin, rig.source))
    rig.tg.wait_for(lambda: rig.tg.count("getMe", 500) >= 2, timeout=30)  # held, probing
    assert rig.gateway.down_since() is not None
    assert sink.outcomes == [] and sending.is_alive()
    rig.tg.end_outage()
    sending.join(timeout=30)

    assert not sending.is_alive()
    [outcome] = sink.outcomes
    assert outcome.message_id is not None and outcome.error is None
    assert rig.tg.count("copyMessage", 500) >= 1


def test_a_429_is_waited_out_and_is_not_an_attempt(rig: Rig) -> None:
    user = rig.tg.add_user()
    rig.tg.set_limits(
        enabled=True, global_rate=10_000, global_burst=10_000, per_chat_rate=1, per_chat_burst=1
    )
    # A message that went around the gateway has just spent the chat's one-per-second slot.
    assert raw(rig.tg, "sendMessage", chat_id=user, text="hello").status_code == 200
    sink = rig.copy_to(rig.delivery(max_attempts=1), push_job(), user)

    [outcome] = sink.outcomes
    assert outcome.message_id is not None and outcome.error is None
    assert rig.tg.count("copyMessage", 429) == 1


def test_a_stop_during_the_back_off_ends_the_attempts_at_once(rig: Rig) -> None:
    broken = rig.tg.add_user()
    delivery = rig.delivery(max_attempts=5, backoff=Backoff(30.0, 30.0))
    job = push_job()
    rig.tg.inject_faults(kind="500", rate=1.0, methods={"copyMessage"}, chat_ids={broken})
    sink: Recorded[queries.DeliveryOutcome] = Recorded()
    sending = in_a_thread(lambda: delivery.deliver_copy(job, sink, broken, rig.admin, rig.source))
    rig.tg.wait_for(lambda: rig.tg.count("copyMessage", 500) >= 1, timeout=10)
    assert job.ask_to_stop(JobState.PAUSED)
    sending.join(timeout=10)  # not the 30 s back-off

    assert not sending.is_alive()
    assert sink.outcomes == [] and sink.given_back == 1  # the recipient stays pending
    assert rig.tg.count("copyMessage", 500) == 1


def test_a_missing_source_message_stops_the_job_instead_of_failing_the_chat(rig: Rig) -> None:
    user = rig.tg.add_user()
    job = push_job()
    sink = rig.copy_to(rig.delivery(), job, user, source=rig.source + 1000)

    assert rig.fatal == [(job, "source message not found")]
    assert sink.outcomes == [] and sink.given_back == 1
    assert job.make_report().failed == 0


def test_a_deleted_copy_is_removed_and_one_the_user_deleted_is_gone(rig: Rig) -> None:
    first, second = rig.tg.add_user(), rig.tg.add_user()
    delivery = rig.delivery()
    job = push_job()
    copies = {
        chat_id: rig.copy_to(delivery, job, chat_id).outcomes[0].message_id
        for chat_id in (first, second)
    }
    second_copy = copies[second]
    assert second_copy is not None
    rig.tg.user_deletes_message(second, second_copy)

    retraction = Job(job.uuid, JobKind.RETRACT)
    sink: Recorded[queries.RetractOutcome] = Recorded()
    for chat_id, message_id in copies.items():
        assert message_id is not None
        delivery.delete_copy(retraction, sink, chat_id, message_id)

    assert [(o.chat_id, o.status, o.error) for o in sink.outcomes] == [
        (first, "deleted", None),
        (second, "gone", None),
    ]
    assert rig.tg.inbox(first) == [] and retraction.make_report().sent == 2


def test_a_group_that_became_a_supergroup_gets_its_copy_under_the_new_id(rig: Rig) -> None:
    group = rig.tg.add_group("Club")
    supergroup = rig.tg.migrate_to_supergroup(group)
    job = push_job()

    sink = rig.copy_to(rig.delivery(), job, group)

    assert rig.follows == [(group, supergroup)]
    [outcome] = sink.outcomes
    assert (outcome.chat_id, outcome.error, outcome.purge) == (supergroup, None, False)
    assert outcome.message_id is not None and rig.tg.message(supergroup, outcome.message_id)
    assert job.make_report().sent == 1 and job.make_report().failed == 0


def test_a_supergroup_the_ledger_cannot_follow_fails_the_old_id_without_a_purge(
    rig: Rig,
) -> None:
    group = rig.tg.add_group("Club")
    supergroup = rig.tg.migrate_to_supergroup(group)
    rig.may_follow = False
    job = push_job()

    sink = rig.copy_to(rig.delivery(), job, group)

    assert rig.follows == [(group, supergroup)]
    [outcome] = sink.outcomes
    assert (outcome.chat_id, outcome.message_id) == (group, None)
    assert (outcome.error, outcome.purge) == ("migrated to supergroup", False)
    assert rig.tg.count("copyMessage", 200) == 0
