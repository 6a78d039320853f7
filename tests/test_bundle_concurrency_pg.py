"""The concurrency tests of Bundles and conditional creates, on a server whose store is PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests import test_bundle_concurrency, test_conditional, test_conditional_general
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server

PG_URL = os.environ.get("FHIR_TEST_PG_URL")
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on its own PostgreSQL schema (the storage tests empty the default one)."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("FHIR_TEST_PG_URL must be set in CI")
        pytest.skip("FHIR_TEST_PG_URL not set")
    schema = f"bundles_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    with start_server(make_settings(es_url, tmp_path_factory.mktemp("pg"),
                                    db_url=f"{PG_URL}{sep}options=-csearch_path%3D{schema}")) as srv:
        yield srv
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_fifty_concurrent_conditional_creates_on_postgresql(pg_server: RunningServer) -> None:
    test_conditional.test_fifty_concurrent_identical_conditional_creates_make_one(pg_server)


def test_fifty_concurrent_general_conditional_creates_on_postgresql(pg_server: RunningServer) -> None:
    """Criteria locks are PostgreSQL advisory locks there (several server processes serialise too)."""
    test_conditional_general.test_fifty_concurrent_conditional_creates_on_a_name_make_one(pg_server)


def test_parallel_bundles_on_postgresql(pg_server: RunningServer) -> None:
    test_bundle_concurrency.test_parallel_bundles_on_the_same_resources(pg_server)


def test_parallel_if_match_updates_on_postgresql(pg_server: RunningServer) -> None:
    test_bundle_concurrency.test_parallel_updates_with_if_match_have_one_winner(pg_server)


def test_store_is_really_postgresql(pg_server: RunningServer, tmp_path: Path) -> None:
    assert pg_server.ctx.store.dialect == "postgresql"
