"""Engines and write transactions of the store's database (SQLite in WAL mode or PostgreSQL).

Shared by the version store (``sql.py``), the outbox (``outbox.py``), the start-up backfills (``backfill.py``),
the schema migrations (``migrations``) and the audit trail (``audit.py``): one place knows how a SQLite
writer takes the database's write lock (``BEGIN IMMEDIATE``) and how a lock time-out looks on each dialect.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

#: SQLite's answers when the lock it waited for (busy timeout) stayed taken; PostgreSQL's ``lock_not_available``
#: (55P03: a ``lock_timeout`` or ``NOWAIT`` expired).
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
_PG_LOCK_NOT_AVAILABLE = "55P03"


def lock_unavailable(exc: OperationalError) -> bool:
    """Whether ``exc`` says a lock could not be had in time, as opposed to a conflict with another write."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE:
        return True
    return isinstance(orig, sqlite3.OperationalError) and str(orig).lower().startswith(_SQLITE_BUSY)


def _sqlite_engine(url: str, busy_timeout_s: float) -> Engine:
    db = make_url(url).database
    if db and db != ":memory:":
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}, pool_size=8,
                           max_overflow=16)
    busy_ms = max(0, int(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is broken)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a power cut
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")  # how long a writer waits for the lock before StoreBusy
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engine(url: str, busy_timeout_s: float = 30.0) -> Engine:
    """``busy_timeout_s``: SQLite only, how long a connection waits for a lock another one holds."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout_s)
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)


@contextmanager
def write_conn(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction, committed when the block ends (SQLite: holding the write lock from
    ``BEGIN``, so two writers never deadlock upgrading read locks)."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            yield conn


def dialect_insert(conn: Connection) -> Any:
    """The ``insert`` of the connection's dialect (``ON CONFLICT`` clauses: SQLite and PostgreSQL spell them alike)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
