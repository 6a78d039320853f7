"""Baseline of the audit trail: the tables create_all made before migrations (see storage/schema.py, audit.py).

Frozen: later changes are later revisions, never edits here.

Revision ID: audit_0001
Revises:
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None

SeqType = BigInteger().with_variant(Integer(), "sqlite")
metadata = MetaData()

Table(
    "audit_event", metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("action", String(1), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("subtype", String(32), nullable=False),
    Column("content", LargeBinary, nullable=False),
    UniqueConstraint("id", name="uq_audit_event_id"),
    Index("ix_audit_event_recorded", "recorded_us", "id"),
)
Table(
    "audit_ref", metadata,
    Column("kind", String(1), nullable=False),
    Column("reference", String(255), nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    PrimaryKeyConstraint("kind", "reference", "recorded_us", "event_id", name="pk_audit_ref"),
)
Table(
    "audit_journal", metadata,
    Column("slot", String(64), primary_key=True),
    Column("segment", BigInteger, nullable=False),
    Column("byte_offset", BigInteger, nullable=False),
)


def upgrade() -> None:
    create_missing(metadata)


def downgrade() -> None:
    drop_all(metadata)
