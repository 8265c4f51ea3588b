"""The broadcast lease: one broadcast job at a time per bot, across every process.

"One broadcast at a time" inside a Broadcaster is a queue; between processes (an overlapping
restart, a second deployment, `pushbot push` from a terminal) it is this lease, kept where
every process of the bot can see it and released by the operating system or the database
server when its holder dies, so there is no time-to-live and no clock to trust:

* PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock(LEASE_KEY)`) on a
  connection of the lease's own, outside the ledger's pool. It lives exactly as long as that
  connection: a SIGKILLed holder's connection closes and the server drops the lock at once.
  If the connection breaks (the server restarted), the lock is gone too: `still_held()`
  takes it again on a new connection, or reports that another process has it now.
* SQLite file: `flock(LOCK_EX | LOCK_NB)` on `<database file>.broadcast.lock`, which the
  kernel releases when the holder dies. The file is never deleted (that would let two
  processes lock two different files); it holds the holder's pid, for the logs.
* SQLite in memory: only one process can see that database; a `threading.Lock` per engine.

Session-level advisory locks need a real session: behind a pooler, use session pooling.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import socket
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pushbot.db import queries

logger = logging.getLogger(__name__)

__all__ = [
    "CHECK_INTERVAL",
    "LEASE_KEY",
    "POLL_INTERVAL",
    "RECHECK_INTERVAL",
    "BroadcastLease",
    "FileLease",
    "LeaseUnavailable",
    "LocalLease",
    "PostgresLease",
    "lease_for",
]

# "pushbot" in ASCII. Fixed, so that every process of the bot agrees on it; advisory locks
# are per database, so bots with databases of their own on one server do not collide.
LEASE_KEY = 0x0070_7573_6862_6F74
LOCK_FILE_SUFFIX = ".broadcast.lock"
# A job waiting for the lease tries again this often (and meanwhile mirrors the ledger).
POLL_INTERVAL = 2.0
# A holder checks that it still holds the lease this often while a job runs...
CHECK_INTERVAL = 2.0
# ...and this often while it cannot tell (its connection broke): the sooner it has the lease
# again, the less likely a waiting process takes it in between.
RECHECK_INTERVAL = 0.5
CONNECT_TIMEOUT_SECONDS = 10
# libpq's keepalives on the lease connection: a vanished server is noticed in ~25 s, and a
# check stuck on unacknowledged data gives up after TCP_USER_TIMEOUT_MS (libpq >= 12).
CLIENT_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
TCP_USER_TIMEOUT_MS = 30_000


class LeaseUnavailable(Exception):
    """The database (or the lock file) cannot be reached: nobody can tell who holds the lease
    right now. Try again later; while the database is down the ledger cannot move either."""


class BroadcastLease(ABC):
    """One holder at a time among every lease on the same database. Thread-safe: a lease may
    be taken by one thread and released by another (it belongs to the process)."""

    @abstractmethod
    def try_acquire(self) -> bool:
        """Take the lease without waiting. True if this lease holds it now (also when it held it
        already), False if another holds it. LeaseUnavailable if that cannot be told."""

    @abstractmethod
    def release(self) -> None:
        """Let it go (a no-op when not held)."""

    @abstractmethod
    def still_held(self) -> bool:
        """For a holder, checked every few seconds: True while it holds the lease (taking it
        again if it was lost without anyone else taking it), False once another holder has
        it or after release(). LeaseUnavailable if that cannot be told right now."""

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this lease believes it holds the lock (no I/O)."""

    def holder(self) -> str | None:
        """Who holds the lease, for the logs; None when unknown or free."""
        return None

    def close(self) -> None:
        """Release and free the lease's resources (connections, files)."""
        self.release()


class PostgresLease(BroadcastLease):
    def __init__(self, url: URL | str, key: int = LEASE_KEY) -> None:
        self._key = key
        application_name = f"pushbot broadcast lease {socket.gethostname()}:{os.getpid()}"
        # NullPool: the connection really closes on release(), which is what frees the lock.
        self._engine = create_engine(
            url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "application_name": application_name[:63],
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                **_client_timeouts(),
            },
        )
        self._mutex = threading.Lock()
        self._connection: Connection | None = None  # open exactly while the lock is held
        self._wanted = False  # acquired and not released: still_held() renews a lost lock

    @property
    def held(self) -> bool:
        return self._connection is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._connection is not None:
                return True
            return self._lock_on_new_connection()

    def release(self) -> None:
        with self._mutex:
            self._wanted = False
            connection, self._connection = self._connection, None
            if connection is None:
                return
            try:
                queries.advisory_unlock(connection, self._key)
            except SQLAlchemyError:
                pass  # closing the connection below drops the lock all the same
            finally:
                connection.close()

    def still_held(self) -> bool:
        with self._mutex:
            if not self._wanted:
                return False
            connection = self._connection
            if connection is not None:
                try:
                    if queries.holds_advisory_lock(connection, self._key):
                        return True
                    logger.warning("the broadcast lease vanished from its connection")
                except SQLAlchemyError as exc:
                    logger.warning(
                        "the broadcast lease's connection broke (%s); taking the lease again",
                        _one_line(exc),
                    )
                self._drop_connection()
            if self._lock_on_new_connection():
                logger.info("broadcast lease taken again on a new connection")
                return True
            self._wanted = False
            return False

    def holder(self) -> str | None:
        try:
            with self._engine.connect() as connection:
                return queries.advisory_lock_holder(connection, self._key)
        except SQLAlchemyError:
            return None

    def close(self) -> None:
        self.release()
        self._engine.dispose()

    def _lock_on_new_connection(self) -> bool:
        connection: Connection | None = None
        try:
            connection = self._engine.connect()
            queries.prepare_lease_connection(connection)
            locked = queries.try_advisory_lock(connection, self._key)
        except SQLAlchemyError as exc:
            if connection is not None:
                connection.close()
            raise LeaseUnavailable(f"cannot reach PostgreSQL: {_one_line(exc)}") from exc
        if not locked:
            connection.close()
            return False
        self._connection = connection
        self._wanted = True
        return True

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                connection.close()


class FileLease(BroadcastLease):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._mutex = threading.Lock()
        self._fd: int | None = None  # open exactly while the lock is held
        self._wanted = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._fd is not None:
                return True
            return self._lock()

    def release(self) -> None:
        with self._mutex:
            self._wanted = False
            self._unlock()

    def still_held(self) -> bool:
        with self._mutex:
            if not self._wanted:
                return False
            if self._fd is not None and self._same_file(self._fd):
                return True
            # Someone removed or replaced the lock file: a lock on the old one guards nothing.
            logger.warning("the broadcast lock file %s was replaced; locking it again", self.path)
            self._unlock()
            if self._lock():
                return True
            self._wanted = False
            return False

    def holder(self) -> str | None:
        try:
            content = self.path.read_text().strip()
        except OSError:
            return None
        return f"process {content}" if content else None

    def _lock(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LeaseUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise LeaseUnavailable(f"cannot lock {self.path}: {exc}") from exc
        with contextlib.suppress(OSError):  # only informative
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        self._wanted = True
        return True

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # drops the flock

    def _same_file(self, fd: int) -> bool:
        try:
            mine, current = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


class LocalLease(BroadcastLease):
    """For an in-memory SQLite database, which no other process can see."""

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self._lock = lock if lock is not None else threading.Lock()
        self._mutex = threading.Lock()
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        with self._mutex:
            if not self._held:
                self._held = self._lock.acquire(blocking=False)
            return self._held

    def release(self) -> None:
        with self._mutex:
            if self._held:
                self._held = False
                self._lock.release()

    def still_held(self) -> bool:
        return self._held

    def holder(self) -> str | None:
        return "another Broadcaster of this process" if self._lock.locked() else None


_memory_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_memory_locks_guard = threading.Lock()


def lease_for(target: Engine | URL | str) -> BroadcastLease:
    """The lease of the database behind `target` (an engine, or a URL)."""
    engine = target if isinstance(target, Engine) else None
    url = target.url if isinstance(target, Engine) else make_url(target)
    backend = url.get_backend_name()
    if backend == "postgresql":
        return PostgresLease(url)
    if backend != "sqlite":
        raise ValueError(f"no broadcast lease for database backend {backend!r}")
    if url.database in (None, "", ":memory:"):
        if engine is None:
            return LocalLease()  # every connection to this URL is a new, private database
        with _memory_locks_guard:
            lock = _memory_locks.setdefault(engine, threading.Lock())
        return LocalLease(lock)
    # The real path: two processes reaching one database by different paths share the lock.
    return FileLease(os.path.realpath(url.database) + LOCK_FILE_SUFFIX)


def _client_timeouts() -> dict[str, int]:
    options = dict(CLIENT_KEEPALIVES)
    try:
        libpq_version = getattr(importlib.import_module("psycopg2"), "__libpq_version__", 0)
    except ImportError:
        libpq_version = 0
    if libpq_version >= 120000:
        options["tcp_user_timeout"] = TCP_USER_TIMEOUT_MS
    return options


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
