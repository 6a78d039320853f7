"""Loading real data through the write path, and rebuilding the index behind its alias."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from fhir_server.index.reindex import reindex_type
from fhir_server.loader import load
from tests.harness import RunningServer

TYPES = ("Patient", "DocumentReference", "Immunization")


def _count(client: httpx.Client, type_: str, **params: str) -> int:
    resp = client.get(f"/{type_}", params={"_summary": "count", **params})
    assert resp.status_code == 200, resp.text
    total: int = resp.json()["total"]
    return total


def test_r4_examples_of_served_types_all_load(server: RunningServer, client: httpx.Client,
                                              shared_data: Path) -> None:
    files = sorted(f for t in TYPES for f in (shared_data / "r4-examples").glob(f"{t}-*.json"))
    assert len(files) > 20
    before = {t: _count(client, t) for t in TYPES}
    report = load(server.ctx, files)
    assert report.rejected == []
    assert report.loaded == len(files)
    after = {t: _count(client, t) for t in TYPES}
    assert sum(after.values()) - sum(before.values()) == len(files)
    # the examples keep their ids, so they can be read back by them
    assert client.get("/Patient/example").status_code == 200


def test_synthea_ndjson_loads_and_is_searchable(server: RunningServer, client: httpx.Client,
                                                shared_data: Path) -> None:
    src = shared_data / "synthea" / "10-patients"
    files = [src / f"{t}.000.ndjson" for t in ("Patient", "Immunization")]
    report = load(server.ctx, files)
    assert report.rejected == []
    lines = sum(1 for f in files for line in f.read_text().splitlines() if line.strip())
    assert report.loaded == lines
    first_patient = files[0].read_text().splitlines()[0]
    pid = httpx.Response(200, content=first_patient.encode()).json()["id"]
    assert _count(client, "Immunization", patient=f"Patient/{pid}") > 0


def test_reindex_swaps_alias_without_losing_results(server: RunningServer, client: httpx.Client,
                                                    shared_data: Path) -> None:
    load(server.ctx, sorted((shared_data / "r4-examples").glob("Patient-*.json")))
    before = _count(client, "Patient")
    old = server.ctx.indices.physical("Patient")
    searching = threading.Event()
    errors: list[str] = []

    def search_during_reindex() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            while not searching.is_set():
                resp = c.get("/Patient", params={"_summary": "count"})
                if resp.status_code != 200 or resp.json()["total"] < before:
                    errors.append(resp.text[:200])

    t = threading.Thread(target=search_during_reindex)
    t.start()
    try:
        ctx = server.ctx
        result = reindex_type(ctx.store, ctx.es, ctx.indices, ctx.indexer.builder, "Patient", batch=7)
    finally:
        searching.set()
        t.join()
    assert errors == []
    assert result["copied"] == before
    new = server.ctx.indices.physical("Patient")
    assert new == [result["index"]] and new != old
    assert server.ctx.es.indices.exists(index=old[0]).body is False
    assert _count(client, "Patient") == before


def test_cli_load_prints_a_summary(es_url: str, tmp_path: Path, shared_data: Path) -> None:
    env = {**os.environ, "FHIR_ES_URL": es_url, "FHIR_DB_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
           "FHIR_ES_INDEX_PREFIX": f"tcli{os.getpid()}-"}
    src = shared_data / "r4-examples"
    files = [str(src / "Patient-example.json"), str(src / "Observation-example.json"),
             str(src / "Immunization-example.json")]
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType":"Patient","birthDate":"not-a-date"}\n{broken\n')
    proc = subprocess.run([sys.executable, "-m", "fhir_server.cli", "load", *files, str(bad)], env=env,
                          capture_output=True, text=True, timeout=300)
    try:
        assert proc.returncode == 0, proc.stderr
        out = proc.stderr + proc.stdout
        assert "loaded" in out and "rejected" in out
        assert "Observation" in out  # skipped: type not served
        assert "Patient.birthDate" in out
        assert "malformed JSON" in out
    finally:
        import elasticsearch

        es = elasticsearch.Elasticsearch(es_url)
        es.indices.delete(index=env["FHIR_ES_INDEX_PREFIX"] + "*", ignore_unavailable=True, allow_no_indices=True)
        es.close()
