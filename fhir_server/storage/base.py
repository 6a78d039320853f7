"""The store-of-record interface, independent of the SQL dialect behind it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from fhir_common.types import Resource
from fhir_server.errors import FHIRError
from fhir_server.formats import numbers

from .keys import MatchKey


def version_number(text: str) -> int | None:
    """A version id as the store holds it: ASCII digits (no int('²')) that fit an INTEGER (no SQLite overflow)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of one resource as the store holds it."""

    seq: int
    type: str
    id: str
    version: int
    last_updated_us: int
    method: str
    deleted: bool
    content: bytes | None

    @property
    def last_updated(self) -> datetime:
        return datetime.fromtimestamp(self.last_updated_us / 1_000_000, tz=UTC)

    def resource(self) -> Resource:
        if self.content is None:
            raise ValueError(f"{self.type}/{self.id} version {self.version} is a deletion")
        data: Resource = numbers.loads(self.content)  # decimals keep their digits
        return data


def governing_version(current: StoredVersion | None,
                      vread: Callable[[str, str, int], StoredVersion | None]) -> StoredVersion | None:
    """The version whose content governs every version of a resource: the current one, or for a deleted
    resource the last version with content (None: unknown, or no version with content). ``vread``: the store's
    or a write unit's (which sees its own transaction).

    Access decisions read it (``security.authz`` for reads and history, the write engine for its targets): a
    version written before a label, or before the resource entered an opposed patient's compartment, must
    not be served while the resource itself answers as unknown."""
    version = current
    while version is not None and (version.deleted or version.content is None):
        if version.version <= 1:  # (the store never starts a resource with a deletion)
            return None
        version = vread(version.type, version.id, version.version - 1)
    return version


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A resource whose index entry is stale since version ``seq``, and how often indexing it failed."""

    seq: int
    type: str
    id: str
    attempts: int


@dataclass(frozen=True, slots=True)
class IndexFailure:
    """An outbox entry the indexer gave up on (its document could not be built or stored), with the reason."""

    seq: int
    type: str
    id: str
    error: str


@dataclass(frozen=True, slots=True)
class NewResource:
    """A resource its producer already stamped as version 1 (``meta.versionId`` "1", ``meta.lastUpdated`` =
    ``last_updated_us``), with its match keys: what :meth:`WriteUnit.insert_new_many` writes in batches."""

    type: str
    id: str
    method: str  # PUT (the client's id) | POST (a server id)
    last_updated_us: int
    content: bytes
    keys: frozenset[MatchKey]
    indexed: bool = True  # False for types Elasticsearch never holds (no outbox row)


class VersionConflict(Exception):
    """``If-Match`` named another version than the current one."""

    def __init__(self, current: int | None) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


class ConcurrentWrite(Exception):
    """Another transaction wrote the same resource at the same time."""


class StoreBusy(FHIRError):
    """The store's write lock stayed taken past the busy timeout (another process or a long transaction holds it).

    Not a conflict with another write of the same data (409 :class:`ConcurrentWrite`): this write never started
    and may simply be retried, so 503 + ``Retry-After``. A :class:`FHIRError`, so every layer that answers errors
    (single interactions, batch entries, transactions) answers it without knowing the store."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "transient", f"The store is busy ({detail}); retry shortly",
                         headers={"Retry-After": "1"})


class WriteUnit(Protocol):
    """Writes that commit together (one store transaction), outbox rows included."""

    def put(
        self,
        type_: str,
        id_: str,
        resource: Resource,
        *,
        method: str,
        if_match: int | None = None,
        must_not_exist: bool = False,
        indexed: bool = True,
    ) -> StoredVersion: ...

    def delete(self, type_: str, id_: str, *, if_match: int | None = None,
               indexed: bool = True) -> StoredVersion | None: ...

    def insert_new_many(self, items: list[NewResource]) -> list[StoredVersion | None]: ...

    def current(self, type_: str, id_: str) -> StoredVersion | None: ...

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None: ...

    def lock_values(self, type_: str, values: list[str]) -> None: ...

    def lock_resources(self, keys: list[tuple[str, str]]) -> None: ...

    def match(self, type_: str, elements: tuple[str, ...], system: str | None, value: str | None) -> set[str]: ...


class Outbox(Protocol):
    """The queue of resources whose search-index entry is stale (the indexer's work), filled by write units in
    the transaction of the versions, drained once Elasticsearch has them and they are searchable."""

    def pending(self, limit: int) -> list[OutboxEntry]: ...

    def max_seq(self) -> int | None: ...

    def pending_upto(self, seq: int) -> bool: ...

    def done(self, seqs: list[int]) -> None: ...

    def failed(self, entries: list[tuple[OutboxEntry, str]], max_attempts: int) -> None: ...

    def enqueue(self, items: list[tuple[str, str]]) -> None: ...

    def errors(self, limit: int | None = None) -> list[IndexFailure]: ...

    def retry_errors(self) -> int: ...


class ResourceStore(Protocol):
    """Versioned store of record; its :attr:`outbox` is the search index's transactional outbox."""

    @property
    def outbox(self) -> Outbox: ...

    def create_schema(self) -> None: ...

    def unit(self) -> AbstractContextManager[WriteUnit]: ...

    def criteria_locks(self, keys: list[str]) -> AbstractContextManager[None]: ...

    def read(self, type_: str, id_: str) -> StoredVersion | None: ...

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None: ...

    def read_many(self, type_: str, ids: list[str]) -> dict[str, StoredVersion]: ...

    def ids_with_keys(self, type_: str, keys: list[tuple[str, str]]) -> set[str]: ...

    def history(
        self,
        type_: str | None,
        id_: str | None,
        *,
        before_seq: int | None,
        since_us: int | None,
        count: int,
    ) -> list[StoredVersion]: ...

    def history_total(self, type_: str | None, id_: str | None, *, since_us: int | None) -> int: ...

    def log_marker(self, type_: str) -> tuple[int, int]: ...

    def iter_current(self, type_: str, batch: int) -> Iterator[list[StoredVersion]]: ...

    def count_current(self, type_: str) -> int: ...

    def changed_since(self, seq: int) -> list[tuple[str, str]]: ...

    def max_seq(self) -> int: ...

    def dispose(self) -> None: ...
