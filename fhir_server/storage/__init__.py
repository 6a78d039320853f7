"""Store of record: every version of every resource, plus the index outbox."""

from .base import (
    ConcurrentWrite,
    NewResource,
    OutboxEntry,
    ResourceStore,
    StoreBusy,
    StoredVersion,
    VersionConflict,
    WriteUnit,
    version_number,
)
from .keys import MatchKey, UniqueKeyViolation
from .sql import SQLResourceStore, format_instant, now_us


def open_store(url: str, *, busy_timeout_s: float = 30.0) -> SQLResourceStore:
    """The store for a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``)."""
    store = SQLResourceStore(url, busy_timeout_s=busy_timeout_s)
    store.create_schema()
    return store


__all__ = [
    "ConcurrentWrite",
    "MatchKey",
    "NewResource",
    "OutboxEntry",
    "ResourceStore",
    "SQLResourceStore",
    "StoreBusy",
    "StoredVersion",
    "UniqueKeyViolation",
    "VersionConflict",
    "WriteUnit",
    "format_instant",
    "now_us",
    "open_store",
    "version_number",
]
