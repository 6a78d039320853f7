"""A changed search-parameter set is rebuilt behind the alias before the server serves searches."""

from __future__ import annotations

from pathlib import Path

from elasticsearch import Elasticsearch

from fhir_server.context import ServerContext
from fhir_server.loader import load
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
