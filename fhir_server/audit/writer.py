"""Group commit of audit records into the append-only audit table (:mod:`fhir_server.storage.audit`).

A plain thread and a queue (no extra dependency): requests hand in an :class:`AuditRecord` and get a
``concurrent.futures.Future`` that resolves once the record's AuditEvents are committed. Every record
that arrived while the previous batch was being written goes into the next batch: one transaction, one
commit (and at most one fsync) for all of them. With ``sync="normal"`` a second thread flushes the
committed records to disk every ``flush_interval_s`` off the request path (see the storage module for
what that trades).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

import orjson

from fhir_server.storage import SQLResourceStore, format_instant
from fhir_server.storage.audit import AGENT, ENTITY, AuditAppender, AuditRow, Sync, new_audit_id

from .events import AuditRecord, build

log = logging.getLogger(__name__)

_STOP = object()


def row_of(event: dict[str, Any], recorded_us: int) -> AuditRow:
    """Give the event its id and meta, and extract the searchable columns."""
    id_ = new_audit_id()
    event = {"resourceType": "AuditEvent", "id": id_,
             "meta": {"versionId": "1", "lastUpdated": format_instant(recorded_us)},
             **{k: v for k, v in event.items() if k not in ("resourceType", "id", "meta")}}
    refs: list[tuple[str, str]] = []
    for entity in event.get("entity") or []:
        ref = (entity.get("what") or {}).get("reference")
        if isinstance(ref, str) and len(ref) <= 255:
            refs.append((ENTITY, ref))
    for agent in event.get("agent") or []:
        ref = (agent.get("who") or {}).get("reference")
        if isinstance(ref, str) and len(ref) <= 255:
            refs.append((AGENT, ref))
    subtype = str(((event.get("subtype") or [{}])[0]).get("code", ""))[:32]
    return AuditRow(id_, recorded_us, str(event.get("action", "E")), str(event.get("outcome", "0")), subtype,
                    orjson.dumps(event), tuple(refs))


class AuditWriter:
    def __init__(self, store: SQLResourceStore, *, sync: Sync = "normal", max_batch: int = 256,
                 flush_interval_s: float = 0.2) -> None:
        self.store = store
        self.appender = AuditAppender(store.url, sync)
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True)
        self._dirty = threading.Event()  # committed records not yet known to be on disk
        self._stopping = threading.Event()
        self.failures = 0  # records whose write failed (async mode only logs them)

    def start(self) -> None:
        self._thread.start()
        self._flusher.start()

    def stop(self) -> None:
        """Write everything still queued, flush it to disk, then end the threads."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self._stopping.set()
        self._dirty.set()
        self._flusher.join(timeout=30)
        self.appender.dispose()

    def submit(self, record: AuditRecord) -> Future[None]:
        fut: Future[None] = Future()
        if not self._thread.is_alive():
            fut.set_exception(RuntimeError("the audit writer is not running"))
            return fut
        self._queue.put((record, fut))
        return fut

    def _lookup(self, type_: str, id_: str) -> dict[str, Any] | None:
        stored = self.store.read(type_, id_)
        return None if stored is None or stored.deleted else stored.resource()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[AuditRecord, Future[None]]] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[AuditRecord, Future[None]]]) -> None:
        try:
            rows = [row_of(e, record.recorded_us) for record, _ in batch for e in build(record, self._lookup)]
            self.appender.append(rows)
        except Exception as exc:  # every waiting request learns it: fail-closed answers 500
            self.failures += len(batch)
            log.exception("audit: %d record(s) could not be written", len(batch))
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self._dirty.set()
        for _, fut in batch:
            fut.set_result(None)

    def _flush_loop(self) -> None:
        """Off the request path: committed records reach the disk within about ``flush_interval_s``."""
        while True:
            self._dirty.wait()
            stopping = self._stopping.is_set()
            if not stopping:
                self._stopping.wait(self.flush_interval_s)  # gather a burst into one flush
            self._dirty.clear()
            try:
                if not self.appender.flush():
                    self._dirty.set()  # a reader held the WAL: try again at the next interval
            except Exception:
                log.exception("audit: flushing the trail to disk failed; retrying")
                self._dirty.set()
            if stopping:
                return
