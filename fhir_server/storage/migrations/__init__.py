"""Schema versions of the store, as Alembic migrations run at every start (configured in code: no alembic.ini).

Two branches, so each database gets the tables it holds:

- ``store``: the version store, outbox, match keys, change log and secrets (``resource_version`` ...
  ``server_secret``);
- ``audit``: the audit trail (``audit_event``, ``audit_ref``, ``audit_journal``), which on SQLite lives in a
  sibling file of its own (``storage/audit.py``).

The store's database is upgraded to every branch's head (as ``create_all`` made every table before), the
trail's own file to ``audit@head``. Each baseline revision is the schema as ``create_all`` made it before
migrations existed, and it creates only the tables missing: a database from then (no ``alembic_version``
table) is adopted as is, with the tables a still older one lacked (``type_log``, ``server_secret``), then
stamped and upgraded like any other.

Concurrency: the upgrade runs in one transaction holding the database's migration lock (PostgreSQL: a
transaction-level advisory lock; SQLite: the write lock, ``BEGIN IMMEDIATE``), so processes starting together
run it one after the other and the later ones find the schema at head. PostgreSQL's DDL is transactional:
a failed upgrade leaves nothing behind.

A new revision (developers): ``python -m fhir_server.storage.migrations revision -m "why" --head store@head``,
then write its ``upgrade``/``downgrade`` by hand (schema changes go in ``schema.py`` too). Any other Alembic
command works the same way against ``FHIR_DB_URL`` (``current``, ``history``, ``downgrade``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from alembic import command
from alembic.config import CommandLine, Config
from sqlalchemy import Connection, Engine, inspect, text

from ..engine import write_conn

log = logging.getLogger(__name__)

STORE_HEADS = "heads"  # every branch: the store's database holds the trail's tables too (PostgreSQL: the trail)
AUDIT_HEAD = "audit@head"
VERSION_TABLE = "alembic_version"
#: pg_advisory_xact_lock key of the migrations (an arbitrary constant: "fhirmigr").
_PG_LOCK = int.from_bytes(b"fhirmigr", "big") & ((1 << 63) - 1)
_HERE = Path(__file__).parent


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the store; with ``connection``, migrations run on it (in its transaction)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def lock(conn: Connection) -> None:
    """Take the migration lock for the rest of ``conn``'s transaction (SQLite: its write lock already is)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})


def upgrade(engine: Engine, target: str = STORE_HEADS) -> None:
    """Bring the database of ``engine`` to ``target`` (a head of :mod:`alembic`), under the migration lock."""
    with write_conn(engine) as conn:
        lock(conn)
        tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE not in tables and tables:
            log.info("adopting a store created before schema migrations (tables: %s)", ", ".join(sorted(tables)))
        command.upgrade(alembic_config(conn), target)


def main(argv: list[str] | None = None) -> None:
    """The ``alembic`` command line on the store's configuration (the database: ``FHIR_DB_URL``)."""
    cli = CommandLine(prog="python -m fhir_server.storage.migrations")
    options = cli.parser.parse_args(argv if argv is not None else sys.argv[1:])
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(alembic_config(), options)
