"""Store of record: every version of every resource, plus the index outbox."""

from .base import (
    ConcurrentWrite,
    NewResource,
    OutboxEntry,
    ResourceStore,
    StoredVersion,
    VersionConflict,
    WriteUnit,
    version_number,
)
from .keys import MatchKey, UniqueKeyViolation
from .sql import SQLResourceStore, format_instant, now_us


def open_store(url: str) -> SQLResourceStore:
    """The store for a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``)."""
    store = SQLResourceStore(url)
    store.create_schema()
    return store


__all__ = [
    "ConcurrentWrite",
    "MatchKey",
    "NewResource",
    "OutboxEntry",
    "ResourceStore",
    "SQLResourceStore",
    "StoredVersion",
    "UniqueKeyViolation",
    "VersionConflict",
    "WriteUnit",
    "format_instant",
    "now_us",
    "open_store",
    "version_number",
]
