"""Rebuild a type's index from the store into a new physical index, then swap the alias.

No downtime: searches keep using the old index until the atomic alias swap.
Writes that land during the rebuild are caught up from the version log
(``seq`` > the mark taken before the copy) twice: before the swap into the new
index, and after it for writes that hit the old index in between. External
versions make every replay idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from fhir_server.storage import SQLResourceStore, StoredVersion
from search.extract import IndexDocumentBuilder

from .indices import IndexManager

log = logging.getLogger(__name__)


def _actions(index: str, versions: list[StoredVersion], builder: IndexDocumentBuilder) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for v in versions:
        if v.deleted:
            out.append({"_op_type": "delete", "_index": index, "_id": v.id, "version": v.version,
                        "version_type": "external_gte"})
        else:
            out.append({"_op_type": "index", "_index": index, "_id": v.id, "version": v.version,
                        "version_type": "external_gte", "_source": builder.build(v.resource())})
    return out


def _write(es: Elasticsearch, actions: list[dict[str, Any]]) -> int:
    ok = 0
    for success, info in streaming_bulk(es, actions, raise_on_error=False, raise_on_exception=True,
                                        chunk_size=500, max_retries=3):
        (op, res), = info.items()
        status = res.get("status", 500)
        if success or status == 409 or (op == "delete" and status == 404):
            ok += 1
        else:
            log.error("reindex: %s %s failed: %s", op, res.get("_id"), res.get("error"))
    return ok


def _catch_up(store: SQLResourceStore, es: Elasticsearch, index: str, type_: str, since: int,
              builder: IndexDocumentBuilder) -> int:
    ids = [id_ for t, id_ in store.changed_since(since) if t == type_]
    done = 0
    for i in range(0, len(ids), 500):
        found = store.read_many(type_, ids[i:i + 500])
        done += _write(es, _actions(index, list(found.values()), builder))
    return done


def reindex_type(store: SQLResourceStore, es: Elasticsearch, indices: IndexManager, builder: IndexDocumentBuilder,
                 type_: str, *, batch: int = 1000, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    mark = store.max_seq()
    new_index = indices.create_physical(type_)
    es.indices.put_settings(index=new_index, settings={"index": {"refresh_interval": "-1"}})
    copied = 0
    for versions in store.iter_current(type_, batch):
        copied += _write(es, _actions(new_index, versions, builder))
        if progress:
            progress(len(versions))
    caught = _catch_up(store, es, new_index, type_, mark, builder)
    es.indices.put_settings(index=new_index, settings={"index": {"refresh_interval": None}})
    es.indices.refresh(index=new_index)
    mark2 = store.max_seq()
    old = indices.swap(type_, new_index)
    caught += _catch_up(store, es, new_index, type_, min(mark, mark2), builder)
    es.indices.refresh(index=new_index)
    for o in old:
        es.indices.delete(index=o, ignore_unavailable=True)
    log.info("reindex %s: %d copied, %d caught up, now %s (dropped %s)", type_, copied, caught, new_index, old)
    return {"type": type_, "index": new_index, "copied": copied, "caught_up": caught, "dropped": old}
