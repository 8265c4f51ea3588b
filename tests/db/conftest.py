"""Fixtures of the database tests: a log of the SQL statements an engine sends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, event


@dataclass(frozen=True)
class Statement:
    sql: str
    executemany: bool
    rows: int  # parameter sets sent with it

    @property
    def verb(self) -> str:
        return self.sql.lstrip().split(None, 1)[0].upper()


@dataclass
class StatementLog:
    """What reached the driver, to check that bulk work is one statement per batch."""

    statements: list[Statement] = field(default_factory=list)

    def clear(self) -> None:
        self.statements.clear()

    def verbs(self) -> list[str]:
        return [statement.verb for statement in self.statements]

    def touching(self, table: str) -> list[Statement]:
        return [s for s in self.statements if f" {table}" in s.sql or f'"{table}"' in s.sql]


@pytest.fixture
def sql_log(db_engine: Engine) -> Iterator[StatementLog]:
    log = StatementLog()

    def record(
        _conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, executemany: bool
    ) -> None:
        rows = len(parameters) if executemany else 1
        log.statements.append(Statement(sql, executemany, rows))

    event.listen(db_engine, "before_cursor_execute", record)
    yield log
    event.remove(db_engine, "before_cursor_execute", record)
