"""Tables of the store of record (SQLAlchemy Core, portable SQLite/PostgreSQL).

- ``resource_version``: every version of every resource, append-only. Its ``seq``
  is the global log position (Blaze's transaction log idea): history is read by
  ``seq`` and the indexer follows it.
- ``resource``: one head row per logical resource (current version, deleted
  flag). Optimistic concurrency and reindexing use it, so neither has to scan
  versions.
- ``outbox``: resources whose index entry is stale, written in the same
  transaction as the version. The indexer deletes a row once Elasticsearch has
  the version and it is searchable.
- ``match_key``: the identifiers of every current resource, for conditional
  interactions that must see the transaction's own writes (see ``keys.py``).
- ``audit_event`` / ``audit_ref``: the audit trail (``fhir_server/audit``), append-only, one row per
  AuditEvent, never versioned nor indexed in Elasticsearch; ``audit_ref`` holds the entity and agent
  references with the time, so ``AuditEvent?patient=`` is one index range scan (``storage/audit.py``).
- ``server_secret``: random secrets shared by the processes of one store (the page cursors' MAC key).
- ``rules_version``: the version of the rules that derived each kind of derived data (``backfill.py``).

A change here is a new Alembic revision too (``migrations/``); ``tests/test_migrations.py`` compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

# SQLite only auto-increments INTEGER PRIMARY KEY columns; PostgreSQL gets BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

resource_version = Table(
    "resource_version",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated_us", BigInteger, nullable=False),  # epoch microseconds, UTC
    Column("method", String(8), nullable=False),  # POST | PUT | DELETE | PATCH (history request)
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),  # JSON bytes; NULL for deletions
    UniqueConstraint("type", "id", "version", name="uq_resource_version"),
    Index("ix_resource_version_type_seq", "type", "seq"),
)

resource = Table(
    "resource",
    metadata,
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    PrimaryKeyConstraint("type", "id", name="pk_resource"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # = resource_version.seq
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
)

index_error = Table(
    "index_error",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("error", String(2000), nullable=False),
)

match_key = Table(
    "match_key",
    metadata,
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("element", String(32), nullable=False),  # identifier | masterIdentifier
    Column("system", String(255), nullable=False),  # "" when absent
    Column("value", String(255), nullable=False),
    PrimaryKeyConstraint("type", "id", "element", "system", "value", name="pk_match_key"),
    Index("ix_match_key_value", "type", "value"),
)

audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),
    Column("recorded_us", BigInteger, nullable=False),  # AuditEvent.recorded, epoch microseconds, UTC
    Column("action", String(1), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("subtype", String(32), nullable=False),  # restful-interaction code
    Column("content", LargeBinary, nullable=False),  # the AuditEvent's facts, JSON (rendered as FHIR on read)
    UniqueConstraint("id", name="uq_audit_event_id"),
    Index("ix_audit_event_recorded", "recorded_us", "id"),
)

audit_ref = Table(
    "audit_ref",
    metadata,
    Column("kind", String(1), nullable=False),  # e: entity.what, a: agent.who
    Column("reference", String(255), nullable=False),  # Patient/1, Practitioner/dr
    Column("recorded_us", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),  # = audit_event.id
    PrimaryKeyConstraint("kind", "reference", "recorded_us", "event_id", name="pk_audit_ref"),
)

audit_journal = Table(
    "audit_journal",
    metadata,
    # one row per journal slot (fhir_server/audit/journal.py): how far its records are in audit_event,
    # written in the transaction that inserts them, so a replay after a crash applies each record once
    Column("slot", String(64), primary_key=True),  # the slot's own UUID (its directory may move)
    Column("segment", BigInteger, nullable=False),  # the segment file number
    Column("byte_offset", BigInteger, nullable=False),  # the end of the last applied record in it
)

type_log = Table(
    "type_log",
    metadata,
    # one row per tracked type (storage/sql.py TRACKED_TYPES): where its version log stands, bumped in the
    # transaction that writes the versions, so "has this type changed?" (security/consent.py) is one key read
    Column("type", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # highest seq of a committed version of the type
    Column("versions", BigInteger, nullable=False),  # versions committed (counted from the row's creation)
)

server_secret = Table(
    "server_secret",
    metadata,
    # random secrets of the store, created on first use (``SQLResourceStore.secret``): every process sharing the
    # store reads the same one (e.g. the key of the page cursors when FHIR_CURSOR_SECRET is unset)
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),  # hex
)

rules_version = Table(
    "rules_version",
    metadata,
    # one row per kind of data the store derives from the versions by rules (keys.RULES_MARKER: the match keys),
    # holding the rules' version the data was derived with; a start whose rules differ rebuilds it (backfill.py)
    Column("name", String(64), primary_key=True),
    Column("version", String(32), nullable=False),
)
