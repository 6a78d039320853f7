"""Test harness: one real Elasticsearch node per session, real servers over real HTTP.

Isolation is by index prefix and SQLite file: each ``server`` gets its own, so
tests never see each other's data while sharing the node. Set
``FHIR_TEST_ES_URL`` (or ``FHIR_ES_URL``) to use an existing cluster instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhir_devtools import es_node
from fhir_server.context import ServerContext
from fhir_server.settings import Settings
from tests.harness import RunningServer, start_server

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    external = os.environ.get("FHIR_TEST_ES_URL") or os.environ.get("FHIR_ES_URL")
    if external:
        yield external
        return
    data_dir = Path(tempfile.mkdtemp(prefix="fhir-test-es-"))
    cfg = es_node.NodeConfig.from_settings(Settings(), port=es_node.free_port(), data_dir=data_dir, name="test")
    url = es_node.start(cfg, timeout=180)
    try:
        yield url
    finally:
        es_node.stop(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    return path


def make_settings(es_url: str, workdir: Path, **overrides: object) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    values: dict[str, object] = {
        "db_url": f"sqlite:///{workdir / 'fhir.sqlite3'}",
        "es_url": es_url,
        "es_index_prefix": prefix,
        "port": es_node.free_port(),
        "audit_journal_dir": workdir / "audit-journal",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with its own store and index prefix, shared by the tests of one module."""
    settings = make_settings(es_url, tmp_path_factory.mktemp("srv"))
    with start_server(settings) as srv:
        yield srv


@pytest.fixture
def ctx(es_url: str, tmp_path: Path) -> Iterator[ServerContext]:
    """A server context with no indexer thread, as the CLI's load, reindex and index-errors run: only the test
    (or the code under test) applies the outbox. Its store and indices are the test's own."""
    context = ServerContext.build(make_settings(es_url, tmp_path), es_url, start_indexer=False)
    try:
        yield context
    finally:
        context.indices.drop_all()
        context.close()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c
