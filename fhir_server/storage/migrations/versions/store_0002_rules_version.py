"""The match-key rules' version moves from a fake row of match_key (type "$") into a table of its own.

Revision ID: store_0002
Revises: store_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0002"
down_revision = "store_0001"
branch_labels = None
depends_on = None

_OLD = {"type": "$", "id": "match-key-rules", "element": "rules"}  # the marker row of revision store_0001
_NAME = "match-key-rules"

match_key = sa.table("match_key", sa.column("type"), sa.column("id"), sa.column("element"), sa.column("system"),
                     sa.column("value"))


def _is_marker() -> sa.ColumnElement[bool]:
    return sa.and_(*(match_key.c[k] == v for k, v in _OLD.items()))


def upgrade() -> None:
    rules = op.create_table(
        "rules_version",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(32), nullable=False),
    )
    bind = op.get_bind()
    old = bind.execute(sa.select(match_key.c.value).where(_is_marker())).scalar()
    if old is not None:
        op.bulk_insert(rules, [{"name": _NAME, "version": old}])
        bind.execute(sa.delete(match_key).where(_is_marker()))


def downgrade() -> None:
    bind = op.get_bind()
    rules = sa.table("rules_version", sa.column("name"), sa.column("version"))
    old = bind.execute(sa.select(rules.c.version).where(rules.c.name == _NAME)).scalar()
    if old is not None:
        bind.execute(sa.insert(match_key).values(**_OLD, system="", value=old))
    op.drop_table("rules_version")
