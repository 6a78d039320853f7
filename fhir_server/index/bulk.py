"""Elasticsearch side of a bulk load: large bulk requests of prebuilt documents, index settings tuned meanwhile.

The loader commits each batch to the store (versions + outbox rows) *before* handing its documents
here, so this module may fail at any point without losing data: an outbox row is deleted only once
Elasticsearch acknowledged its document and a refresh made it searchable (every :data:`ACK_EVERY`
documents and at the end, since refresh is off meanwhile), and whatever remains is applied by the ordinary
:class:`~fhir_server.index.indexer.Indexer` (the server's, or ``drain_all`` at the end of the load).
Documents are written with the store version as external version (``external_gte``), exactly as the
indexer does, so a race with it or with a concurrent HTTP write converges on the store's state.

While the load runs, the physical indices behind the aliases get ``refresh_interval: -1`` and no
replicas (no segment per second, no copy to make); :func:`tuned_for_bulk` restores the previous
values and refreshes on exit, also when the load fails.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from elasticsearch import ApiError, Elasticsearch, TransportError

from fhir_server.storage import SQLResourceStore

from .indexer import index_header
from .indices import IndexManager

log = logging.getLogger(__name__)

#: Flush a bulk request at this many documents or this many bytes, whichever comes first.
BULK_DOCS = 4000
BULK_BYTES = 12 * 1024 * 1024
#: Acknowledged documents between two refreshes (after which their outbox rows are cleared).
ACK_EVERY = 20_000


@dataclass(frozen=True, slots=True)
class IndexItem:
    """One committed version to index: its outbox ``seq``, key, version and prebuilt ES document."""

    seq: int
    type: str
    id: str
    version: int
    doc: bytes


@contextmanager
def tuned_for_bulk(es: Elasticsearch, indices: IndexManager, types: list[str]) -> Iterator[None]:
    """No refresh and no replica on the types' physical indices for the duration; previous values restored."""
    saved: dict[str, dict[str, Any]] = {}
    try:
        for type_ in types:
            for name in indices.physical(type_):
                current = es.indices.get_settings(index=name, name="index.refresh_interval,index.number_of_replicas",
                                                  flat_settings=True).body.get(name, {}).get("settings", {})
                saved[name] = {"index.refresh_interval": current.get("index.refresh_interval"),
                               "index.number_of_replicas": current.get("index.number_of_replicas", "0")}
                es.indices.put_settings(index=name, settings={"index.refresh_interval": "-1",
                                                              "index.number_of_replicas": 0})
    except (ApiError, TransportError) as exc:  # ES down: load into the store anyway, the outbox keeps the rest
        log.warning("bulk: cannot tune the indices (%s); loading without", exc)
    try:
        yield
    finally:
        for name, values in saved.items():
            try:
                es.indices.put_settings(index=name, settings=values)  # None resets to the default (1s)
                es.indices.refresh(index=name)
            except (ApiError, TransportError) as exc:  # the loader reports pending rows; never mask its error
                log.error("bulk: could not restore the settings of %s: %s", name, exc)


class BulkIndexer:
    """A thread sending queued :class:`IndexItem` batches as large bulk requests, then clearing their outbox rows.

    On an Elasticsearch failure it stops sending (the rows stay in the outbox) and records the error;
    :attr:`indexed` counts the documents acknowledged and whose outbox rows are gone.
    """

    def __init__(self, store: SQLResourceStore, es: Elasticsearch, indices: IndexManager, *,
                 max_queue: int = 8) -> None:
        self.store = store
        self.es = es
        self.indices = indices
        self._queue: queue.Queue[list[IndexItem] | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="fhir-bulk-indexer", daemon=True)
        self.indexed = 0
        self.left_to_indexer = 0  # rows left in the outbox: item errors or ES unavailable
        self.error: str | None = None
        self._acked: list[int] = []  # outbox seqs acknowledged by ES, cleared after the next refresh
        self._touched: set[str] = set()

    def __enter__(self) -> BulkIndexer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, items: list[IndexItem]) -> None:
        """Queue committed versions (blocks when the thread is behind: back-pressure on the loader)."""
        if items:
            self._queue.put(items)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        pending: list[IndexItem] = []
        size = 0
        while True:
            batch = self._queue.get()
            if batch is not None:
                pending += batch
                size += sum(len(i.doc) for i in batch)
            if pending and (batch is None or len(pending) >= BULK_DOCS or size >= BULK_BYTES):
                self._send(pending)
                pending, size = [], 0
            if batch is None:
                self._settle()
                return

    def _send(self, items: list[IndexItem]) -> None:
        if self.error is not None:  # ES failed earlier: leave the rest to the indexer
            self.left_to_indexer += len(items)
            return
        operations: list[bytes] = []
        for it in items:
            operations.append(orjson.dumps(index_header(self.indices.alias(it.type), it.id, it.version)))
            operations.append(it.doc)
        try:
            resp = self.es.bulk(operations=operations, refresh=False,  # type: ignore[arg-type]  # bytes pass as-is
                                filter_path="errors,items.*.status,items.*.error").body
        except (ApiError, TransportError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("bulk: Elasticsearch unavailable (%s); the indexer will apply the outbox", self.error)
            self.left_to_indexer += len(items)
            return
        results: list[dict[str, Any]] = resp.get("items") or []
        if len(results) != len(items):  # cannot tell which succeeded: the indexer re-applies them all
            log.error("bulk: %d items answered for %d sent", len(results), len(items))
            self.left_to_indexer += len(items)
            return
        done: list[int] = []
        for it, result in zip(items, results, strict=True):
            outcome: dict[str, Any] = next(iter(result.values()), {})
            status = int(outcome.get("status", 500))
            if status < 300 or status == 409:  # 409: a newer version is already there
                done.append(it.seq)
            else:
                self.left_to_indexer += 1
                log.error("bulk: %s/%s answered %s: %s", it.type, it.id, status, outcome.get("error"))
        self._acked += done
        self._touched.update(it.type for it in items)
        if len(self._acked) >= ACK_EVERY:
            self._settle()

    def _settle(self) -> None:
        """Refresh, then clear the acknowledged outbox rows: an empty outbox up to a seq means "searchable"
        to the read-your-writes barrier of any server on this store, and refresh is off during the load."""
        if not self._acked:
            return
        try:
            self.es.indices.refresh(index=[self.indices.alias(t) for t in sorted(self._touched)])
        except (ApiError, TransportError, OSError) as exc:  # rows stay: the indexer applies them again
            self.error = f"{type(exc).__name__}: {exc}"
            self.left_to_indexer += len(self._acked)
            self._acked = []
            return
        self.store.outbox_done(self._acked)
        self.indexed += len(self._acked)
        self._acked = []
