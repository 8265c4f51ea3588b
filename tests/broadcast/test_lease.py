"""The broadcast lease: one job at a time across processes, on SQLite and PostgreSQL.

Unit level (two leases on one database, a holder SIGKILLed, a PostgreSQL connection killed
under the holder), then Broadcasters that share a database as two processes would: each has
a lease of its own (a connection of its own, a lock file descriptor of its own).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pushbot.broadcast import runner as runner_module
from pushbot.broadcast.engine import BroadcastBusy, Broadcaster
from pushbot.broadcast.lease import (
    LEASE_KEY,
    LOCK_FILE_SUFFIX,
    BroadcastLease,
    FileLease,
    LeaseUnavailable,
    LocalLease,
    PostgresLease,
    lease_for,
)
from pushbot.broadcast.pacing import Pacer
from pushbot.broadcast.progress import JobState
from pushbot.db import queries
from pushbot.db.models import PushStatus
from pushbot.db.session import create_db_engine
from tests.broadcast import helpers
from tests.broadcast.conftest import FAST, Scene

REPO_ROOT = Path(__file__).resolve().parents[2]
SLOW = 150.0  # msgs/s: slow enough to act mid-broadcast

# Takes the lease, says so, then holds it until killed.
HOLDER_SCRIPT = """
import sys, time
from pushbot.broadcast.lease import lease_for
lease = lease_for(sys.argv[1])
if not lease.try_acquire():
    print("BUSY", flush=True)
    sys.exit(1)
print("HELD", flush=True)
time.sleep(600)
"""


def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def _leases_on(url: str) -> Iterator[Callable[[], BroadcastLease]]:
    made: list[BroadcastLease] = []

    def make() -> BroadcastLease:
        lease = lease_for(url)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.close()


@pytest.fixture
def leases(db_url: str) -> Iterator[Callable[[], BroadcastLease]]:
    """Leases on the database of the test's backend (each test runs on both)."""
    yield from _leases_on(db_url)


@pytest.fixture
def pg_leases(postgres_test_database: str) -> Iterator[Callable[[], BroadcastLease]]:
    """Leases on the test PostgreSQL: for what only a lock held by a connection does."""
    yield from _leases_on(postgres_test_database)


@pytest.fixture
def sqlite_leases(tmp_path: Path) -> Iterator[Callable[[], BroadcastLease]]:
    """Leases on a SQLite file: for what only a lock file does."""
    yield from _leases_on(f"sqlite:///{tmp_path / 'pushbot.sqlite3'}")


@pytest.fixture
def quick_lease_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine tests need not sit out the production intervals (2 s)."""
    monkeypatch.setattr(runner_module, "POLL_INTERVAL", 0.1)
    monkeypatch.setattr(runner_module, "CHECK_INTERVAL", 0.2)
    monkeypatch.setattr(runner_module, "RECHECK_INTERVAL", 0.05)


def is_postgres(db_url: str) -> bool:
    return make_url(db_url).get_backend_name() == "postgresql"


# --- two leases on one database -----------------------------------------------------------------


def test_two_leases_exclude_each_other_and_release_lets_the_other_in(
    leases: Callable[[], BroadcastLease],
) -> None:
    first, second = leases(), leases()
    assert first.try_acquire()
    assert first.try_acquire()  # holding it already is not a conflict
    assert first.held and first.still_held()
    assert not second.try_acquire()
    assert not second.held and not second.still_held()
    assert second.holder() is not None  # for the waiting process's log line

    first.release()
    assert not first.still_held()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()
    second.release()  # a no-op
    assert first.try_acquire()


def test_a_lease_is_per_database(
    leases: Callable[[], BroadcastLease], tmp_path: Path, db_url: str
) -> None:
    mine = leases()
    assert mine.try_acquire()
    if is_postgres(db_url):
        assert isinstance(mine, PostgresLease)
    else:
        assert isinstance(mine, FileLease)
        assert str(mine.path).endswith(".sqlite3.broadcast.lock")
        other = lease_for(f"sqlite:///{tmp_path / 'another.sqlite3'}")
        assert other.try_acquire()
        other.close()


def test_a_lease_held_by_a_killed_process_is_free_again(
    leases: Callable[[], BroadcastLease], db_url: str
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, db_url],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready, "the holder process did not start in time"
        assert holder.stdout.readline().strip() == "HELD"
        mine = leases()
        assert not mine.try_acquire()
        holder.send_signal(signal.SIGKILL)  # no release code runs
        holder.wait(10)
        # The kernel (flock) or the server (the connection closed) lets go: no TTL to wait.
        eventually(mine.try_acquire, timeout=10, what="the dead holder's lease is free")
        assert mine.still_held()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


# --- PostgreSQL: the lease connection breaks ----------------------------------------------------


def _lock_holder_pid(admin: Engine) -> int | None:
    unsigned = LEASE_KEY & 0xFFFF_FFFF_FFFF_FFFF
    with admin.connect() as connection:
        pid = connection.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) "
                "AND objsubid = 1 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
        ).scalar_one_or_none()
    return None if pid is None else int(pid)


def _terminate(admin: Engine, pid: int) -> None:
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    eventually(lambda: _lock_holder_pid(admin) != pid, 10, "the killed backend let go")


@pytest.fixture
def pg_admin(postgres_test_database: str) -> Iterator[Engine]:
    admin = create_engine(postgres_test_database, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    yield admin
    admin.dispose()


def test_postgres_still_held_takes_the_lease_again_after_its_connection_broke(
    pg_leases: Callable[[], BroadcastLease], pg_admin: Engine
) -> None:
    mine = pg_leases()
    assert mine.try_acquire()
    first_pid = _lock_holder_pid(pg_admin)
    assert first_pid is not None
    _terminate(pg_admin, first_pid)  # as a database restart would do to every connection

    assert mine.still_held()  # nobody else had it: taken again on a new connection
    second_pid = _lock_holder_pid(pg_admin)
    assert second_pid is not None and second_pid != first_pid
    assert mine.held


def test_postgres_still_held_is_false_once_another_lease_took_it(
    pg_leases: Callable[[], BroadcastLease], pg_admin: Engine
) -> None:
    mine, other = pg_leases(), pg_leases()
    assert mine.try_acquire()
    pid = _lock_holder_pid(pg_admin)
    assert pid is not None
    _terminate(pg_admin, pid)
    assert other.try_acquire()  # the lock went with the connection

    assert not mine.still_held()
    assert not mine.held
    assert not mine.try_acquire()
    other.release()
    assert mine.try_acquire()


def test_an_unreachable_postgres_server_is_unavailable_not_busy() -> None:
    lease = PostgresLease("postgresql+psycopg2://nobody@127.0.0.1:9/nowhere")
    try:
        with pytest.raises(LeaseUnavailable):
            lease.try_acquire()
        assert not lease.held
    finally:
        lease.close()


# --- SQLite specifics ---------------------------------------------------------------------------


def test_sqlite_lock_file_replaced_under_the_holder(
    sqlite_leases: Callable[[], BroadcastLease],
) -> None:
    mine, other = sqlite_leases(), sqlite_leases()
    assert isinstance(mine, FileLease)
    assert mine.try_acquire()
    os.unlink(mine.path)  # a lock on the old file would guard nothing
    assert mine.still_held()  # the new file was free: locked again
    assert not other.try_acquire()

    os.unlink(mine.path)
    assert other.try_acquire()
    assert not mine.still_held()


def test_in_memory_sqlite_is_locked_per_engine() -> None:
    engine_a = create_db_engine("sqlite://")
    engine_b = create_db_engine("sqlite://")
    try:
        first, second, elsewhere = lease_for(engine_a), lease_for(engine_a), lease_for(engine_b)
        assert isinstance(first, LocalLease)
        assert first.try_acquire() and not second.try_acquire()
        assert elsewhere.try_acquire()  # another in-memory database altogether
        first.release()
        assert second.try_acquire()
    finally:
        engine_a.dispose()
        engine_b.dispose()


# --- Broadcasters sharing one database, as two processes would ----------------------------------


@pytest.mark.usefixtures("quick_lease_checks")
def test_a_second_broadcaster_waits_for_the_lease_and_sends_nothing_twice(scene: Scene) -> None:
    users = scene.users(150)
    first = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    first.launch_push(push_uuid)
    scene.wait_until_sent(15)

    second = scene.broadcaster(rate=2000.0)
    assert second.resume_unfinished() == [push_uuid]  # as a second process at start-up would
    waiting = second.progress(push_uuid)
    assert waiting is not None and waiting.state is JobState.RUNNING

    # A third, idle one is refused a new push, with the progress of the one running elsewhere.
    third = scene.broadcaster()
    busy = third.busy()
    assert busy is not None and busy.uuid == push_uuid
    fresh = scene.push()
    with pytest.raises(BroadcastBusy) as refused:
        third.launch_push(fresh)
    assert refused.value.active.uuid == push_uuid
    with scene.factory.begin() as session:
        queries.change_push_status(session, fresh, PushStatus.CANCELLED)

    assert first.wait(push_uuid, timeout=30).state is JobState.DONE
    handled = second.wait(push_uuid, timeout=10)
    assert handled.state is JobState.HANDLED_ELSEWHERE
    assert handled.sent == 150  # it mirrored the ledger while it waited
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.DONE
    # The waiting runner lets go of the lease just after its job reports (not before: a
    # resume() may hold the control lock while it waits for that report).
    scene.tg.wait_for(lambda: third.busy() is None, timeout=10)


def _steal_the_lease(db_url: str) -> BroadcastLease:
    """Another process takes the lease from under its holder: on PostgreSQL by killing the
    holder's lease connection, on SQLite by replacing the lock file."""
    thief = lease_for(db_url)
    if not is_postgres(db_url):
        database = make_url(db_url).database
        assert database is not None
        os.unlink(os.path.realpath(database) + LOCK_FILE_SUFFIX)
        assert thief.try_acquire()
        return thief
    admin = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        pid = _lock_holder_pid(admin)
        assert pid is not None
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        eventually(thief.try_acquire, timeout=10, what="the thief has the lease")
    finally:
        admin.dispose()
    return thief


def test_a_job_that_loses_the_lease_to_another_process_stops_and_the_push_stays_running(
    scene: Scene, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked once a second: the thief surely gets the lease before the holder takes it back.
    monkeypatch.setattr(runner_module, "CHECK_INTERVAL", 1.0)
    users = scene.users(300)
    holder = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    handle = holder.launch_push(push_uuid)
    scene.wait_until_sent(20)

    thief = _steal_the_lease(db_url)
    try:
        report = handle.wait(timeout=15)
        assert report.state is JobState.INTERRUPTED
        assert helpers.status(scene.factory, push_uuid) == PushStatus.RUNNING
        # A graceful stop: every copy it sent is in the ledger, the rest still pending.
        assert helpers.counts(scene.factory, push_uuid).sent == scene.sent_so_far()
        assert scene.sent_so_far() < 300
        with pytest.raises(BroadcastBusy):
            holder.resume(push_uuid)
    finally:
        thief.close()

    assert holder.resume(push_uuid)
    assert holder.wait(push_uuid, timeout=30).state is JobState.DONE
    assert scene.deliveries(users) == dict.fromkeys(users, 1)


@pytest.mark.usefixtures("quick_lease_checks")
def test_undo_in_another_process_stops_the_sending_there_and_retracts_every_copy(
    scene: Scene,
) -> None:
    users = scene.users(200)
    sender = scene.broadcaster(rate=SLOW)
    push_uuid = scene.push()
    sending = sender.launch_push(push_uuid)
    scene.wait_until_sent(30)

    undoer = scene.broadcaster(rate=2000.0)
    retraction = undoer.launch_retract(push_uuid)  # waits for the sender's lease
    assert sending.wait(timeout=10).state is JobState.HANDLED_ELSEWHERE
    report = retraction.wait(timeout=30)
    assert report.state is JobState.RETRACTED

    counts = helpers.counts(scene.factory, push_uuid)
    assert counts.sent == scene.sent_so_far() < 200
    assert report.removed == counts.sent and counts.retract_pending == 0
    assert all(not any(m.get("copied_from") for m in scene.tg.inbox(u)) for u in users)
    assert helpers.status(scene.factory, push_uuid) == PushStatus.RETRACTED


class FlakyLease(LocalLease):
    """A lease whose database stops answering on demand, as during a server restart."""

    def __init__(self) -> None:
        super().__init__()
        self.unreachable = threading.Event()

    def still_held(self) -> bool:
        if self.unreachable.is_set():
            raise LeaseUnavailable("cannot reach PostgreSQL: the server is restarting")
        return super().still_held()


def _sending_settles(scene: Scene, quiet: float = 0.5, timeout: float = 10.0) -> int:
    """Wait until no copy went out for `quiet` seconds; how many went out."""
    deadline = time.monotonic() + timeout
    last, since = scene.sent_so_far(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("copies kept going out")
        time.sleep(0.02)
        now = scene.sent_so_far()
        if now != last:
            last, since = now, time.monotonic()
    return last


@pytest.mark.usefixtures("quick_lease_checks")
def test_a_holder_that_cannot_tell_whether_it_still_holds_the_lease_sends_nothing_new(
    scene: Scene,
) -> None:
    users = scene.users(300)
    lease = FlakyLease()
    broadcaster = Broadcaster(
        scene.settings(workers=8, rate=SLOW),
        scene.factory,
        pacer=Pacer(SLOW),
        options=FAST,
        lease=lease,
    )
    scene.broadcasters.append(broadcaster)
    broadcaster.start()
    push_uuid = scene.push()
    handle = broadcaster.launch_push(push_uuid)
    scene.wait_until_sent(20)

    lease.unreachable.set()
    held_at = _sending_settles(scene)  # in-flight sends land, nothing new starts
    assert held_at < 300
    progress = handle.progress()
    assert progress.state is JobState.RUNNING and progress.sent == held_at

    lease.unreachable.clear()  # the lease is confirmed again: the job carries on
    assert handle.wait(timeout=30).state is JobState.DONE
    assert scene.deliveries(users) == dict.fromkeys(users, 1)
