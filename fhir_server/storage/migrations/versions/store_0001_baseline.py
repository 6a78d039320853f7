"""Baseline of the store: the tables create_all made before migrations (see storage/schema.py for their meaning).

Frozen: later changes are later revisions, never edits here.

Revision ID: store_0001
Revises:
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

from fhir_server.storage.migrations.baseline import create_missing, drop_all

revision = "store_0001"
down_revision = None
branch_labels = ("store",)
depends_on = None

SeqType = BigInteger().with_variant(Integer(), "sqlite")
metadata = MetaData()

Table(
    "resource_version", metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated_us", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("type", "id", "version", name="uq_resource_version"),
    Index("ix_resource_version_type_seq", "type", "seq"),
)
Table(
    "resource", metadata,
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    PrimaryKeyConstraint("type", "id", name="pk_resource"),
)
Table(
    "outbox", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
)
Table(
    "index_error", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("error", String(2000), nullable=False),
)
Table(
    "match_key", metadata,
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("element", String(32), nullable=False),
    Column("system", String(255), nullable=False),
    Column("value", String(255), nullable=False),
    PrimaryKeyConstraint("type", "id", "element", "system", "value", name="pk_match_key"),
    Index("ix_match_key_value", "type", "value"),
)
Table(
    "type_log", metadata,
    Column("type", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("versions", BigInteger, nullable=False),
)
Table(
    "server_secret", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)


def upgrade() -> None:
    create_missing(metadata)


def downgrade() -> None:
    drop_all(metadata)
