"""Killing the server process in the middle of a large transaction: all of the Bundle or none of it survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from elasticsearch import Elasticsearch

from fhir_devtools import es_node

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ENTRIES = 4000


def _start(env: dict[str, str], base: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def _count(base: str, system: str) -> int:
    """The count once the index has caught up (thousands of new rows may take longer than one search waits)."""
    deadline = time.monotonic() + 120
    while True:
        resp = httpx.get(f"{base}/Patient", params={"identifier": f"{system}|", "_summary": "count"}, timeout=60)
        if resp.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert resp.status_code == 200, resp.text
    total: int = resp.json()["total"]
    return total


@pytest.mark.slow
def test_kill_mid_transaction_keeps_all_or_nothing(es_url: str, tmp_path: Path) -> None:
    port = es_node.free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    env = {**os.environ, "FHIR_DB_URL": f"sqlite:///{tmp_path / 'fhir.sqlite3'}", "FHIR_ES_URL": es_url,
           "FHIR_ES_INDEX_PREFIX": prefix, "FHIR_PORT": str(port), "FHIR_HOST": "127.0.0.1"}
    log = tmp_path / "server.log"
    system = f"urn:crash:{uuid.uuid4().hex}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
         "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": str(i)}],
                      "name": [{"family": f"Crash{i}"}]},
         "request": {"method": "POST", "url": "Patient"}} for i in range(ENTRIES)]}
    proc = _start(env, base, log)
    outcome: dict[str, object] = {}
    try:
        def send() -> None:
            try:
                outcome["status"] = httpx.post(f"{base}/", json=bundle, headers=FHIR_JSON, timeout=120).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(1.5)  # the body is parsed and the transaction is writing
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        sender.join(timeout=60)
        assert "error" in outcome, f"the transaction finished before the kill ({outcome}); raise ENTRIES"

        proc = _start(env, base, log)
        stored = _count(base, system)
        assert stored in (0, ENTRIES)
        # the store agrees with search: a transaction's outbox rows committed with it
        with httpx.Client(base_url=base, timeout=60) as c:  # the index is caught up (_count waited)
            probe = c.get("/Patient", params={"identifier": f"{system}|{ENTRIES - 1}"}).json()["total"]
        assert probe == (1 if stored else 0)
        # and the server is healthy: the same bundle goes through now
        assert httpx.post(f"{base}/", json=bundle, headers=FHIR_JSON, timeout=120).status_code == 200
        assert _count(base, system) == stored + ENTRIES
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        es = Elasticsearch(es_url)
        es.indices.delete(index=f"{prefix}*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="all")
        es.close()
