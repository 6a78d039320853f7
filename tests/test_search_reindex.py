"""A changed search-parameter set is rebuilt behind the alias before the server serves searches; the rebuild
runs at bulk speed and fails loudly (alias unchanged) rather than swapping in an incomplete index."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elasticsearch import Elasticsearch

from fhir_server.context import ServerContext
from fhir_server.index import bulk
from fhir_server.index.reindex import ReindexError, reindex_type
from fhir_server.loader import bulk_load, load
from tests.conftest import make_settings


def test_stale_index_is_rebuilt_on_start(es_url: str, tmp_path: Path, shared_data: Path) -> None:
    settings = make_settings(es_url, tmp_path)
    ctx = ServerContext.build(settings, es_url, start_indexer=False)
    try:
        load(ctx, sorted((shared_data / "r4-examples").glob("Patient-*.json"))[:5])
        ctx.indexer.drain_all()
        (old,) = ctx.indices.physical("Patient")
        # simulate an index built by an older parameter set
        ctx.es.indices.put_mapping(index=old, meta={"fingerprint": "older-parameter-set"})
        assert ctx.indices.stale_types() == ["Patient"]
    finally:
        ctx.close()
    ctx = ServerContext.build(settings, es_url, start_indexer=False)
    try:
        (new,) = ctx.indices.physical("Patient")
        assert new != old and ctx.indices.stale_types() == []
        es: Elasticsearch = ctx.es
        assert es.count(index=ctx.indices.alias("Patient"))["count"] == 5
        assert not es.indices.exists(index=old)
    finally:
        ctx.indices.drop_all()
        ctx.close()


# -- the rebuild at bulk speed, and its failures ------------------------------------------------------------




@pytest.fixture
def loaded(es_url: str, tmp_path: Path) -> Iterator[ServerContext]:
    """300 Patients bulk-loaded (no indexer thread: only what the test runs touches the index)."""
    ctx = ServerContext.build(make_settings(es_url, tmp_path), es_url, start_indexer=False)
    src = tmp_path / "p.ndjson"
    src.write_bytes(b"".join(orjson.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": "female",
                                           "name": [{"family": f"Lefèvre{i}"}]}) + b"\n" for i in range(300)))
    try:
        assert bulk_load(ctx, [src], workers=0).loaded == 300
        yield ctx
    finally:
        ctx.indices.drop_all()
        ctx.close()


def _sources(ctx: ServerContext, index: str) -> dict[str, Any]:
    ctx.es.indices.refresh(index=index)
    hits = ctx.es.search(index=index, size=1000, version=True)["hits"]["hits"]
    return {h["_id"]: (h["_version"], h["_source"]) for h in hits}


def _reindex(ctx: ServerContext, **kwargs: Any) -> dict[str, Any]:
    return reindex_type(ctx.store, ctx.es, ctx.indices, ctx.indexer.builder, "Patient", **kwargs)


@pytest.mark.parametrize("workers", [0, 2])
def test_rebuild_writes_the_documents_the_indexer_writes(loaded: ServerContext, workers: int) -> None:
    (old,) = loaded.indices.physical("Patient")
    before = _sources(loaded, old)
    result = _reindex(loaded, workers=workers, batch=64)
    assert result["copied"] == 300 and result["not_buildable"] == 0
    assert loaded.indices.physical("Patient") == [result["index"]]
    assert _sources(loaded, result["index"]) == before  # same documents, same external versions
    settings = loaded.es.indices.get_settings(index=result["index"], flat_settings=True)[result["index"]]["settings"]
    assert settings.get("index.refresh_interval") is None  # -1 only while copying


def test_writes_during_the_copy_are_caught_up(loaded: ServerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = loaded.store.iter_current

    def pages_then_writes(type_: str, batch: int) -> Iterator[list[Any]]:
        for n, page in enumerate(pages(type_, batch)):
            yield page
            if n == 0:  # a write and a deletion after the copy has read their pages
                with loaded.store.unit() as unit:
                    unit.put("Patient", "late", {"resourceType": "Patient", "gender": "male"}, method="PUT")
                    unit.delete("Patient", "p299")

    monkeypatch.setattr(loaded.store, "iter_current", pages_then_writes)
    result = _reindex(loaded, workers=0, batch=100)
    docs = _sources(loaded, result["index"])
    assert "late" in docs and "p299" not in docs and len(docs) == 300
    assert result["caught_up"] >= 2


def _unchanged_after_failure(ctx: ServerContext, old: str, raised: pytest.ExceptionInfo[ReindexError]) -> None:
    assert "alias is unchanged" in str(raised.value)
    assert ctx.indices.physical("Patient") == [old]
    assert ctx.es.count(index=ctx.indices.alias("Patient"))["count"] == 300
    leftovers = ctx.es.indices.get(index=f"{ctx.indices.alias('Patient')}-*", expand_wildcards="all").body
    assert list(leftovers) == [old]  # the incomplete index is gone


def test_elasticsearch_outage_mid_rebuild_fails_loudly_and_keeps_the_alias(
        loaded: ServerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    (old,) = loaded.indices.physical("Patient")
    monkeypatch.setattr(bulk, "BULK_DOCS", 50)
    real_bulk, calls = loaded.es.bulk, []

    def flaky(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 2:
            raise TransportConnectionError("connection refused")
        return real_bulk(**kwargs)

    monkeypatch.setattr(loaded.es, "bulk", flaky)
    with pytest.raises(ReindexError) as raised:
        _reindex(loaded, workers=0, batch=50)
    monkeypatch.undo()
    _unchanged_after_failure(loaded, old, raised)


def test_a_refused_document_fails_the_rebuild(loaded: ServerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    (old,) = loaded.indices.physical("Patient")
    real_bulk = loaded.es.bulk

    def one_refused(**kwargs: Any) -> Any:
        resp = real_bulk(**kwargs)
        resp.body["items"][0] = {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}}
        return resp

    monkeypatch.setattr(loaded.es, "bulk", one_refused)
    with pytest.raises(ReindexError) as raised:
        _reindex(loaded, workers=0)
    monkeypatch.undo()
    _unchanged_after_failure(loaded, old, raised)


def test_an_unbuildable_document_is_left_to_the_indexer(loaded: ServerContext,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    build = loaded.indexer.builder.build

    def broken(resource: dict[str, Any]) -> dict[str, Any]:
        if resource["id"] == "p7":
            raise ValueError("extraction bug")
        return build(resource)

    monkeypatch.setattr(loaded.indexer.builder, "build", broken)
    result = _reindex(loaded, workers=0)
    assert result["not_buildable"] == 1 and result["copied"] == 299
    assert [(e.type, e.id) for e in loaded.store.outbox.pending(10)] == [("Patient", "p7")]


def test_cli_reindex_with_worker_processes(es_url: str, tmp_path: Path, shared_data: Path) -> None:
    prefix = f"trxcli{os.getpid()}-"
    env = {**os.environ, "FHIR_ES_URL": es_url, "FHIR_DB_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
           "FHIR_ES_INDEX_PREFIX": prefix}
    src = shared_data / "synthea" / "10-patients" / "Immunization.000.ndjson"
    n = sum(1 for line in src.read_bytes().splitlines() if line.strip())
    cli = [sys.executable, "-m", "fhir_server.cli"]
    es = Elasticsearch(es_url)
    try:
        load = subprocess.run([*cli, "load", "--bulk", "--workers", "0", str(src)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert load.returncode == 0, load.stderr
        (old,) = es.indices.get_alias(name=f"{prefix}immunization").body
        proc = subprocess.run([*cli, "reindex", "--type", "Immunization", "--workers", "2"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        (new,) = es.indices.get_alias(name=f"{prefix}immunization").body
        assert new != old and es.count(index=new)["count"] == n
        assert f"'copied': {n}" in proc.stdout + proc.stderr
    finally:
        es.indices.delete(index=prefix + "*", ignore_unavailable=True, allow_no_indices=True)
        es.close()
