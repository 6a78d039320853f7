"""The SQLite store locked by another process past the busy timeout: writes answer 503, reads go on.

Another connection holds ``BEGIN EXCLUSIVE`` on the server's SQLite file (a backup, an admin's shell, a second
process): nothing conflicted with the write, it simply could not start, so the client is told to retry
(503 ``transient`` + ``Retry-After``), never 409 (which says its data lost a race). WAL lets reads continue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.harness import RunningServer, start_server


@pytest.fixture(scope="module")
def busy_server(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = make_settings(es_url, tmp_path_factory.mktemp("busy"), db_busy_timeout_s=0.2)
    with start_server(settings) as srv:
        yield srv


@contextmanager
def held_lock(srv: RunningServer) -> Iterator[None]:
    """The store's write lock, held by a connection of another "process" for the block."""
    path = Path(srv.settings.db_url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def assert_busy(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"


def test_writes_answer_503_while_the_store_is_locked_and_reads_go_on(busy_server: RunningServer) -> None:
    with httpx.Client(base_url=busy_server.base_url, timeout=60) as c:
        created = c.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        with held_lock(busy_server):
            assert_busy(c.post("/Patient", json={"resourceType": "Patient", "gender": "male"}))
            assert_busy(c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "other"}))
            assert_busy(c.delete(f"/Patient/{pid}"))
            tx = c.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]})
            assert_busy(tx)
            read = c.get(f"/Patient/{pid}")  # WAL: readers never wait for the writer
            assert read.status_code == 200 and read.json()["gender"] == "female"
            assert c.get(f"/Patient/{pid}/_history").json()["total"] == 1
        # the lock released, the same write goes through: nothing of the refused ones was half-written
        again = c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "other"})
        assert again.status_code == 200, again.text
        assert again.json()["meta"]["versionId"] == "2"
