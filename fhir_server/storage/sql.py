"""SQLAlchemy Core implementation of the store, for SQLite (WAL) and PostgreSQL.

Concurrency model: a write transaction locks the head row of the resource it
changes (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers with
``BEGIN IMMEDIATE``). The unique key ``(type, id, version)`` is the last line of
defence: two writers can never both create the same version.

Conditional interactions lock the identifier values they match on
(``pg_advisory_xact_lock``; SQLite writers are already serialised), then read
``match_key`` inside the same transaction, so concurrent identical conditional
creates produce exactly one resource.

Change log of tracked types (:data:`TRACKED_TYPES`): a write unit that writes versions of such a type bumps
its ``type_log`` row (highest seq, number of versions) just before it commits, so :meth:`SQLResourceStore.log_marker`
is one primary-key read. The row lock that bump takes serialises the commits of that type's writers (only
them: other types never touch the table), from the bump to the commit, so the count is exact even where
PostgreSQL commits seqs out of order.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, case, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from fhir_server.formats import numbers

from .base import ConcurrentWrite, NewResource, OutboxEntry, StoreBusy, StoredVersion, VersionConflict
from .keys import RULES_MARKER, RULES_VERSION, UNIQUE_ELEMENTS, MatchKey, UniqueKeyViolation, extract_keys, lock_id
from .schema import index_error, match_key, metadata, outbox, resource, resource_version, server_secret, type_log

#: Types whose change log is kept in ``type_log`` (read on every professional's request by the Consent look-up).
#: Each costs its writers one row update and serialises their commits: keep it to the types that need a marker.
TRACKED_TYPES = frozenset({"Consent"})

_SQL_IN = 500  # values per IN (...) list

_V = resource_version
_VERSION_COLS = (_V.c.seq, _V.c.type, _V.c.id, _V.c.version, _V.c.last_updated_us, _V.c.method, _V.c.deleted,
                 _V.c.content)


def _row_to_version(row: Any) -> StoredVersion:
    return StoredVersion(
        seq=row.seq,
        type=row.type,
        id=row.id,
        version=row.version,
        last_updated_us=row.last_updated_us,
        method=row.method,
        deleted=bool(row.deleted),
        content=bytes(row.content) if row.content is not None else None,
    )


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


def now_us() -> int:
    return time.time_ns() // 1000


def format_instant(us: int) -> str:
    """FHIR ``instant`` with microseconds and an explicit UTC offset."""
    secs, micros = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}+00:00"


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


class SQLWriteUnit:
    """A write transaction; see :class:`fhir_server.storage.base.WriteUnit`."""

    def __init__(self, conn: Connection, for_update: bool) -> None:
        self._conn = conn
        self._for_update = for_update  # PostgreSQL: row locks and advisory locks; SQLite: writers serialised
        self._locked: set[int] = set()
        self._logged: dict[str, tuple[int, int]] = {}  # tracked type -> (highest seq, versions) written here

    def _log(self, type_: str, seq: int, n: int = 1) -> None:
        if type_ in TRACKED_TYPES:
            top, count = self._logged.get(type_, (0, 0))
            self._logged[type_] = (max(top, seq), count + n)

    def flush_log(self) -> None:
        """Bump the ``type_log`` rows of the tracked types this unit wrote; call it last before the commit, so
        their row locks are held only for the commit. An upsert: a row missing yet is created (deltas stay exact)."""
        dialect = postgresql if self._conn.dialect.name == "postgresql" else sqlite
        for type_, (top, n) in sorted(self._logged.items()):  # one order: no deadlock between two tracked types
            ins = dialect.insert(type_log).values(type=type_, seq=top, versions=n)
            self._conn.execute(ins.on_conflict_do_update(index_elements=[type_log.c.type], set_={
                "seq": case((type_log.c.seq < ins.excluded.seq, ins.excluded.seq), else_=type_log.c.seq),
                "versions": type_log.c.versions + ins.excluded.versions}))
        self._logged.clear()

    def lock_values(self, type_: str, values: list[str]) -> None:
        """Serialise with every other transaction matching or writing these identifier values."""
        if not self._for_update:
            return
        for key in sorted({lock_id(type_, v) for v in values} - self._locked):
            self._conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            self._locked.add(key)

    def lock_resources(self, keys: list[tuple[str, str]]) -> None:
        """Lock existing head rows in one global order, so transactions touching the same resources never deadlock."""
        if self._for_update:
            for type_, id_ in sorted(set(keys)):
                self._head(type_, id_)

    def match(self, type_: str, elements: tuple[str, ...], system: str | None, value: str | None) -> set[str]:
        """Ids of current resources holding an identifier ``system|value`` (None = any)."""
        mk = match_key
        stmt = select(mk.c.id).where(mk.c.type == type_, mk.c.element.in_(elements))
        if value is not None:
            stmt = stmt.where(mk.c.value == value)
        if system is not None:
            stmt = stmt.where(mk.c.system == system)
        return {r.id for r in self._conn.execute(stmt.distinct())}

    def _check_unique(self, type_: str, id_: str, keys: set[MatchKey]) -> None:
        unique = [k for k in keys if k.element in UNIQUE_ELEMENTS.get(type_, ())]
        if not unique:
            return
        self.lock_values(type_, [k.value for k in unique])
        for k in unique:
            holders = self.match(type_, (k.element,), k.system, k.value) - {id_}
            if holders:
                raise UniqueKeyViolation(type_, k, sorted(holders)[0])

    def _replace_keys(self, type_: str, id_: str, keys: set[MatchKey], existed: bool) -> None:
        if existed:
            self._conn.execute(delete(match_key).where(match_key.c.type == type_, match_key.c.id == id_))
        if keys:
            self._conn.execute(insert(match_key), [
                {"type": type_, "id": id_, "element": k.element, "system": k.system, "value": k.value}
                for k in keys])

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None:
        row = self._conn.execute(select(*_VERSION_COLS).where(_V.c.type == type_, _V.c.id == id_,
                                                             _V.c.version == version)).first()
        return _row_to_version(row) if row else None

    def _head(self, type_: str, id_: str) -> Any:
        stmt = select(resource.c.version, resource.c.deleted, resource.c.seq).where(
            resource.c.type == type_, resource.c.id == id_
        )
        if self._for_update:
            stmt = stmt.with_for_update()
        return self._conn.execute(stmt).first()

    def current(self, type_: str, id_: str) -> StoredVersion | None:
        head = self._head(type_, id_)
        if head is None:
            return None
        row = self._conn.execute(select(*_VERSION_COLS).where(_V.c.seq == head.seq)).first()
        return _row_to_version(row) if row else None

    def _append(self, type_: str, id_: str, version: int, method: str, content: bytes | None, ts: int,
                head_exists: bool, indexed: bool = True) -> StoredVersion:
        deleted = content is None
        try:
            seq = self._conn.execute(
                insert(_V).values(type=type_, id=id_, version=version, last_updated_us=ts, method=method,
                                  deleted=deleted, content=content).returning(_V.c.seq)
            ).scalar_one()
            if head_exists:
                self._conn.execute(
                    update(resource).where(resource.c.type == type_, resource.c.id == id_)
                    .values(version=version, seq=seq, deleted=deleted)
                )
            else:
                self._conn.execute(insert(resource).values(type=type_, id=id_, version=version, seq=seq,
                                                           deleted=deleted))
            if indexed:
                self._conn.execute(insert(outbox).values(seq=seq, type=type_, id=id_, attempts=0))
        except IntegrityError as exc:
            raise ConcurrentWrite(f"{type_}/{id_} was written concurrently") from exc
        self._log(type_, seq)
        return StoredVersion(seq, type_, id_, version, ts, method, deleted, content)

    def put(self, type_: str, id_: str, resource_: dict[str, Any], *, method: str, if_match: int | None = None,
            must_not_exist: bool = False, indexed: bool = True) -> StoredVersion:
        """Append a version; ``indexed=False`` for types Elasticsearch never holds (no outbox row)."""
        head = self._head(type_, id_)
        if head is not None and must_not_exist:
            raise ConcurrentWrite(f"{type_}/{id_} already exists")
        current = head.version if head is not None else None
        if if_match is not None and if_match != current:
            raise VersionConflict(current)
        version = (current or 0) + 1
        ts = now_us()
        meta = dict(resource_.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(ts)
        body: dict[str, Any] = {"resourceType": type_, "id": id_, "meta": meta}
        body.update((k, v) for k, v in resource_.items() if k not in ("resourceType", "id", "meta"))
        keys = extract_keys(body)
        self._check_unique(type_, id_, keys)
        stored = self._append(type_, id_, version, method, numbers.dumps(body), ts, head is not None, indexed)
        self._replace_keys(type_, id_, keys, head is not None)
        return stored

    def delete(self, type_: str, id_: str, *, if_match: int | None = None,
               indexed: bool = True) -> StoredVersion | None:
        head = self._head(type_, id_)
        if head is None:
            if if_match is not None:
                raise VersionConflict(None)
            return None
        if if_match is not None and if_match != head.version:
            raise VersionConflict(head.version)
        if head.deleted:
            return None  # deleting a deleted resource changes nothing
        stored = self._append(type_, id_, head.version + 1, "DELETE", None, now_us(), True, indexed)
        self._replace_keys(type_, id_, set(), True)
        return stored

    def insert_new_many(self, items: list[NewResource]) -> list[StoredVersion | None]:
        """Version 1 of each item whose id is new, one statement per table (the bulk load); None for the others.

        Declined, for the caller to write in order through :meth:`put`: an id that exists or that an earlier
        item takes, and a unique key (masterIdentifier) a current resource holds or several items carry (the
        409 policy then decides which one wins). What is written is what ``put`` would write: version, head,
        outbox row, match keys and the tracked types' log.
        """
        taken: set[tuple[str, str]] = set()
        candidates: list[int] = []
        by_type: dict[str, list[str]] = {}
        for i, it in enumerate(items):
            if (it.type, it.id) not in taken:
                taken.add((it.type, it.id))
                candidates.append(i)
                by_type.setdefault(it.type, []).append(it.id)
        existing: set[tuple[str, str]] = set()
        for type_, ids in by_type.items():
            for j in range(0, len(ids), _SQL_IN):
                stmt = select(resource.c.id).where(resource.c.type == type_, resource.c.id.in_(ids[j:j + _SQL_IN]))
                existing.update((type_, r.id) for r in self._conn.execute(stmt))

        def unique_of(it: NewResource) -> list[tuple[str, str, str, str]]:
            return [(it.type, k.element, k.system, k.value) for k in it.keys
                    if k.element in UNIQUE_ELEMENTS.get(it.type, ())]

        carried = Counter(u for i in candidates for u in unique_of(items[i]))
        held: set[tuple[str, str, str, str]] = set()
        for u in sorted(carried):
            type_, element, system, value = u
            self.lock_values(type_, [value])
            if self.match(type_, (element,), system, value):
                held.add(u)
        keep = [items[i] for i in candidates if (items[i].type, items[i].id) not in existing
                and not any(u in held or carried[u] > 1 for u in unique_of(items[i]))]
        out: dict[tuple[str, str], StoredVersion] = {}
        if keep:
            try:
                result = self._conn.execute(insert(_V).returning(_V.c.seq, sort_by_parameter_order=True), [
                    {"type": it.type, "id": it.id, "version": 1, "last_updated_us": it.last_updated_us,
                     "method": it.method, "deleted": False, "content": it.content} for it in keep])
                seqs = [r.seq for r in result]
                self._conn.execute(insert(resource), [{"type": it.type, "id": it.id, "version": 1, "seq": seq,
                                                       "deleted": False} for it, seq in zip(keep, seqs, strict=True)])
                if outbox_rows := [{"seq": seq, "type": it.type, "id": it.id, "attempts": 0}
                                   for it, seq in zip(keep, seqs, strict=True) if it.indexed]:
                    self._conn.execute(insert(outbox), outbox_rows)
                if key_rows := [{"type": it.type, "id": it.id, "element": k.element, "system": k.system,
                                 "value": k.value} for it in keep for k in it.keys]:
                    self._conn.execute(insert(match_key), key_rows)
            except IntegrityError as exc:  # an id created meanwhile by another transaction (PostgreSQL)
                raise ConcurrentWrite(f"a resource of the batch was written concurrently: {exc.orig}") from exc
            for it, seq in zip(keep, seqs, strict=True):
                self._log(it.type, seq)
                out[(it.type, it.id)] = StoredVersion(seq, it.type, it.id, 1, it.last_updated_us, it.method, False,
                                                      it.content)
        first = set(candidates)  # a repeated id's later items are declined: they are its next versions
        return [out.get((it.type, it.id)) if i in first else None for i, it in enumerate(items)]


class SQLResourceStore:
    """See :class:`fhir_server.storage.base.ResourceStore`."""

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_s)
        self.dialect = self.engine.dialect.name
        p = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._marker_sql = f"SELECT seq, versions FROM {type_log.name} WHERE type = {p}"

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        self.backfill_match_keys()
        self.backfill_type_log()

    def data_migrated(self, name: str) -> bool:
        """Whether the one-time data migration ``name`` (a rewrite of stored content) has run on this store."""
        with self.engine.connect() as conn:
            return conn.execute(select(type_log.c.seq).where(type_log.c.type == f"$migration:{name}")).first() \
                is not None

    def mark_data_migrated(self, name: str) -> None:
        """Record that ``name`` ran (a ``type_log`` row: the table of per-key markers the store already has)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with self.engine.begin() as conn:
            conn.execute(dialect.insert(type_log).values(type=f"$migration:{name}", seq=1, versions=0)
                         .on_conflict_do_nothing(index_elements=[type_log.c.type]))

    def backfill_type_log(self) -> None:
        """Create the ``type_log`` row of each tracked type that has none (a store older than the table, a new
        tracked type) from the versions already stored. SQLite: under the write lock, so exact. PostgreSQL: a
        writer committing meanwhile either creates the row first (it then counts from there: only differences
        of the marker matter) or bumps the one inserted here."""
        with self.engine.connect() as conn:
            missing = TRACKED_TYPES - {r.type for r in conn.execute(select(type_log.c.type))}
        if not missing:
            return
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        with self._write_conn() as conn:
            for type_ in sorted(missing):
                top, n = conn.execute(select(func.max(_V.c.seq), func.count()).select_from(_V)
                                      .where(_V.c.type == type_)).one()
                conn.execute(dialect.insert(type_log).values(type=type_, seq=int(top or 0), versions=int(n))
                             .on_conflict_do_nothing(index_elements=[type_log.c.type]))

    def backfill_match_keys(self, force: bool = False, batch: int = 500) -> int:
        """Derive the match keys of every current resource when they predate the current rules.

        Runs at start-up (from :meth:`create_schema`): a no-op once the marker row holds
        :data:`keys.RULES_VERSION`. A resource rewritten meanwhile is skipped (its writer
        stored fresh keys). Returns the number of resources whose keys were rebuilt.
        """
        mk, (m_type, m_id, m_element) = match_key, RULES_MARKER
        marker = (mk.c.type == m_type) & (mk.c.id == m_id) & (mk.c.element == m_element)
        with self.engine.connect() as conn:
            current = conn.execute(select(mk.c.value).where(marker)).scalar()
            types = [r.type for r in conn.execute(select(resource.c.type).distinct())]
        if current == str(RULES_VERSION) and not force:
            return 0
        done = 0
        for type_ in types:
            for versions in self.iter_current(type_, batch):
                with self._write_conn() as conn:
                    unit = SQLWriteUnit(conn, for_update=self.dialect != "sqlite")
                    for v in versions:
                        head = unit._head(type_, v.id)
                        if head is None or head.seq != v.seq:
                            continue
                        unit._replace_keys(type_, v.id, extract_keys(v.resource()), True)
                        done += 1
        try:
            with self._write_conn() as conn:
                conn.execute(delete(mk).where(marker))
                conn.execute(insert(mk).values(type=m_type, id=m_id, element=m_element, system="",
                                               value=str(RULES_VERSION)))
        except IntegrityError:
            pass  # another process starting at the same time wrote it
        return done

    def dispose(self) -> None:
        self.engine.dispose()

    def secret(self, name: str) -> bytes:
        """The store's random secret ``name`` (32 bytes), created on first use: every process sharing the store
        reads the same one, whichever created it (insert-if-absent, then read)."""
        stmt = select(server_secret.c.value).where(server_secret.c.name == name)
        with self.engine.connect() as conn:
            value = conn.execute(stmt).scalar()
        if value is None:
            dialect = postgresql if self.dialect == "postgresql" else sqlite
            with self._write_conn() as conn:
                conn.execute(dialect.insert(server_secret).values(name=name, value=secrets.token_hex(32))
                             .on_conflict_do_nothing(index_elements=[server_secret.c.name]))
                value = conn.execute(stmt).scalar_one()
        return bytes.fromhex(value)

    @contextmanager
    def _write_conn(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def criteria_locks(self, keys: list[str]) -> Iterator[None]:
        """Cross-process locks on normalised conditional criteria, held until the block ends.

        PostgreSQL: session-level advisory locks on a connection of their own (autocommit,
        so no transaction stays open), taken in the caller's order. SQLite serves one
        process: the caller's in-process lock is enough.
        """
        if self.dialect == "sqlite" or not keys:
            yield
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                for key in keys:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_id("\x01criteria", key)})
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))

    @contextmanager
    def unit(self) -> Iterator[SQLWriteUnit]:
        try:
            with self._write_conn() as conn:
                unit = SQLWriteUnit(conn, for_update=self.dialect != "sqlite")
                yield unit
                unit.flush_log()
        except OperationalError as exc:
            if lock_unavailable(exc):  # nothing conflicted: the write could not start (503, retry)
                raise StoreBusy(str(exc.orig)) from exc
            raise ConcurrentWrite(str(exc.orig)) from exc  # serialisation failures, deadlocks: a lost race (409)

    # -- reads ---------------------------------------------------------------------------------
    def read(self, type_: str, id_: str) -> StoredVersion | None:
        stmt = (select(*_VERSION_COLS).select_from(resource.join(_V, _V.c.seq == resource.c.seq))
                .where(resource.c.type == type_, resource.c.id == id_))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _row_to_version(row) if row else None

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None:
        stmt = select(*_VERSION_COLS).where(_V.c.type == type_, _V.c.id == id_, _V.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _row_to_version(row) if row else None

    def read_many(self, type_: str, ids: list[str]) -> dict[str, StoredVersion]:
        if not ids:
            return {}
        stmt = (select(*_VERSION_COLS).select_from(resource.join(_V, _V.c.seq == resource.c.seq))
                .where(resource.c.type == type_, resource.c.id.in_(ids)))
        with self.engine.connect() as conn:
            return {r.id: _row_to_version(r) for r in conn.execute(stmt)}

    def ids_with_keys(self, type_: str, keys: list[tuple[str, str]]) -> set[str]:
        """Ids of the current resources of ``type_`` holding one of ``keys`` ((element, value) match keys,
        any system); e.g. the Consents naming an actor (``keys.CONSENT_ACTOR``), without the search index."""
        by_element: dict[str, list[str]] = {}
        for element, value in sorted(set(keys)):
            by_element.setdefault(element, []).append(value)
        mk, out = match_key, set[str]()
        with self.engine.connect() as conn:
            for element, values in by_element.items():
                for i in range(0, len(values), _SQL_IN):
                    stmt = select(mk.c.id).where(mk.c.type == type_, mk.c.value.in_(values[i:i + _SQL_IN]),
                                                 mk.c.element == element).distinct()
                    out.update(r.id for r in conn.execute(stmt))
        return out

    def _history_filter(self, stmt: Any, type_: str | None, id_: str | None, since_us: int | None) -> Any:
        if type_ is not None:
            stmt = stmt.where(_V.c.type == type_)
        if id_ is not None:
            stmt = stmt.where(_V.c.id == id_)
        if since_us is not None:
            stmt = stmt.where(_V.c.last_updated_us >= since_us)
        return stmt

    def history(self, type_: str | None, id_: str | None, *, before_seq: int | None, since_us: int | None,
                count: int) -> list[StoredVersion]:
        stmt = self._history_filter(select(*_VERSION_COLS), type_, id_, since_us)
        if before_seq is not None:
            stmt = stmt.where(_V.c.seq < before_seq)
        stmt = stmt.order_by(_V.c.seq.desc()).limit(count)
        with self.engine.connect() as conn:
            return [_row_to_version(r) for r in conn.execute(stmt)]

    def history_total(self, type_: str | None, id_: str | None, *, since_us: int | None) -> int:
        stmt = self._history_filter(select(func.count()).select_from(_V), type_, id_, since_us)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def log_marker(self, type_: str) -> tuple[int, int]:
        """(highest seq, number of versions) of a tracked type's log: one primary-key read of ``type_log``.

        It changes with every committed version of the type, also one committed below the highest seq
        (PostgreSQL), since the count moves; the difference of two counts is the number of versions committed
        between the two reads. (0, 0) until the row exists.
        """
        if type_ not in TRACKED_TYPES:
            raise ValueError(f"{type_} has no change log (storage.sql.TRACKED_TYPES)")
        # every professional's request reads this: on the pool's DB-API connection, one statement and no
        # transaction around it (SQLAlchemy's connect/begin/rollback made it ~100 us on SQLite; this, ~8 us)
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute(self._marker_sql, (type_,))
                row = cur.fetchone()
            finally:
                cur.close()
        finally:
            raw.close()  # back to the pool (PostgreSQL: rolled back there)
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def iter_current(self, type_: str, batch: int) -> Iterator[list[StoredVersion]]:
        """Current non-deleted versions of a type, keyset-paged by id (constant memory)."""
        last_id = ""
        while True:
            stmt = (select(*_VERSION_COLS).select_from(resource.join(_V, _V.c.seq == resource.c.seq))
                    .where(resource.c.type == type_, resource.c.deleted.is_(False), resource.c.id > last_id)
                    .order_by(resource.c.id).limit(batch))
            with self.engine.connect() as conn:
                rows = [_row_to_version(r) for r in conn.execute(stmt)]
            if not rows:
                return
            yield rows
            last_id = rows[-1].id

    def count_current(self, type_: str) -> int:
        """Current (not deleted) resources of a type: a count over its head rows, no content read."""
        stmt = select(func.count()).select_from(resource).where(resource.c.type == type_,
                                                                resource.c.deleted.is_(False))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def changed_since(self, seq: int) -> list[tuple[str, str]]:
        stmt = select(_V.c.type, _V.c.id).where(_V.c.seq > seq).distinct()
        with self.engine.connect() as conn:
            return [(r.type, r.id) for r in conn.execute(stmt)]

    def max_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(_V.c.seq), 0))).scalar_one())

    # -- outbox --------------------------------------------------------------------------------
    def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        stmt = select(outbox.c.seq, outbox.c.type, outbox.c.id, outbox.c.attempts).order_by(outbox.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [OutboxEntry(r.seq, r.type, r.id, r.attempts) for r in conn.execute(stmt)]

    def outbox_max_seq(self) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(outbox.c.seq))).scalar_one()
        return int(value) if value is not None else None

    def outbox_pending_upto(self, seq: int) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(outbox.c.seq).where(outbox.c.seq <= seq).limit(1)).first() is not None

    def outbox_done(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._write_conn() as conn:
            for i in range(0, len(seqs), 500):
                conn.execute(delete(outbox).where(outbox.c.seq.in_(seqs[i:i + 500])))

    def outbox_failed(self, entries: list[tuple[OutboxEntry, str]], max_attempts: int) -> None:
        """Count a failed attempt; past ``max_attempts`` park the entry in ``index_error``."""
        with self._write_conn() as conn:
            for entry, error in entries:
                if entry.attempts + 1 >= max_attempts:
                    conn.execute(delete(index_error).where(index_error.c.seq == entry.seq))
                    conn.execute(insert(index_error).values(seq=entry.seq, type=entry.type, id=entry.id,
                                                            error=error[:2000]))
                    conn.execute(delete(outbox).where(outbox.c.seq == entry.seq))
                else:
                    conn.execute(update(outbox).where(outbox.c.seq == entry.seq)
                                 .values(attempts=outbox.c.attempts + 1))

    def outbox_enqueue(self, items: list[tuple[str, str]]) -> None:
        """Mark resources for re-indexing (reindex catch-up), keyed by their head ``seq``."""
        if not items:
            return
        with self._write_conn() as conn:
            for type_, id_ in items:
                head = conn.execute(select(resource.c.seq).where(resource.c.type == type_,
                                                                 resource.c.id == id_)).first()
                if head is None:
                    continue
                exists = conn.execute(select(outbox.c.seq).where(outbox.c.seq == head.seq)).first()
                if exists is None:
                    conn.execute(insert(outbox).values(seq=head.seq, type=type_, id=id_, attempts=0))

    def index_errors(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(index_error).order_by(index_error.c.seq))]
