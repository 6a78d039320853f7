"""Store of record: every version of every resource, plus the index outbox."""

from .base import ConcurrentWrite, OutboxEntry, ResourceStore, StoredVersion, VersionConflict, WriteUnit
from .sql import SQLResourceStore, format_instant, now_us


def open_store(url: str) -> SQLResourceStore:
    """The store for a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``)."""
    store = SQLResourceStore(url)
    store.create_schema()
    return store


__all__ = [
    "ConcurrentWrite",
    "OutboxEntry",
    "ResourceStore",
    "SQLResourceStore",
    "StoredVersion",
    "VersionConflict",
    "WriteUnit",
    "format_instant",
    "now_us",
    "open_store",
]
