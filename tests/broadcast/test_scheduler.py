"""Scheduled pushes: the service stores them, the scheduler starts each once when due (on an
injected clock: the test moves time, nothing sleeps), waits while another broadcast runs, and
says how late a push started after the bot was down."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from pushbot.broadcast.engine import BroadcastBusy, Broadcaster, JobState
from pushbot.broadcast.scheduler import (
    LateReason,
    NotScheduled,
    ScheduledStart,
    ScheduledWait,
    ScheduleEvent,
    Scheduler,
)
from pushbot.broadcast.service import BroadcastService
from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.queries import PushDraft
from pushbot.db.segments import EVERYONE, Segment
from tests.broadcast import helpers
from tests.broadcast.conftest import Scene

SLOW_AUDIENCE = 200
SLOW_RATE = 20.0
WAIT = 30.0


class Clock:
    """The scheduler's time, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Events(list[ScheduleEvent]):
    def starts(self) -> list[ScheduledStart]:
        return [e for e in self if isinstance(e, ScheduledStart)]

    def waits(self) -> list[ScheduledWait]:
        return [e for e in self if isinstance(e, ScheduledWait)]


def draft(
    scene: Scene, due: datetime | None, segment: Segment = EVERYONE, **extra: bool
) -> PushDraft:
    return PushDraft(
        text="Later, everyone!",
        content_type="text",
        source_chat_id=scene.admin,
        source_message_id=scene.source_message_id,
        admin_id=scene.admin,
        preview_message_id=scene.source_message_id,
        segment=segment,
        scheduled_at=due,
        **extra,
    )


def service_of(
    scene: Scene, clock: Clock, broadcaster: Broadcaster | None = None
) -> BroadcastService:
    return BroadcastService(scene.factory, broadcaster or scene.broadcaster(), clock=clock)


def scheduler_of(service: BroadcastService, clock: Clock, events: Events) -> Scheduler:
    return Scheduler(service, clock, events.append)


def copies(scene: Scene, users: list[int]) -> dict[int, int]:
    return scene.deliveries(users)


def test_a_scheduled_push_starts_once_on_time_with_its_segment_and_options(scene: Scene) -> None:
    users = scene.users(10)
    groups = [scene.tg.add_group("club") for _ in range(2)]
    helpers.subscribe(scene.factory, groups)
    clock, events = Clock(), Events()
    service = service_of(scene, clock)
    push = service.schedule(
        draft(
            scene,
            clock.now + timedelta(hours=1),
            Segment.parse("private"),
            disable_notification=True,
            protect_content=True,
        )
    )
    scheduler = scheduler_of(service, clock, events)

    clock.advance(timedelta(minutes=59, seconds=59))
    next_due, waiting = scheduler.look()
    assert (next_due, waiting) == (push.scheduled_at, False)
    assert events == [] and helpers.status(scene.factory, push.uuid) == PushStatus.SCHEDULED

    clock.advance(timedelta(seconds=1))
    scheduler.look()
    (start,) = events.starts()
    assert start.push.uuid == push.uuid and start.late_by is None and start.reason is None
    report = start.handle.wait(timeout=WAIT)
    assert report.state is JobState.DONE and report.sent == len(users)
    scheduler.look()  # again: nothing left to start
    assert len(events) == 1
    assert copies(scene, users) == dict.fromkeys(users, 1)
    assert copies(scene, groups) == dict.fromkeys(groups, 0), "private chats only"
    for user in users:
        (copy,) = [m for m in scene.tg.inbox(user) if m.get("copied_from")]
        assert copy["send_options"] == {
            "disable_notification": True,
            "protect_content": True,
            "allow_paid_broadcast": False,
        }
    stored = service.get(push.uuid)
    assert stored is not None and stored.status is PushStatus.DONE
    assert stored.created_at == clock.now, "dated from its start"
    assert service.scheduled() == []


def test_a_push_due_while_the_bot_was_down_starts_at_the_next_start_and_is_late(
    scene: Scene,
) -> None:
    users = scene.users(5)
    clock, events = Clock(), Events()
    service = service_of(scene, clock)
    push = service.schedule(draft(scene, clock.now + timedelta(minutes=10)))
    clock.advance(timedelta(hours=2, minutes=10))  # the bot was down meanwhile

    scheduler_of(service, clock, events).look()  # the first look after start-up

    (start,) = events.starts()
    assert start.late_by == timedelta(hours=2) and start.reason is LateReason.BOT_WAS_DOWN
    assert start.handle.wait(timeout=WAIT).sent == len(users)
    assert helpers.status(scene.factory, push.uuid) == PushStatus.DONE


def test_two_processes_do_not_start_a_due_push_twice(scene: Scene) -> None:
    users = scene.users(30)
    clock = Clock()
    # Two Broadcasters with leases of their own on one database: two processes of the bot.
    services = [service_of(scene, clock, scene.broadcaster()) for _ in range(2)]
    push = services[0].schedule(draft(scene, clock.now + timedelta(minutes=5)))
    clock.advance(timedelta(minutes=5))
    events = [Events(), Events()]
    schedulers = [scheduler_of(s, clock, e) for s, e in zip(services, events, strict=True)]
    together = threading.Barrier(2)

    def look(scheduler: Scheduler) -> None:
        together.wait()
        scheduler.look()

    threads = [threading.Thread(target=look, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    starts = events[0].starts() + events[1].starts()
    assert len(starts) == 1, f"started {len(starts)} times"
    assert starts[0].handle.wait(timeout=WAIT).sent == len(users)
    for scheduler in schedulers:
        scheduler.look()
    assert len(events[0].starts() + events[1].starts()) == 1
    assert copies(scene, users) == dict.fromkeys(users, 1)
    assert helpers.status(scene.factory, push.uuid) == PushStatus.DONE


def test_a_push_due_while_another_runs_waits_says_so_once_then_starts(scene: Scene) -> None:
    users = scene.users(SLOW_AUDIENCE)
    clock, events = Clock(), Events()
    service = service_of(scene, clock, scene.broadcaster(rate=SLOW_RATE))
    scheduled = service.schedule(draft(scene, clock.now + timedelta(minutes=1)))
    running = service.push(draft(scene, None))
    scene.wait_until_sent(1)
    scheduler = scheduler_of(service, clock, events)
    clock.advance(timedelta(minutes=1))

    assert scheduler.look() == (None, True)
    (wait,) = events.waits()
    assert wait.push.uuid == scheduled.uuid and wait.busy.uuid == running.uuid
    assert helpers.status(scene.factory, scheduled.uuid) == PushStatus.SCHEDULED
    clock.advance(timedelta(minutes=2))
    assert scheduler.look() == (None, True)
    assert len(events.waits()) == 1, "told once"

    assert service.cancel(running.uuid)
    assert running.wait(timeout=WAIT).state is JobState.CANCELLED
    scheduler.look()

    (start,) = events.starts()
    assert start.late_by == timedelta(minutes=2) and start.reason is LateReason.WAITED
    assert start.handle.wait(timeout=WAIT).state is JobState.DONE
    assert helpers.counts(scene.factory, scheduled.uuid).sent == len(users)


def test_cancel_and_send_now(scene: Scene) -> None:
    users = scene.users(5)
    clock = Clock()
    service = service_of(scene, clock)
    dropped = service.schedule(draft(scene, clock.now + timedelta(hours=1)))
    sooner = service.schedule(draft(scene, clock.now + timedelta(hours=2)))
    assert [p.uuid for p in service.scheduled()] == [dropped.uuid, sooner.uuid]

    assert service.cancel_scheduled(dropped.uuid)
    assert not service.cancel_scheduled(dropped.uuid)
    with pytest.raises(NotScheduled) as refused:
        service.start_scheduled(dropped.uuid)
    assert refused.value.status == PushStatus.CANCELLED

    report = service.start_scheduled(sooner.uuid).wait(timeout=WAIT)
    assert report.sent == len(users)
    with pytest.raises(NotScheduled):
        service.start_scheduled(sooner.uuid)
    assert not service.cancel_scheduled(sooner.uuid)
    events = Events()
    clock.advance(timedelta(hours=3))
    scheduler_of(service, clock, events).look()
    assert events == [] and service.scheduled() == []
    assert copies(scene, users) == dict.fromkeys(users, 1)
    assert helpers.status(scene.factory, dropped.uuid) == PushStatus.CANCELLED


def test_send_now_while_another_runs_is_refused_and_it_stays_scheduled(scene: Scene) -> None:
    scene.users(SLOW_AUDIENCE)
    clock = Clock()
    service = service_of(scene, clock, scene.broadcaster(rate=SLOW_RATE))
    scheduled = service.schedule(draft(scene, clock.now + timedelta(hours=1)))
    running = service.push(draft(scene, None))
    scene.wait_until_sent(1)

    with pytest.raises(BroadcastBusy) as refused:
        service.start_scheduled(scheduled.uuid)

    assert refused.value.active.uuid == running.uuid
    assert helpers.status(scene.factory, scheduled.uuid) == PushStatus.SCHEDULED
    assert service.cancel(running.uuid)
    running.wait(timeout=WAIT)


def test_scheduling_needs_a_time_ahead(scene: Scene) -> None:
    clock = Clock()
    service = service_of(scene, clock)
    with pytest.raises(ValueError, match="needs its time"):
        service.schedule(draft(scene, None))
    with pytest.raises(ValueError, match="time ahead"):
        service.schedule(draft(scene, clock.now))
    with scene.factory.begin() as session:
        assert queries.recent_pushes(session) == []


def test_the_service_runs_the_scheduler_and_a_push_scheduled_here_wakes_it(scene: Scene) -> None:
    users = scene.users(3)
    clock = Clock()
    service = service_of(scene, clock)
    started = threading.Event()
    heard: list[ScheduleEvent] = []

    def listener(event: ScheduleEvent) -> None:
        heard.append(event)
        started.set()

    service.start_scheduler(listener)
    try:
        push = service.schedule(draft(scene, clock.now + timedelta(days=1)))
        clock.advance(timedelta(days=1))
        service.wake_scheduler()
        assert started.wait(WAIT), "the scheduler started nothing"
        (start,) = heard
        assert isinstance(start, ScheduledStart) and start.push.uuid == push.uuid
        assert start.handle.wait(timeout=WAIT).state is JobState.DONE
    finally:
        service.shutdown()
    assert copies(scene, users) == dict.fromkeys(users, 1)
