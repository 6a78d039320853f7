"""Documents the indexer gave up on are parked in ``index_error``: ``fhir-server index-errors`` shows them to the
operator (with the reason) and ``--retry`` queues them for the indexer again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.context import ServerContext
from fhir_server.index.indexer import MAX_ATTEMPTS

ROOT = Path(__file__).resolve().parents[1]


def _cli(ctx: ServerContext, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FHIR_DB_URL": ctx.settings.db_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "fhir_server.cli", "index-errors", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _searchable(ctx: ServerContext, id_: str) -> bool:
    alias = ctx.indices.alias("Patient")
    ctx.es.indices.refresh(index=alias)
    return bool(ctx.es.count(index=alias, query={"ids": {"values": [id_]}})["count"])


def test_an_operator_sees_and_retries_the_documents_that_failed_to_index(
        ctx: ServerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    with ctx.store.unit() as unit:
        unit.put("Patient", "ok", {"resourceType": "Patient", "gender": "male"}, method="PUT")
        unit.put("Patient", "bad", {"resourceType": "Patient", "gender": "female"}, method="PUT")
    build = ctx.indexer.builder.build

    def broken(resource: dict[str, Any]) -> dict[str, Any]:
        if resource["id"] == "bad":
            raise ValueError("no document for this one")
        return build(resource)

    monkeypatch.setattr(ctx.indexer.builder, "build", broken)
    for _ in range(MAX_ATTEMPTS):
        ctx.indexer.drain_once()
    assert ctx.store.outbox.max_seq() is None  # parked, no longer blocking the queue
    assert _searchable(ctx, "ok") and not _searchable(ctx, "bad")

    listed = orjson.loads(_cli(ctx, "--json").stdout)
    assert [(e["type"], e["id"]) for e in listed] == [("Patient", "bad")]
    assert "no document for this one" in listed[0]["error"]
    table = _cli(ctx).stdout
    assert "Patient/bad" in table and "no document for this one" in table

    monkeypatch.setattr(ctx.indexer.builder, "build", build)  # the cause is fixed
    assert "Queued 1" in _cli(ctx, "--retry").stderr
    assert [(e.type, e.id) for e in ctx.store.outbox.pending(10)] == [("Patient", "bad")]
    ctx.indexer.drain_all()
    assert _searchable(ctx, "bad")
    assert orjson.loads(_cli(ctx, "--json").stdout) == []
