"""What the baseline revisions share: create the tables of a frozen schema that a database lacks."""

from __future__ import annotations

from alembic import op
from sqlalchemy import MetaData, inspect


def create_missing(metadata: MetaData) -> None:
    """Create each table of ``metadata`` (with its indexes) the database does not have: every table on an empty
    database; only the missing ones on a database made by ``create_all`` before migrations existed."""
    bind = op.get_bind()
    existing = set(inspect(bind).get_table_names())
    metadata.create_all(bind, tables=[t for t in metadata.sorted_tables if t.name not in existing], checkfirst=False)


def drop_all(metadata: MetaData) -> None:
    metadata.drop_all(op.get_bind())
