"""The concurrency tests of Bundles and conditional creates, on a server whose store is PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_bundle_concurrency, test_conditional, test_conditional_general
from tests.conftest import make_settings
from tests.harness import RunningServer, pg_schema_url, start_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on its own PostgreSQL schema (the storage tests empty the default one)."""
    with pg_schema_url("bundles") as url, \
            start_server(make_settings(es_url, tmp_path_factory.mktemp("pg"), db_url=url)) as srv:
        yield srv


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
