"""Schema migrations at start-up (Alembic, ``fhir_server/storage/migrations``), on SQLite and PostgreSQL: an empty
database is brought to head, one made by ``create_all`` before migrations existed is adopted with its data,
a second start changes nothing, and processes starting together do not trip over each other."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, insert, inspect, select, text

from fhir_server.storage import open_store
from fhir_server.storage.keys import RULES_MARKER, RULES_VERSION
from fhir_server.storage.migrations import alembic_config
from fhir_server.storage.schema import (
    match_key,
    metadata,
    resource,
    resource_version,
    rules_version,
    server_secret,
    type_log,
)

PG_URL = os.environ.get("FHIR_TEST_PG_URL")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own (search_path), dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
        return
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("FHIR_TEST_PG_URL must be set in CI")
        pytest.skip("FHIR_TEST_PG_URL not set")
    schema = f"mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


#: The tables ``create_all`` made before migrations existed (the baseline revisions).
OLD_TABLES = [t for t in metadata.sorted_tables if t is not rules_version]


def _engine(url: str) -> Engine:
    return create_engine(url)


def _revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}


def _heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def _schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))


def _legacy_patient(engine: Engine) -> None:
    """A Patient as the store wrote it before migrations (no match keys: the rules' marker is absent too)."""
    body = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"},
            "identifier": [{"system": "urn:s", "value": "legacy"}]}
    with engine.begin() as conn:
        seq = conn.execute(insert(resource_version).values(
            type="Patient", id="p1", version=1, last_updated_us=1, method="PUT", deleted=False,
            content=orjson.dumps(body)).returning(resource_version.c.seq)).scalar_one()
        conn.execute(insert(resource).values(type="Patient", id="p1", version=1, seq=seq, deleted=False))
        conn.execute(insert(server_secret).values(name="cursor", value="ab" * 32))


def test_an_empty_database_is_brought_to_head_and_matches_the_schema(db_url: str) -> None:
    store = open_store(db_url)
    try:
        assert _revisions(store.engine) == _heads() == {"store_0002", "audit_0001"}
        assert _schema_diff(store.engine) == []  # the migrations make exactly the tables of schema.py
    finally:
        store.dispose()


def test_a_store_made_by_create_all_is_adopted_with_its_data(db_url: str) -> None:
    engine = _engine(db_url)
    metadata.create_all(engine, tables=OLD_TABLES)  # what every start did before migrations
    _legacy_patient(engine)
    store = open_store(db_url)
    try:
        assert _revisions(store.engine) == _heads()
        current = store.read("Patient", "p1")
        assert current is not None and current.resource()["identifier"][0]["value"] == "legacy"
        assert store.secret("cursor") == bytes.fromhex("ab" * 32)  # kept, not regenerated
        with store.unit() as unit:  # the backfill ran after the migrations
            assert unit.match("Patient", ("identifier",), "urn:s", "legacy") == {"p1"}
            assert unit.put("Patient", "p1", {"resourceType": "Patient"}, method="PUT").version == 2
        assert _schema_diff(store.engine) == []
    finally:
        store.dispose()
        engine.dispose()


def test_a_store_older_than_some_tables_gets_them(db_url: str) -> None:
    engine = _engine(db_url)
    metadata.create_all(engine, tables=[t for t in OLD_TABLES if t not in (type_log, server_secret)])
    _legacy_patient_without_secret(engine)
    store = open_store(db_url)
    try:
        assert {"type_log", "server_secret"} <= set(inspect(store.engine).get_table_names())
        assert _revisions(store.engine) == _heads() and _schema_diff(store.engine) == []
        assert store.read("Patient", "p1") is not None
        with store.engine.connect() as conn:
            assert conn.execute(select(type_log.c.type)).scalars().all() == ["Consent"]  # backfilled
    finally:
        store.dispose()
        engine.dispose()


def test_the_rules_marker_moves_out_of_match_key(db_url: str) -> None:
    """Revision store_0002: the rules' version, a fake match_key row before, is kept in rules_version, so keys
    derived under the current rules are not rebuilt."""
    engine = _engine(db_url)
    metadata.create_all(engine, tables=OLD_TABLES)
    _legacy_patient(engine)  # its keys are missing, but the marker says they are current: no rebuild expected
    with engine.begin() as conn:
        conn.execute(insert(match_key).values(type="$", id="match-key-rules", element="rules", system="",
                                              value=str(RULES_VERSION)))
    store = open_store(db_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(select(rules_version.c.name, rules_version.c.version)).all() == [
                (RULES_MARKER, str(RULES_VERSION))]
            assert conn.execute(select(match_key.c.type)).scalars().all() == []  # no marker row, nothing rebuilt
    finally:
        store.dispose()
        engine.dispose()


def _legacy_patient_without_secret(engine: Engine) -> None:
    with engine.begin() as conn:
        seq = conn.execute(insert(resource_version).values(
            type="Patient", id="p1", version=1, last_updated_us=1, method="PUT", deleted=False,
            content=b'{"resourceType":"Patient","id":"p1"}').returning(resource_version.c.seq)).scalar_one()
        conn.execute(insert(resource).values(type="Patient", id="p1", version=1, seq=seq, deleted=False))


def test_a_second_start_changes_nothing(db_url: str) -> None:
    first = open_store(db_url)
    with first.unit() as unit:
        unit.put("Patient", "a", {"resourceType": "Patient", "identifier": [{"value": "x"}]}, method="PUT")
    first.dispose()
    second = open_store(db_url)
    try:
        assert _revisions(second.engine) == _heads()
        assert second.read("Patient", "a") is not None and second.max_seq() >= 1
        with second.engine.connect() as conn:
            assert conn.execute(select(match_key.c.id).where(match_key.c.value == "x")).scalars().all() == ["a"]
    finally:
        second.dispose()


def test_processes_starting_together_migrate_once(db_url: str) -> None:
    """Each process takes the migration lock; the later ones find the schema at head (no duplicate CREATE)."""
    code = "import sys; from fhir_server.storage import open_store; open_store(sys.argv[1]).dispose()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], env=env, stderr=subprocess.PIPE)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    engine = _engine(db_url)
    try:
        assert _revisions(engine) == _heads() and _schema_diff(engine) == []
    finally:
        engine.dispose()
