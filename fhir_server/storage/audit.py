"""The audit trail's table in the store of record: append-only rows, batched inserts, SQL search.

Why not the versioned resource path: an AuditEvent is never updated, so a version row, a head row,
match keys, an outbox row and an Elasticsearch document per record were pure cost (about 3 ms and
one fsync per request, then index load that every later search waited for). Here a record is one
``audit_event`` row plus one ``audit_ref`` row per entity/agent reference, inserted in batches by the
audit writer from its journal (:mod:`fhir_server.audit.journal`), and read back by SQL only
(``AuditEvent`` read and search, :mod:`fhir_server.audit.search`).

Where: on PostgreSQL, the store's own database. On SQLite, a sibling file of the store
(``fhir.sqlite3`` -> ``fhir-audit.sqlite3``, see :func:`audit_url`): SQLite has one write lock per file,
and with the trail in the store's file every audit commit queued behind resource commits, paying the
busy handler's sleeps (creates at 16 clients lost 40 % of their rate). Nothing needs the two in one
transaction: a record is written after the interaction it traces.

Durability: the journal is the durable copy of a record until its rows are here, so these commits
need not reach the disk (SQLite WAL ``synchronous=NORMAL`` on the writer's own connection,
PostgreSQL ``SET LOCAL synchronous_commit = off`` in the audit transaction only; resource writes keep
their ``FULL``/``on``). Each batch also records, in ``audit_journal``, how far in the journal it goes:
rows and position commit or vanish together, so after a power cut the writer replays exactly what the
table lost. Journal segments are deleted only after a commit made with full durability
(:meth:`AuditAppender.append` with ``durable=True``) covers them. Inserts ignore rows already there
(ids are derived from the journal position), so even a lost position cannot duplicate a record.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    String,
    and_,
    event,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import ColumnElement

from .engine import make_engine
from .migrations import AUDIT_HEAD, upgrade
from .schema import audit_event, audit_journal, audit_ref

Sync = Literal["normal", "full"]  # the journal's: see fhir_server.audit.journal
ENTITY = "e"
AGENT = "a"

_E = audit_event
_R = audit_ref
_J = audit_journal


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One AuditEvent as stored: the searchable columns and the JSON."""

    id: str
    recorded_us: int
    action: str
    outcome: str
    subtype: str
    content: bytes  # the AuditEvent's facts (fhir_server/audit/events.py), rendered as FHIR on read
    refs: tuple[tuple[str, str], ...] = ()  # (ENTITY | AGENT, "Type/id")


def audit_id(recorded_us: int, origin: bytes, index: int) -> str:
    """A UUIDv8 (RFC 9562) derived from where a record comes from, so a replay gives it the same id.

    Layout: the millisecond of ``recorded_us`` (48 bits, so ids sort by time as UUIDv7 ones do), 50 bits
    of a hash of ``origin`` (the journal slot and position: unique per request), then ``index`` (24
    bits: the request's own AuditEvent is 0, its Bundle entries follow in order)."""
    digest = int.from_bytes(hashlib.blake2b(origin, digest_size=8).digest(), "big")
    value = ((recorded_us // 1000) & ((1 << 48) - 1)) << 80 | 0x8 << 76 | (digest >> 52) << 64 \
        | 0b10 << 62 | (index & 0xFFFFFF) << 38 | (digest & ((1 << 38) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def audit_url(store_url: str) -> str:
    """Where the trail of the store at ``store_url`` lives: a sibling file for a SQLite file, else the store."""
    url = make_url(store_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return store_url
    db = Path(url.database)
    return url.set(database=str(db.with_name(f"{db.stem}-audit{db.suffix}"))).render_as_string(hide_password=False)


def trail_of(store_url: str) -> str:
    """Which trail the store at ``store_url`` has, without credentials (journal slots are bound to it)."""
    return make_url(audit_url(store_url)).render_as_string(hide_password=True)


def _audit_engine(store_url: str, relaxed: bool = False) -> Engine:
    """The trail's engine; ``relaxed`` (the writer's): SQLite commits that do not wait for the disk."""
    engine = make_engine(audit_url(store_url))
    if relaxed and engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _relaxed(dbapi_conn: Any, _record: Any) -> None:  # after make_engine's own (FULL)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    upgrade(engine, AUDIT_HEAD)  # a no-op at head; the trail's tables only (its own file on SQLite)
    return engine


_READERS: dict[str, Engine] = {}
_READERS_LOCK = threading.Lock()


def _pragma(conn: Connection, setting: str) -> None:
    """A SQLite PRAGMA on the DB-API connection: SQLAlchemy would begin a transaction first."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # None only once the connection is closed or invalidated
    cur = dbapi.cursor()
    try:
        cur.execute(f"PRAGMA {setting}")
    finally:
        cur.close()


class AuditAppender:
    """The writer's side: a dedicated engine, so the relaxed sync never reaches resource writes."""

    def __init__(self, url: str) -> None:
        """``url``: the store's URL (the trail's own location is derived from it by :func:`audit_url`)."""
        self.url = url
        self.engine = _audit_engine(url, relaxed=True)
        self.dialect = self.engine.dialect.name
        p = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_event = (f"INSERT INTO {_E.name} (id, recorded_us, action, outcome, subtype, content) "
                              f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING")
        self._insert_ref = (f"INSERT INTO {_R.name} (kind, reference, recorded_us, event_id) "
                            f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING")
        self._upsert_position = (f"INSERT INTO {_J.name} (slot, segment, byte_offset) VALUES ({p}, {p}, {p}) "
                                 "ON CONFLICT (slot) DO UPDATE SET segment = excluded.segment, "
                                 "byte_offset = excluded.byte_offset")

    def trail(self) -> str:
        return trail_of(self.url)

    def position(self, slot: str) -> tuple[int, int] | None:
        """How far the journal slot ``slot`` is applied, or None if it never was."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_J.c.segment, _J.c.byte_offset).where(_J.c.slot == slot)).first()
        return (int(row.segment), int(row.byte_offset)) if row else None

    def append(self, rows: Sequence[AuditRow], slot: str | None = None, position: tuple[int, int] | None = None,
               *, durable: bool = False) -> None:
        """One transaction for the batch and, with ``slot``, the journal position it reaches; ``durable``:
        this commit, and so every earlier one, is on disk when it returns."""
        events = [(r.id, r.recorded_us, r.action, r.outcome, r.subtype, r.content) for r in rows]
        refs = [(kind, ref, r.recorded_us, r.id) for r in rows for kind, ref in dict.fromkeys(r.refs)]
        if not events and slot is None:
            return
        with self.engine.connect() as conn:
            if durable and self.dialect == "sqlite":  # per connection, outside a transaction
                _pragma(conn, "synchronous=FULL")
            try:
                with conn.execution_options(sqlite_immediate=True).begin():
                    if self.dialect == "postgresql" and not durable:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                    if events:
                        conn.exec_driver_sql(self._insert_event, events)
                    if refs:
                        conn.exec_driver_sql(self._insert_ref, refs)
                    if slot is not None and position is not None:
                        conn.exec_driver_sql(self._upsert_position, (slot, position[0], position[1]))
            finally:
                if durable and self.dialect == "sqlite":
                    _pragma(conn, "synchronous=NORMAL")

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

    def read(self, id_: str, within: AuditQuery | None = None) -> tuple[int, bytes] | None:
        """(recorded_us, content) of one AuditEvent; with ``within``, only if it matches that query too (the
        caller's restriction, so a record they may not read is as absent as an unknown one)."""
        if within is None:
            stmt = select(_E.c.recorded_us, _E.c.content).where(_E.c.id == id_)
        else:
            stmt, _, _ = self._filtered(replace(within, ids=[*within.ids, [id_]]), _E.c.recorded_us, _E.c.content)
        with self.engine.connect() as conn:
            row = conn.execute(stmt.limit(1)).first()
        return (int(row.recorded_us), bytes(row.content)) if row else None

    def recent(self, n: int) -> list[tuple[str, bytes]]:
        """(id, content) of the last ``n`` records committed, newest first (tests, operators)."""
        with self.engine.connect() as conn:
            return [(r.id, bytes(r.content)) for r in
                    conn.execute(select(_E.c.id, _E.c.content).order_by(_E.c.seq.desc()).limit(n))]

    def total(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_E)).scalar_one())
