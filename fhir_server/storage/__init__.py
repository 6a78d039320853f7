"""Store of record: every version of every resource (``sql.py``, ``unit.py``), the index outbox (``outbox.py``),
start-up backfills (``backfill.py``) and the schema's migrations (``migrations``)."""

from .base import (
    ConcurrentWrite,
    IndexFailure,
    NewResource,
    Outbox,
    OutboxEntry,
    ResourceStore,
    StoreBusy,
    StoredVersion,
    VersionConflict,
    WriteUnit,
    governing_version,
    version_number,
)
from .keys import MatchKey, UniqueKeyViolation
from .outbox import SQLOutbox
from .sql import SQLResourceStore
from .unit import SQLWriteUnit, format_instant, now_us


def open_store(url: str, *, busy_timeout_s: float = 30.0) -> SQLResourceStore:
    """The store for a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``), its schema migrated
    to the current revision and its derived data backfilled."""
    store = SQLResourceStore(url, busy_timeout_s=busy_timeout_s)
    store.create_schema()
    return store


__all__ = [
    "ConcurrentWrite",
    "IndexFailure",
    "MatchKey",
    "NewResource",
    "Outbox",
    "OutboxEntry",
    "ResourceStore",
    "SQLOutbox",
    "SQLResourceStore",
    "SQLWriteUnit",
    "StoreBusy",
    "StoredVersion",
    "UniqueKeyViolation",
    "VersionConflict",
    "WriteUnit",
    "format_instant",
    "governing_version",
    "now_us",
    "open_store",
    "version_number",
]
