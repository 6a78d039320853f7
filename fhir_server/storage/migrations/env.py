"""Alembic environment of the store: runs on the connection :func:`fhir_server.storage.migrations.upgrade` passes
(inside its locked transaction), or, from the command line, on ``FHIR_DB_URL``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from fhir_server.storage.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_from_settings() -> None:
    from fhir_server.settings import Settings
    from fhir_server.storage.engine import make_engine, write_conn
    from fhir_server.storage.migrations import lock

    engine = make_engine(Settings().db_url)
    try:
        with write_conn(engine) as connection:
            lock(connection)  # as at start-up: never beside a starting server's upgrade
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
if (conn := context.config.attributes.get("connection")) is not None:
    _run(conn)
else:
    _run_from_settings()
