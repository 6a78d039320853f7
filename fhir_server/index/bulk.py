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
from typing import Any, Self

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
    """One committed version to index: its outbox ``seq``, key, version and prebuilt ES document (None: the
    version is a deletion)."""

    seq: int
    type: str
    id: str
    version: int
    doc: bytes | None


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


class _BulkSender:
    """A thread sending queued :class:`IndexItem` batches as large bulk requests (external versions, so a
    replay or a race with the indexer converges on the store's state). Subclasses decide where each
    document goes and what an answer means."""

    def __init__(self, es: Elasticsearch, indices: IndexManager, *, max_queue: int = 8) -> None:
        self.es = es
        self.indices = indices
        self._queue: queue.Queue[list[IndexItem] | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="fhir-bulk-indexer", daemon=True)
        self.error: str | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, items: list[IndexItem]) -> None:
        """Queue committed versions (blocks when the thread is behind: back-pressure on the producer)."""
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
                size += sum(len(i.doc or b"") for i in batch)
            if pending and (batch is None or len(pending) >= BULK_DOCS or size >= BULK_BYTES):
                self._send(pending)
                pending, size = [], 0
            if batch is None:
                self._finish()
                return

    def _index_of(self, item: IndexItem) -> str:
        return self.indices.alias(item.type)

    def _send(self, items: list[IndexItem]) -> None:
        if self.error is not None:  # Elasticsearch failed earlier: send nothing more
            self._unsent(items)
            return
        operations: list[bytes] = []
        for it in items:
            if it.doc is None:
                operations.append(orjson.dumps({"delete": {"_index": self._index_of(it), "_id": it.id,
                                                           "version": it.version, "version_type": "external_gte"}}))
            else:
                operations.append(orjson.dumps(index_header(self._index_of(it), it.id, it.version)))
                operations.append(it.doc)
        try:
            resp = self.es.bulk(operations=operations, refresh=False,  # type: ignore[arg-type]  # bytes pass as-is
                                filter_path="errors,items.*.status,items.*.error").body
        except (ApiError, TransportError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("bulk: Elasticsearch unavailable (%s)", self.error)
            self._unsent(items)
            return
        results: list[dict[str, Any]] = resp.get("items") or []
        if len(results) != len(items):  # cannot tell which succeeded
            log.error("bulk: %d items answered for %d sent", len(results), len(items))
            self._unsent(items)
            return
        done: list[IndexItem] = []
        for it, result in zip(items, results, strict=True):
            outcome: dict[str, Any] = next(iter(result.values()), {})
            status = int(outcome.get("status", 500))
            # 409: a newer version is already there; 404: a deletion of what was never indexed
            if status < 300 or status == 409 or (it.doc is None and status == 404):
                done.append(it)
            else:
                log.error("bulk: %s/%s answered %s: %s", it.type, it.id, status, outcome.get("error"))
                self._rejected(it, status, outcome.get("error"))
        self._acknowledged(done)

    def _unsent(self, items: list[IndexItem]) -> None:
        """Items not (known to be) written: Elasticsearch failed or answered out of step."""

    def _rejected(self, item: IndexItem, status: int, error: Any) -> None:
        """Elasticsearch refused this item."""

    def _acknowledged(self, items: list[IndexItem]) -> None:
        """Elasticsearch holds these items (not yet searchable: refresh is off)."""

    def _finish(self) -> None:
        """After the last request."""


class BulkIndexer(_BulkSender):
    """The bulk load's sender: documents go to their type's alias, and an outbox row is cleared once its
    document is acknowledged and a refresh made it searchable.

    On an Elasticsearch failure it stops sending (the rows stay in the outbox, for the indexer) and records
    the error; :attr:`indexed` counts the documents acknowledged and whose outbox rows are gone.
    """

    def __init__(self, store: SQLResourceStore, es: Elasticsearch, indices: IndexManager, *,
                 max_queue: int = 8) -> None:
        super().__init__(es, indices, max_queue=max_queue)
        self.store = store
        self.indexed = 0
        self.left_to_indexer = 0  # rows left in the outbox: item errors or ES unavailable
        self._acked: list[int] = []  # outbox seqs acknowledged by ES, cleared after the next refresh
        self._touched: set[str] = set()

    def _unsent(self, items: list[IndexItem]) -> None:
        self.left_to_indexer += len(items)

    def _rejected(self, item: IndexItem, status: int, error: Any) -> None:
        self.left_to_indexer += 1

    def _acknowledged(self, items: list[IndexItem]) -> None:
        self._acked += [it.seq for it in items]
        self._touched.update(it.type for it in items)
        if len(self._acked) >= ACK_EVERY:
            self._finish()

    def _finish(self) -> None:
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
        self.store.outbox.done(self._acked)
        self.indexed += len(self._acked)
        self._acked = []


class CopyFailed(RuntimeError):
    """Elasticsearch did not take every document of a copy: the index written is incomplete."""


class IndexCopier(_BulkSender):
    """The reindex's sender: every document goes to one physical index (not yet behind the alias), and the
    first failure of any kind stops the copy: :meth:`submit` and :meth:`close` then raise :class:`CopyFailed`,
    so an incomplete index is never swapped in."""

    def __init__(self, es: Elasticsearch, indices: IndexManager, index: str, *, max_queue: int = 8) -> None:
        super().__init__(es, indices, max_queue=max_queue)
        self.index = index
        self.written = 0

    def _index_of(self, item: IndexItem) -> str:
        return self.index

    def submit(self, items: list[IndexItem]) -> None:
        self._raise()
        super().submit(items)

    def close(self) -> None:
        super().close()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise CopyFailed(f"copy into {self.index} failed: {self.error}")

    def _unsent(self, items: list[IndexItem]) -> None:
        self.error = self.error or f"{len(items)} documents not acknowledged"

    def _rejected(self, item: IndexItem, status: int, error: Any) -> None:
        self.error = self.error or f"{item.type}/{item.id} answered {status}: {error}"

    def _acknowledged(self, items: list[IndexItem]) -> None:
        self.written += len(items)
