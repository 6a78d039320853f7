"""Group commit of audit records: one store transaction for every record that arrived meanwhile.

A plain thread and a queue (no extra dependency): requests hand in an :class:`AuditRecord` and get a
``concurrent.futures.Future`` that resolves once the record's AuditEvents are committed. Under load many
requests share one commit (one fsync on SQLite); at one client it is one commit per request.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from concurrent.futures import Future
from typing import Any

from fhir_server.storage import SQLResourceStore
from fhir_server.storage.base import ConcurrentWrite

from .events import AuditRecord, build

log = logging.getLogger(__name__)

_STOP = object()


class AuditWriter:
    def __init__(self, store: SQLResourceStore, *, max_batch: int = 256, retries: int = 3) -> None:
        self.store = store
        self.max_batch = max_batch
        self.retries = retries
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self.failures = 0  # records whose write failed (async mode only logs them)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write everything still queued, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

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
            events = [e for record, _ in batch for e in build(record, self._lookup)]
            for attempt in range(self.retries):
                try:
                    with self.store.unit() as unit:
                        for event in events:
                            unit.put("AuditEvent", uuid.uuid4().hex, event, method="POST", must_not_exist=True)
                    break
                except ConcurrentWrite:
                    if attempt == self.retries - 1:
                        raise
        except Exception as exc:  # every waiting request learns it: fail-closed answers 500
            self.failures += len(batch)
            log.exception("audit: %d record(s) could not be written", len(batch))
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for _, fut in batch:
            fut.set_result(None)
