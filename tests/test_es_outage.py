"""Elasticsearch stops in the middle of a load: no accepted write is lost, none is indexed twice."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhir_devtools import es_node
from fhir_server.settings import Settings
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server

SYSTEM = "urn:oid:1.2.250.1.999.1"  # an OID is dot-separated numbers (invalid ones get 422)


@pytest.fixture
def own_node() -> Iterator[es_node.NodeConfig]:
    data_dir = Path(tempfile.mkdtemp(prefix="fhir-outage-es-"))
    cfg = es_node.NodeConfig.from_settings(Settings(), port=es_node.free_port(), data_dir=data_dir, name="outage")
    es_node.start(cfg, timeout=180)
    try:
        yield cfg
    finally:
        es_node.stop(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


def _writer(base_url: str, run: str, total: int, accepted: list[str], failures: list[str],
            progress: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(total):
            resource = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"{run}-{i}"}],
                        "name": [{"family": f"Outage{run}"}]}
            resp = client.post("/Patient", json=resource, headers={"Content-Type": "application/fhir+json"})
            if resp.status_code == 201:
                accepted.append(resp.json()["id"])
            else:
                failures.append(f"{resp.status_code} {resp.text[:200]}")
            if len(accepted) == total // 3:
                progress.set()


def _search_all(client: httpx.Client, family: str, deadline: float) -> list[str]:
    url: str | None = "/Patient"
    params: dict[str, str] | None = {"family": family, "_count": "100"}
    seen: list[str] = []
    while url:
        resp = client.get(url, params=params)
        if resp.status_code == 503 and time.monotonic() < deadline:
            time.sleep(1)  # the index is still catching up
            continue
        assert resp.status_code == 200, resp.text
        page = resp.json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        params = None
    return seen


@pytest.mark.slow
def test_writes_survive_elasticsearch_outage(own_node: es_node.NodeConfig) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fhir-outage-db-"))
    settings = make_settings(own_node.url, workdir, search_consistency_timeout_s=2.0)
    srv: RunningServer = start_server(settings)
    run = uuid.uuid4().hex[:8]
    accepted: list[str] = []
    failures: list[str] = []
    progress = threading.Event()
    writer = threading.Thread(target=_writer, args=(srv.base_url, run, 300, accepted, failures, progress))
    try:
        writer.start()
        assert progress.wait(120), "the load did not start"
        es_node.stop(own_node)
        down_at = len(accepted)
        time.sleep(3)  # writes keep being accepted while the index is down
        assert len(accepted) > down_at, "writes must not depend on Elasticsearch"
        with httpx.Client(base_url=srv.base_url, timeout=30) as client:
            during = client.get("/Patient", params={"family": f"Outage{run}"})
            assert during.status_code == 503
            assert during.json()["resourceType"] == "OperationOutcome"
        es_node.start(own_node, timeout=180)
        writer.join(timeout=300)
        assert not writer.is_alive()
        assert failures == []
        assert len(accepted) == 300
        with httpx.Client(base_url=srv.base_url, timeout=60) as client:
            seen = _search_all(client, f"Outage{run}", time.monotonic() + 120)
        assert len(seen) == len(set(seen)), "a resource was returned twice"
        assert set(seen) == set(accepted)
    finally:
        if writer.is_alive():
            writer.join(timeout=60)
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
