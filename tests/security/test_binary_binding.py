"""Binaries that reached the store without a write that binds them (data stored before the rule, ``load --bulk``)
are bound to the document that brought them: the earliest DocumentReference naming them, never a later one."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete

from fhir_server.context import BINARY_BINDING, ServerContext, bind_legacy_binaries
from fhir_server.loader import bulk_load
from fhir_server.storage import open_store
from fhir_server.storage.schema import type_log

BASE = "http://fhir.example/fhir"


def _binary(text: str) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}


def _doc(url: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": "Patient/p"},
            "content": [{"attachment": {"contentType": "text/plain", "url": url}}]}


def test_stored_binaries_are_bound_once_to_the_earliest_document(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'legacy.sqlite3'}")
    try:
        with store.unit() as unit:  # as an older server stored them: no securityContext anywhere
            unit.put("Binary", "b1", _binary("legit"), method="PUT", indexed=False)
            unit.put("Binary", "b2", _binary("absolute"), method="PUT", indexed=False)
            unit.put("Binary", "b3", _binary("orphan"), method="PUT", indexed=False)
            unit.put("Binary", "b4", {**_binary("own context"), "securityContext": {"reference": "Patient/p"}},
                     method="PUT", indexed=False)
        with store.unit() as unit:
            unit.put("DocumentReference", "legit", _doc("Binary/b1"), method="PUT")
            unit.put("DocumentReference", "abs", _doc(f"{BASE}/Binary/b2"), method="PUT")
        with store.unit() as unit:  # later documents naming the same content (an attacker's, say)
            unit.put("DocumentReference", "a-later", _doc("Binary/b1"), method="PUT")
            unit.put("DocumentReference", "b-later", _doc("Binary/b4"), method="PUT")
        bind_legacy_binaries(store, BASE)

        def context(bin_id: str) -> Any:
            stored = store.read("Binary", bin_id)
            assert stored is not None
            return stored.resource().get("securityContext")

        assert context("b1") == {"reference": "DocumentReference/legit"}
        assert context("b2") == {"reference": "DocumentReference/abs"}
        assert context("b3") is None  # named by no document: a backend's only
        assert context("b4") == {"reference": "Patient/p"}  # a client's own context is kept
        assert store.data_migrated(BINARY_BINDING)
        # once: a Binary unbound after the migration is left to the write paths
        with store.unit() as unit:
            unit.put("Binary", "b5", _binary("new"), method="PUT", indexed=False)
            unit.put("DocumentReference", "d5", _doc("Binary/b5"), method="PUT")
        bind_legacy_binaries(store, BASE)
        assert context("b5") is None
        with store.engine.begin() as conn:  # an old store without the marker: runs again
            conn.execute(delete(type_log).where(type_log.c.type == f"$migration:{BINARY_BINDING}"))
        bind_legacy_binaries(store, BASE)
        assert context("b5") == {"reference": "DocumentReference/d5"}
    finally:
        store.dispose()


def test_bulk_load_binds_the_binaries_of_its_documents(ctx: ServerContext, tmp_path: Path) -> None:
    resources = [{**_binary("bulk"), "id": "bb1"}, {**_doc("Binary/bb1"), "id": "bd1"},
                 {**_binary("bulk orphan"), "id": "bb2"}]
    path = tmp_path / "docs.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    report = bulk_load(ctx, [path], workers=0, batch=10)
    assert report.loaded == 3, report
    bound = ctx.store.read("Binary", "bb1")
    orphan = ctx.store.read("Binary", "bb2")
    assert bound is not None and orphan is not None
    assert bound.resource()["securityContext"] == {"reference": "DocumentReference/bd1"}
    assert "securityContext" not in orphan.resource()
