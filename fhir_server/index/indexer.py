"""Applies the store's outbox to Elasticsearch.

Correctness rests on three rules:

1. The indexer never trusts the outbox row's payload: it re-reads the *current*
   version of each resource from the store and writes that, with the version as
   ES external version (``external_gte``). Replays, duplicates, reordering and
   concurrent indexers therefore converge on the store's state, and a stale
   version can never overwrite a newer one.
2. An outbox row is deleted only after the bulk request succeeded *and* the
   affected indices were refreshed. "No outbox row at or below seq S" thus
   means "every write up to S is searchable".
3. If Elasticsearch is unreachable the rows stay; the loop backs off and
   retries. Accepted writes are never lost, the index catches up.

Read-your-writes: :meth:`Indexer.wait_until_indexed` is called before each
search. It reads the highest pending outbox seq ``P`` (one indexed query; no
pending row means no wait) and waits until no row at or below ``P`` remains.
Every write acknowledged before the search started has a seq at or below
``P`` or is already applied, so the search sees it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from fhir_server.errors import unavailable
from fhir_server.settings import Settings
from fhir_server.storage import OutboxEntry, SQLResourceStore, StoredVersion
from search.extract import IndexDocumentBuilder

from .indices import IndexManager

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
_BACKOFF_MAX_S = 5.0


def index_header(alias: str, id_: str, version: int) -> dict[str, Any]:
    """The bulk ``index`` action of a store version: its version as external version (rule 1)."""
    return {"index": {"_index": alias, "_id": id_, "version": version, "version_type": "external_gte"}}


class Indexer:
    def __init__(self, store: SQLResourceStore, es: Elasticsearch, indices: IndexManager,
                 builder: IndexDocumentBuilder, settings: Settings) -> None:
        self.store = store
        self.es = es
        self.indices = indices
        self.builder = builder
        self.settings = settings
        self._wake = threading.Event()
        self._urgent = threading.Event()  # a search is waiting: no lingering
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one drain at a time in this process
        self.last_error: str | None = None
        self.applied = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fhir-indexer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def notify(self) -> None:
        """A write committed: drain soon."""
        self._wake.set()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                done = self.drain_once()
                backoff = 0.1
                self.last_error = None
            except (TransportError, ApiError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("indexer: Elasticsearch unavailable (%s); retrying in %.1fs", self.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            except Exception:  # a bug must not kill the indexer thread
                log.exception("indexer: unexpected failure")
                self._stop.wait(1.0)
                continue
            if done == 0:
                self._wake.wait(self.settings.indexer_idle_poll_s)
                self._wake.clear()
                # Linger briefly so a burst of writes becomes one bulk + one refresh, unless a search waits.
                if not self._urgent.is_set():
                    self._urgent.wait(self.settings.indexer_linger_s)
                self._urgent.clear()

    # -- work -----------------------------------------------------------------------------------
    def drain_once(self) -> int:
        """Apply one batch of outbox rows; returns how many rows it consumed."""
        with self._lock:
            entries = self.store.outbox.pending(self.settings.indexer_batch_size)
            if not entries:
                return 0
            self._apply(entries)
        with self._progress:
            self._progress.notify_all()
        return len(entries)

    def drain_all(self) -> None:
        while self.drain_once():
            pass

    def _current_versions(self, entries: list[OutboxEntry]) -> dict[tuple[str, str], StoredVersion | None]:
        by_type: dict[str, set[str]] = defaultdict(set)
        for e in entries:
            by_type[e.type].add(e.id)
        current: dict[tuple[str, str], StoredVersion | None] = {}
        for type_, ids in by_type.items():
            found = self.store.read_many(type_, sorted(ids))
            for id_ in ids:
                current[(type_, id_)] = found.get(id_)
        return current

    def _action(self, key: tuple[str, str], version: StoredVersion | None) -> list[dict[str, Any]]:
        type_, id_ = key
        alias = self.indices.alias(type_)
        if version is None or version.deleted:
            meta: dict[str, Any] = {"_index": alias, "_id": id_}
            if version is not None:
                meta.update(version=version.version, version_type="external_gte")
            return [{"delete": meta}]
        doc = self.builder.build(version.resource())
        return [index_header(alias, id_, version.version), doc]

    def _apply(self, entries: list[OutboxEntry]) -> None:
        current = self._current_versions(entries)
        keys = list(current)
        operations: list[dict[str, Any]] = []
        build_errors: dict[tuple[str, str], str] = {}
        for key in keys:
            try:
                operations += self._action(key, current[key])
            except Exception as exc:  # extraction must never block the queue
                log.exception("indexer: cannot build the index document of %s/%s", *key)
                build_errors[key] = f"extraction failed: {exc}"
        item_errors: dict[tuple[str, str], str] = dict(build_errors)
        if operations:
            resp = self.es.bulk(operations=operations, refresh=False)
            if resp.get("errors"):
                for item in resp["items"]:
                    (op, res), = item.items()
                    status = res.get("status", 500)
                    if status < 300 or status == 409 or (op == "delete" and status == 404):
                        continue  # 409: a newer version is already there; 404: nothing to delete
                    if status == 429 or status >= 500:
                        raise TransportError(f"bulk item {op} {res.get('_id')} answered {status}")
                    index_type = res.get("_index", "")
                    item_errors[(self._type_of(index_type, keys), res.get("_id", ""))] = str(res.get("error"))
            aliases = sorted({self.indices.alias(t) for t, _ in keys})
            self.es.indices.refresh(index=",".join(aliases))
        failed = [(e, item_errors[(e.type, e.id)]) for e in entries if (e.type, e.id) in item_errors]
        if failed:
            log.error("indexer: %d entries failed: %s", len(failed), failed[:3])
            self.store.outbox.failed(failed, MAX_ATTEMPTS)
        self.store.outbox.done([e.seq for e in entries if (e.type, e.id) not in item_errors])
        self.applied += len(entries) - len(failed)

    def _type_of(self, index: str, keys: list[tuple[str, str]]) -> str:
        for type_, _ in keys:
            if index.startswith(self.indices.alias(type_)):
                return type_
        return ""

    # -- read-your-writes -----------------------------------------------------------------------
    def wait_until_indexed(self, timeout: float | None = None) -> None:
        """Block until every write acknowledged before this call is searchable."""
        target = self.store.outbox.max_seq()
        if target is None:
            return
        deadline = time.monotonic() + (timeout if timeout is not None else
                                       self.settings.search_consistency_timeout_s)
        self._urgent.set()
        self.notify()
        while self.store.outbox.pending_upto(target):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                detail = f" ({self.last_error})" if self.last_error else ""
                raise unavailable("The search index is catching up with recent writes; retry shortly" + detail)
            with self._progress:
                self._progress.wait(min(remaining, 0.05))
