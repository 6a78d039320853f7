"""A write transaction of the version store (:class:`SQLWriteUnit`), for SQLite (WAL) and PostgreSQL.

Concurrency model: a write transaction locks the head row of the resource it
changes (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers with
``BEGIN IMMEDIATE``). The unique key ``(type, id, version)`` is the last line of
defence: two writers can never both create the same version.

Conditional interactions lock the identifier values they match on
(``pg_advisory_xact_lock``; SQLite writers are already serialised), then read
``match_key`` inside the same transaction, so concurrent identical conditional
creates produce exactly one resource.

Change log of tracked types (:data:`TRACKED_TYPES`): a write unit that writes versions of such a type bumps
its ``type_log`` row (highest seq, number of versions) just before it commits, so
:meth:`fhir_server.storage.sql.SQLResourceStore.log_marker` is one primary-key read. The row lock that bump takes
serialises the commits of that type's writers (only them: other types never touch the table), from the bump to
the commit, so the count is exact even where PostgreSQL commits seqs out of order.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from sqlalchemy import Connection, case, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from fhir_server.formats import numbers

from .base import ConcurrentWrite, NewResource, StoredVersion, VersionConflict
from .engine import dialect_insert
from .keys import UNIQUE_ELEMENTS, MatchKey, UniqueKeyViolation, extract_keys, lock_id
from .outbox import queue_rows
from .schema import match_key, resource, resource_version, type_log

#: Types whose change log is kept in ``type_log`` (read on every professional's request by the Consent look-up).
#: Each costs its writers one row update and serialises their commits: keep it to the types that need a marker.
TRACKED_TYPES = frozenset({"Consent"})

_SQL_IN = 500  # values per IN (...) list

_V = resource_version
#: The columns of a :class:`StoredVersion`, in the order :func:`row_to_version` reads them.
VERSION_COLUMNS = (_V.c.seq, _V.c.type, _V.c.id, _V.c.version, _V.c.last_updated_us, _V.c.method, _V.c.deleted,
                   _V.c.content)


def row_to_version(row: Any) -> StoredVersion:
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


def now_us() -> int:
    return time.time_ns() // 1000


def format_instant(us: int) -> str:
    """FHIR ``instant`` with microseconds and an explicit UTC offset."""
    secs, micros = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}+00:00"


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
        insert_ = dialect_insert(self._conn)
        for type_, (top, n) in sorted(self._logged.items()):  # one order: no deadlock between two tracked types
            ins = insert_(type_log).values(type=type_, seq=top, versions=n)
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

    def rekey(self, type_: str, id_: str, seq: int, keys: set[MatchKey]) -> bool:
        """Replace the match keys of ``type_/id_`` if its head is still version ``seq`` (the start-up backfill:
        a resource rewritten meanwhile has fresh keys from its writer). Whether it did."""
        head = self._head(type_, id_)
        if head is None or head.seq != seq:
            return False
        self._replace_keys(type_, id_, keys, True)
        return True

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None:
        row = self._conn.execute(select(*VERSION_COLUMNS).where(_V.c.type == type_, _V.c.id == id_,
                                                             _V.c.version == version)).first()
        return row_to_version(row) if row else None

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
        row = self._conn.execute(select(*VERSION_COLUMNS).where(_V.c.seq == head.seq)).first()
        return row_to_version(row) if row else None

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
                queue_rows(self._conn, [{"seq": seq, "type": type_, "id": id_}])
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
                queue_rows(self._conn, [{"seq": seq, "type": it.type, "id": it.id}
                                        for it, seq in zip(keep, seqs, strict=True) if it.indexed])
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
