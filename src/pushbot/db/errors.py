"""One line that says why the database cannot be used, instead of a driver traceback.

SQLAlchemy wraps the driver's exception (psycopg2, sqlite3) and alembic lets it through
(sometimes chained under its own error); what the operator needs is the variable to fix
(DATABASE_URL) and the gist of the driver's message: the password, the host, the port, the
directory. The URL is shown with its password masked, and the password is also removed from
the driver's text in case a server ever echoes it.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

VARIABLE = "DATABASE_URL"
# Longer driver messages are cut: the line must stay readable in a terminal and a journal.
MAX_REASON_LENGTH = 200
MASK = "***"
DRIVERS = frozenset({"psycopg2", "psycopg", "sqlite3"})

# libpq prefixes every connection failure with where it tried; the reason follows.
_LIBPQ_WHERE = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?|on socket "(?P<socket>[^"]*)")'
    r"(?:, port (?P<port>\d+))? failed: "
)
_QUOTED = re.compile(r'"([^"]*)"')


class DatabaseUnavailable(Exception):
    """The database cannot be used. `str()` is the one line for the operator (no password)."""

    variable = VARIABLE

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{VARIABLE} ({masked_url(url)}): {reason}")
        self.reason = reason


def masked_url(url: str) -> str:
    """The URL with its password replaced by ***, as safe to print as the variable's name."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def find_database_error(exc: BaseException) -> BaseException | None:
    """The DB-API error behind `exc` (SQLAlchemy's wrapper or the driver's own), following
    the chain alembic and our own code may have put on top; None if it is not about the DB."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) or _is_driver_error(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def explain_database_error(exc: BaseException, url: str) -> str:
    """The gist of a database error in a few words, e.g. 'connection refused by db:5432'."""
    driver_error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(driver_error).strip()
    try:
        parsed: URL | None = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite":
        reason = _explain_sqlite(message, parsed.database)
    else:
        reason = _explain_server(message, parsed)
    return _shorten(_without_password(reason, parsed))


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn any database error raised inside into `DatabaseUnavailable` (one line)."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        found = find_database_error(exc)
        if found is None:
            raise
        # `from None`: the driver's chain is exactly the traceback the operator is spared.
        raise DatabaseUnavailable(url, explain_database_error(found, url)) from None


def _is_driver_error(exc: BaseException) -> bool:
    # DB-API drivers' own exceptions, unwrapped (raised from a raw connection). Checked by
    # module name so the PostgreSQL driver need not be imported (or typed) here.
    return isinstance(exc, sqlite3.Error) or type(exc).__module__.split(".")[0] in DRIVERS


def is_connection_error(exc: BaseException) -> bool:
    """Whether a database error means 'cannot reach or open the database' (PEP 249's
    OperationalError / InterfaceError), as opposed to a bug such as a broken constraint."""
    if isinstance(exc, DBAPIError):
        return isinstance(exc, OperationalError | InterfaceError)
    return _is_driver_error(exc) and type(exc).__name__ in ("OperationalError", "InterfaceError")


def _explain_sqlite(message: str, database: str | None) -> str:
    path = Path(database) if database and database != ":memory:" else None
    lowered = message.lower()
    if "unable to open database file" in lowered and path is not None:
        directory = path.parent if path.parent != Path("") else Path(".")
        if not directory.exists():
            return f"cannot create the SQLite file: directory {directory} does not exist"
        if not directory.is_dir():
            return f"cannot create the SQLite file: {directory} is not a directory"
        if path.is_dir():
            return f"{path} is a directory, not a SQLite file"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"cannot open the SQLite file: directory {directory} is not writable"
        return f"cannot open the SQLite file {path}"
    if "readonly database" in lowered:
        where = f" {path}" if path is not None else ""
        return f"the SQLite file{where} is read-only (or its directory is not writable)"
    if "file is not a database" in lowered and path is not None:
        return f"{path} is not a SQLite database"
    if "database is locked" in lowered:
        return "the SQLite file is locked by another process"
    return _first_line(message)


def _explain_server(message: str, url: URL | None) -> str:
    where_match = _LIBPQ_WHERE.search(message)
    host = (where_match and (where_match["host"] or where_match["socket"])) or (
        url.host if url is not None else None
    )
    port = (where_match and where_match["port"]) or (
        str(url.port) if url is not None and url.port else None
    )
    place = f"{host}:{port}" if host and port else (host or "the server")
    # After libpq's "connection to server at … failed: " comes the actual reason.
    core = message[where_match.end() :] if where_match else message
    core = _first_line(core.replace("FATAL:", "").strip())
    lowered = core.lower()
    if "connection refused" in lowered:
        return f"connection refused by {place} (is the server running and listening there?)"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        name = _QUOTED.search(core)
        return f"unknown host {name.group(0) if name else place} (DNS lookup failed)"
    if "password authentication failed" in lowered:
        return f"{core} (wrong password?)"
    if "no password supplied" in lowered or "fe_sendauth" in lowered:
        return "the server asks for a password and the URL has none"
    if "timeout expired" in lowered:
        return f"no answer from {place} in time (timeout expired)"
    if "does not exist" in lowered:
        return core  # role "x" / database "x" does not exist
    return f"{core} ({place})" if where_match else core


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"


def _without_password(text: str, url: URL | None) -> str:
    password = url.password if url is not None else None
    if password:
        for form in {str(password), _percent_encoded(str(password))}:
            if form:
                text = text.replace(form, MASK)
    return text


def _percent_encoded(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_LENGTH else text[: MAX_REASON_LENGTH - 1] + "…"
