"""The version store in SQL (:class:`SQLResourceStore`), for SQLite (WAL) and PostgreSQL: reads, history, the
tracked types' change log, write units (``unit.py``), the index outbox (``outbox.py``) and, at start-up, the
schema migrations (``migrations``) and data backfills (``backfill.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from . import backfill, migrations
from .base import ConcurrentWrite, Outbox, StoreBusy, StoredVersion
from .engine import dialect_insert, lock_unavailable, make_engine, write_conn
from .keys import lock_id
from .outbox import SQLOutbox
from .schema import match_key, resource, resource_version, server_secret, type_log
from .unit import TRACKED_TYPES, VERSION_COLUMNS, SQLWriteUnit, row_to_version

_SQL_IN = 500  # values per IN (...) list
_V = resource_version


class SQLResourceStore:
    """See :class:`fhir_server.storage.base.ResourceStore`."""

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_s)
        self.dialect = self.engine.dialect.name
        p = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._marker_sql = f"SELECT seq, versions FROM {type_log.name} WHERE type = {p}"
        self._outbox = SQLOutbox(self.engine)

    @property
    def outbox(self) -> Outbox:
        """The index outbox; its users (indexer, reindex, bulk load, search) see the interface only."""
        return self._outbox

    def create_schema(self) -> None:
        """Bring the database to the current schema (migrations), then the data the rules derive (backfills)."""
        migrations.upgrade(self.engine)
        backfill.run_all(self)

    def data_migrated(self, name: str) -> bool:
        """Whether the one-time data migration ``name`` (a rewrite of stored content) has run on this store."""
        with self.engine.connect() as conn:
            return conn.execute(select(type_log.c.seq).where(type_log.c.type == f"$migration:{name}")).first() \
                is not None

    def mark_data_migrated(self, name: str) -> None:
        """Record that ``name`` ran (a ``type_log`` row: the table of per-key markers the store already has)."""
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(conn)(type_log).values(type=f"$migration:{name}", seq=1, versions=0)
                         .on_conflict_do_nothing(index_elements=[type_log.c.type]))

    def dispose(self) -> None:
        self.engine.dispose()

    def secret(self, name: str) -> bytes:
        """The store's random secret ``name`` (32 bytes), created on first use: every process sharing the store
        reads the same one, whichever created it (insert-if-absent, then read)."""
        stmt = select(server_secret.c.value).where(server_secret.c.name == name)
        with self.engine.connect() as conn:
            value = conn.execute(stmt).scalar()
        if value is None:
            with write_conn(self.engine) as conn:
                conn.execute(dialect_insert(conn)(server_secret).values(name=name, value=secrets.token_hex(32))
                             .on_conflict_do_nothing(index_elements=[server_secret.c.name]))
                value = conn.execute(stmt).scalar_one()
        return bytes.fromhex(value)

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
            with write_conn(self.engine) as conn:
                unit = SQLWriteUnit(conn, for_update=self.dialect != "sqlite")
                yield unit
                unit.flush_log()
        except OperationalError as exc:
            if lock_unavailable(exc):  # nothing conflicted: the write could not start (503, retry)
                raise StoreBusy(str(exc.orig)) from exc
            raise ConcurrentWrite(str(exc.orig)) from exc  # serialisation failures, deadlocks: a lost race (409)

    # -- reads ---------------------------------------------------------------------------------
    def read(self, type_: str, id_: str) -> StoredVersion | None:
        stmt = (select(*VERSION_COLUMNS).select_from(resource.join(_V, _V.c.seq == resource.c.seq))
                .where(resource.c.type == type_, resource.c.id == id_))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return row_to_version(row) if row else None

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None:
        stmt = select(*VERSION_COLUMNS).where(_V.c.type == type_, _V.c.id == id_, _V.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return row_to_version(row) if row else None

    def read_many(self, type_: str, ids: list[str]) -> dict[str, StoredVersion]:
        if not ids:
            return {}
        stmt = (select(*VERSION_COLUMNS).select_from(resource.join(_V, _V.c.seq == resource.c.seq))
                .where(resource.c.type == type_, resource.c.id.in_(ids)))
        with self.engine.connect() as conn:
            return {r.id: row_to_version(r) for r in conn.execute(stmt)}

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
        stmt = self._history_filter(select(*VERSION_COLUMNS), type_, id_, since_us)
        if before_seq is not None:
            stmt = stmt.where(_V.c.seq < before_seq)
        stmt = stmt.order_by(_V.c.seq.desc()).limit(count)
        with self.engine.connect() as conn:
            return [row_to_version(r) for r in conn.execute(stmt)]

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
            stmt = (select(*VERSION_COLUMNS).select_from(resource.join(_V, _V.c.seq == resource.c.seq))
                    .where(resource.c.type == type_, resource.c.deleted.is_(False), resource.c.id > last_id)
                    .order_by(resource.c.id).limit(batch))
            with self.engine.connect() as conn:
                rows = [row_to_version(r) for r in conn.execute(stmt)]
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
