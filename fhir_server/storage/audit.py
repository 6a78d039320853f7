"""The audit trail's table in the store of record: append-only rows, batched inserts, SQL search.

Why not the versioned resource path: an AuditEvent is never updated, so a version row, a head row,
match keys, an outbox row and an Elasticsearch document per record were pure cost (about 3 ms and
one fsync per request, then index load that every later search waited for). Here a record is one
``audit_event`` row plus one ``audit_ref`` row per entity/agent reference, inserted in batches by the
audit writer, and read back by SQL only (``AuditEvent`` read and search, :mod:`fhir_server.audit.search`).

Where: on PostgreSQL, the store's own database. On SQLite, a sibling file of the store
(``fhir.sqlite3`` -> ``fhir-audit.sqlite3``, see :func:`audit_url`): SQLite has one write lock per file,
and with the trail in the store's file every audit commit queued behind resource commits, paying the
busy handler's sleeps (creates at 16 clients lost 40 % of their rate). Nothing needs the two in one
transaction: a record is written after the interaction it traces, and fail-closed only needs it committed.

Durability (``sync``):

- ``full``: every batch commit is flushed to disk before it returns (SQLite ``synchronous=FULL``,
  PostgreSQL ``synchronous_commit=on``): an answered request's record survives a power cut.
- ``normal`` (the default): the commit returns once the record is in the write-ahead log, not yet
  flushed (SQLite WAL ``synchronous=NORMAL`` on the audit writer's own connection only, PostgreSQL
  ``SET LOCAL synchronous_commit = off`` in the audit transaction only). The record is committed and
  visible, and survives any crash of the server process; a power cut or kernel crash can lose the
  records of the last flush interval. :meth:`AuditAppender.flush` bounds that interval on SQLite (a
  passive checkpoint syncs the WAL; any resource write, always ``FULL``, syncs it too); PostgreSQL's
  WAL writer flushes within ``3 * wal_writer_delay`` (600 ms by default). Resource writes keep their
  own ``FULL``/``on`` durability: the setting is per connection / per transaction.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Engine,
    String,
    and_,
    event,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import ColumnElement

from .schema import audit_event, audit_ref, metadata
from .sql import make_engine

Sync = Literal["normal", "full"]
ENTITY = "e"
AGENT = "a"

_E = audit_event
_R = audit_ref
_INSERT_EVENT = (f"INSERT INTO {_E.name} (id, recorded_us, action, outcome, subtype, content) "
                 "VALUES (?, ?, ?, ?, ?, ?)")
_INSERT_REF = f"INSERT INTO {_R.name} (kind, reference, recorded_us, event_id) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One AuditEvent as stored: the searchable columns and the JSON."""

    id: str
    recorded_us: int
    action: str
    outcome: str
    subtype: str
    content: bytes
    refs: tuple[tuple[str, str], ...] = ()  # (ENTITY | AGENT, "Type/id")


class _Ids:
    """UUIDv7 ids, monotonic within the process (RFC 9562 method 1: a 12-bit counter within a
    millisecond), so records of one request (a Bundle's entries) keep their order at equal times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def next(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                self._counter += 1
                if self._counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                    self._last_ms, self._counter = self._last_ms + 1, 0
                ms = self._last_ms
            else:
                self._last_ms, self._counter = ms, 0
            counter = self._counter
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
        return str(uuid.UUID(int=value))


new_audit_id = _Ids().next


def audit_url(store_url: str) -> str:
    """Where the trail of the store at ``store_url`` lives: a sibling file for a SQLite file, else the store."""
    url = make_url(store_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return store_url
    db = Path(url.database)
    return url.set(database=str(db.with_name(f"{db.stem}-audit{db.suffix}"))).render_as_string(hide_password=False)


def _audit_engine(store_url: str, sync: Sync | None = None) -> Engine:
    """The trail's engine; with ``sync`` (the writer's), SQLite connections get that ``synchronous`` level."""
    engine = make_engine(audit_url(store_url))
    if sync is not None and engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _relaxed(dbapi_conn: Any, _record: Any) -> None:  # after make_engine's own (FULL)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            cur.close()
    metadata.create_all(engine, tables=[audit_event, audit_ref])  # idempotent (checkfirst)
    return engine


_READERS: dict[str, Engine] = {}
_READERS_LOCK = threading.Lock()


class AuditAppender:
    """The writer's side: a dedicated engine, so the relaxed sync never reaches resource writes."""

    def __init__(self, url: str, sync: Sync = "normal") -> None:
        """``url``: the store's URL (the trail's own location is derived from it by :func:`audit_url`)."""
        self.sync = sync
        self.engine = _audit_engine(url, sync)
        self.dialect = self.engine.dialect.name

    def append(self, rows: Sequence[AuditRow]) -> None:
        """One transaction for the whole batch (one commit, at most one fsync)."""
        if not rows:
            return
        if self.dialect == "sqlite":
            self._append_sqlite(rows)
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                if self.dialect == "postgresql" and self.sync == "normal":
                    conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                conn.execute(insert(_E), [
                    {"id": r.id, "recorded_us": r.recorded_us, "action": r.action, "outcome": r.outcome,
                     "subtype": r.subtype, "content": r.content} for r in rows])
                refs = [{"kind": kind, "reference": ref, "recorded_us": r.recorded_us, "event_id": r.id}
                        for r in rows for kind, ref in dict.fromkeys(r.refs)]
                if refs:
                    conn.execute(insert(_R), refs)

    def _append_sqlite(self, rows: Sequence[AuditRow]) -> None:
        """The same inserts through the DB-API connection: at one record per commit, SQLAlchemy's
        statement machinery was most of the cost of the request's trace."""
        raw = self.engine.raw_connection()  # the pool's connection, configured by the connect listeners
        try:
            cur = raw.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany(_INSERT_EVENT, [(r.id, r.recorded_us, r.action, r.outcome, r.subtype, r.content)
                                                for r in rows])
                cur.executemany(_INSERT_REF, [(kind, ref, r.recorded_us, r.id)
                                              for r in rows for kind, ref in dict.fromkeys(r.refs)])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
        finally:
            raw.close()

    def flush(self) -> bool:
        """Make every committed record durable (SQLite ``normal``: a passive checkpoint syncs the WAL).

        False when the checkpoint could not complete (a reader or another checkpoint in the way): the
        caller tries again later. PostgreSQL and ``full`` need nothing."""
        if self.dialect != "sqlite" or self.sync == "full":
            return True
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            row = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            cur.close()
        finally:
            raw.close()
        busy, log, done = row if row else (1, -1, -1)
        return not busy and log >= 0 and done == log

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass
class AuditQuery:
    """A search of the trail; every list is ANDed, the values inside one item ORed."""

    ids: list[list[str]] = field(default_factory=list)
    refs: list[tuple[str, list[str]]] = field(default_factory=list)  # (ENTITY | AGENT, references)
    not_entities: list[str] = field(default_factory=list)  # Consent: compartments hidden from the caller
    actions: list[list[str]] = field(default_factory=list)
    outcomes: list[list[str]] = field(default_factory=list)
    subtypes: list[list[str]] = field(default_factory=list)
    dates: list[list[tuple[int | None, int | None]]] = field(default_factory=list)  # [lo, hi) in µs
    descending: bool = True
    after: tuple[int, str] | None = None  # keyset: (recorded_us, id) of the last row of the previous page


def _in_range(col: Any, lo: int | None, hi: int | None) -> ColumnElement[bool]:
    parts = ([col >= lo] if lo is not None else []) + ([col < hi] if hi is not None else [])
    return and_(*parts) if parts else col.is_not(None)


class AuditLog:
    """Reads of the trail."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def of(cls, store_url: str) -> AuditLog:
        """The trail of the store at ``store_url`` (one engine per trail for the process)."""
        with _READERS_LOCK:
            engine = _READERS.get(store_url)
            if engine is None:
                engine = _READERS[store_url] = _audit_engine(store_url)
        return cls(engine)

    def _filtered(self, q: AuditQuery, *cols: Any) -> Any:
        """``SELECT cols`` over the rows matching ``q``, driven by the most selective index:
        the first reference group (``audit_ref`` range scan in time order), else the time index."""
        # one reference drives (a join is then one row per event); several would need a DISTINCT
        first, rest = (q.refs[0], q.refs[1:]) if q.refs and len(q.refs[0][1]) == 1 else (None, q.refs)
        if first is not None:
            drive = _R.alias("d")
            stmt = select(*cols).select_from(drive.join(_E, _E.c.id == drive.c.event_id)).where(
                drive.c.kind == first[0], drive.c.reference == first[1][0])
            time_col, id_col = drive.c.recorded_us, drive.c.event_id
        else:
            stmt = select(*cols).select_from(_E)
            time_col, id_col = _E.c.recorded_us, _E.c.id
        for kind, values in rest:
            r = _R.alias()
            stmt = stmt.where(exists().where(r.c.event_id == _E.c.id, r.c.kind == kind,
                                             r.c.reference.in_(values), r.c.recorded_us == _E.c.recorded_us))
        if q.not_entities:
            r = _R.alias()
            stmt = stmt.where(not_(exists().where(r.c.event_id == _E.c.id, r.c.kind == ENTITY,
                                                  r.c.reference.in_(q.not_entities),
                                                  r.c.recorded_us == _E.c.recorded_us)))
        for values in q.ids:
            stmt = stmt.where(_E.c.id.in_(values))
        for col, groups in ((_E.c.action, q.actions), (_E.c.outcome, q.outcomes), (_E.c.subtype, q.subtypes)):
            for values in groups:
                stmt = stmt.where(col.in_(values))
        for ranges in q.dates:
            stmt = stmt.where(or_(*(_in_range(time_col, lo, hi) for lo, hi in ranges)))
        return stmt, time_col, id_col

    def search(self, q: AuditQuery, limit: int) -> list[tuple[str, int, bytes]]:
        """(id, recorded_us, content) of one page, in date order then id."""
        stmt, time_col, id_col = self._filtered(q, _E.c.id, _E.c.recorded_us, _E.c.content)
        if q.after is not None:
            key = tuple_(time_col, id_col)
            after = tuple_(literal(q.after[0], BigInteger), literal(q.after[1], String))
            bound = literal(q.after[0], BigInteger)  # a plain range too: SQLite seeks on it, not on a row value
            stmt = stmt.where(and_(time_col <= bound, key < after) if q.descending else
                              and_(time_col >= bound, key > after))
        order = (time_col.desc(), id_col.desc()) if q.descending else (time_col.asc(), id_col.asc())
        stmt = stmt.order_by(*order).limit(limit)
        with self.engine.connect() as conn:
            return [(r.id, int(r.recorded_us), bytes(r.content)) for r in conn.execute(stmt)]

    def count(self, q: AuditQuery) -> int:
        stmt, _, _ = self._filtered(q, func.count(_E.c.id.distinct()))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def read(self, id_: str) -> tuple[int, bytes] | None:
        """(recorded_us, content) of one AuditEvent."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_E.c.recorded_us, _E.c.content).where(_E.c.id == id_)).first()
        return (int(row.recorded_us), bytes(row.content)) if row else None

    def recent(self, n: int) -> list[bytes]:
        """The last ``n`` records committed, newest first (tests, operators)."""
        with self.engine.connect() as conn:
            return [bytes(r.content) for r in conn.execute(select(_E.c.content).order_by(_E.c.seq.desc()).limit(n))]

    def total(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_E)).scalar_one())
