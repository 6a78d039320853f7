"""The audit trail's writing side: the journal on the request path, an applier and a flusher off it.

- :meth:`AuditWriter.record` (request path): the request's :func:`.events.facts` as one journal line,
  a ``write()`` into the page cache. Fail-closed answers wait for this, nothing else (and, with
  ``sync="full"``, for the flusher's next ``fdatasync``: one per group of concurrent answers).
- The applier thread tails the journal every ``linger_s`` (sooner when a reader waits or a backlog
  builds up), splits each record into its AuditEvents' facts and inserts them with the journal position
  they reach, in one transaction per ``max_batch`` records: a commit per batch instead of per request, and no thread
  hand-off on the request path. At start it goes on from the position the table holds, so what a
  crash left in the journal is applied once; slots of processes that are gone are applied too.
- The flusher thread ``fdatasync``s the journal within ``flush_interval_s`` of an append.

Readers of the trail (``AuditEvent`` read and search) call :meth:`AuditWriter.wait_applied` first: a
record is searchable as soon as the answer it traces has been sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from fhir_server.storage import SQLResourceStore
from fhir_server.storage.audit import AuditAppender, AuditRow, Sync, audit_id

from .events import AuditRecord, columns, event_facts, facts
from .journal import SEGMENT_BYTES, Journal, JournalReader, Position, Slot, orphan_slots, take_slot

log = logging.getLogger(__name__)

_BUILD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def row_of(ef: dict[str, Any], id_: str) -> AuditRow:
    """The audit table's row of one AuditEvent's facts (:func:`.events.event_facts`)."""
    action, outcome, subtype, refs = columns(ef)
    return AuditRow(id_, int(ef["t"]), action, outcome, subtype, orjson.dumps(ef), refs)


class AuditWriter:
    def __init__(self, store: SQLResourceStore, journal_dir: Path, *, sync: Sync = "normal",
                 linger_s: float = 0.1, max_batch: int = 512, flush_interval_s: float = 0.2,
                 segment_bytes: int = SEGMENT_BYTES, wait_timeout_s: float = 10.0) -> None:
        self.store = store
        self.appender = AuditAppender(store.url)
        self.journal_dir = journal_dir
        self.sync = sync
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.segment_bytes = segment_bytes
        self.wait_timeout_s = wait_timeout_s
        self.wake_bytes = 256 << 10  # a backlog this large wakes the applier before its linger ends
        self.slot: Slot | None = None
        self.journal: Journal | None = None
        self.applied: Position = (0, 0)
        self._applied_cond = threading.Condition()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._sync_wanted = threading.Event()
        self._sync_lock = threading.Lock()
        self._sync_waiters: list[tuple[Position, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._applier = threading.Thread(target=self._run, name="audit-applier", daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True)
        self._running = False
        self.failures = 0  # records the request path could not journal (async mode only logs them)
        self.apply_errors = 0  # failed attempts to apply the journal (retried: nothing is lost)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.slot = take_slot(self.journal_dir, self.appender.trail())
        self.journal = Journal(self.slot, self.segment_bytes)
        start = self.appender.position(self.slot.id)
        end = self.journal.end
        if start is None or start[0] < self.journal.first:
            start = (self.journal.first, 0)
        if start > end:
            log.warning("audit: the trail is ahead of journal slot %s (%s > %s); its journal was lost or "
                        "reset, nothing to replay", self.slot.path, start, end)
            start = end
        self.applied = start
        self._reader = JournalReader(self.slot)
        self._running = True
        self._applier.start()
        self._flusher.start()

    def stop(self) -> None:
        """Refuse new records, apply everything journalled, sync it, then end the threads."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        self._wake.set()
        self._sync_wanted.set()
        self._applier.join(timeout=60)
        self._flusher.join(timeout=30)
        assert self.journal is not None and self.slot is not None
        self.journal.close()
        self._reader.close()
        self.slot.release()
        self.appender.dispose()

    # -- request path ---------------------------------------------------------------------------

    def record(self, rec: AuditRecord) -> Position:
        """Journal one request's record; raises if it cannot be (fail-closed answers 500)."""
        journal = self.journal
        if not self._running or journal is None:
            raise RuntimeError("the audit writer is not running")
        pos = journal.append(orjson.dumps(facts(rec)))
        applied = self.applied
        if pos[0] != applied[0] or pos[1] - applied[1] > self.wake_bytes:
            self._wake.set()
        return pos

    async def durable(self, pos: Position) -> None:
        """Wait until the journal is on disk up to ``pos`` (``sync="full"``): a group fdatasync."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._sync_lock:
            self._sync_waiters.append((pos, loop, fut))
        self._sync_wanted.set()
        await fut

    # -- readers --------------------------------------------------------------------------------

    def wait_applied(self, timeout_s: float | None = None) -> bool:
        """Block until every record journalled before the call is in the table (False on timeout)."""
        if self.journal is None:
            return True
        target = self.journal.end
        with self._applied_cond:
            if self.applied >= target:
                return True
            self._wake.set()
            return self._applied_cond.wait_for(lambda: self.applied >= target,
                                               self.wait_timeout_s if timeout_s is None else timeout_s)

    # -- applier --------------------------------------------------------------------------------

    def _lookup(self, type_: str, id_: str) -> dict[str, Any] | None:
        stored = self.store.read(type_, id_)
        return None if stored is None or stored.deleted else stored.resource()

    def _rows(self, slot: Slot, records: list[tuple[Position, bytes]]) -> list[AuditRow]:
        rows: list[AuditRow] = []
        for n, ((segment, offset), payload) in enumerate(records, 1):
            if n % 8 == 0:
                time.sleep(0)  # let a waiting request have the GIL: a batch is milliseconds of Python
            try:
                f = orjson.loads(payload)
                origin = b"%s|%d|%d" % (slot.id.encode(), segment, offset)
                rows += [row_of(ef, audit_id(ef["t"], origin, i)) for i, ef in enumerate(event_facts(f, self._lookup))]
            except (orjson.JSONDecodeError, *_BUILD_ERRORS):  # a record no code can read: skipped, loudly
                log.exception("audit: an unreadable journal record (slot %s, %d:%d) was skipped",
                              slot.path, segment, offset)
        return rows

    def _apply(self, slot: Slot, reader: JournalReader, start: Position, end: Position,
               on_progress: Any = None) -> Position:
        """Insert the records between ``start`` and ``end``; returns the position reached."""
        pos = start
        while pos < end:
            records, reached = reader.read(pos, end, self.max_batch)
            if reached == pos:
                break
            self.appender.append(self._rows(slot, records), slot.id, reached)
            pos = reached
            if on_progress is not None:
                on_progress(pos)
        return pos

    def _advance(self, pos: Position) -> None:
        with self._applied_cond:
            self.applied = pos
            self._applied_cond.notify_all()

    def _release_segments(self) -> None:
        """Delete fully applied segments, once a durable commit covers them."""
        assert self.journal is not None and self.slot is not None
        if self.applied[0] <= self.journal.first:
            return
        self.appender.append([], self.slot.id, self.applied, durable=True)
        self.journal.drop_before(self.applied[0])
        self._reader.forget(self.applied[0])

    def _recover_orphans(self) -> None:
        """Apply and remove the slots of processes that ended without applying all they journalled."""
        assert self.slot is not None
        for orphan in orphan_slots(self.journal_dir, self.appender.trail(), self.slot):
            journal = Journal(orphan, self.segment_bytes)  # repairs a torn tail
            reader = JournalReader(orphan)
            try:
                start = self.appender.position(orphan.id)
                if start is None or start[0] < journal.first:
                    start = (journal.first, 0)
                end = journal.end
                reached = self._apply(orphan, reader, min(start, end), end)
                self.appender.append([], orphan.id, reached, durable=True)
                log.info("audit: applied journal slot %s left by an earlier process", orphan.path)
                journal.close()
                reader.close()
                orphan.release(remove=True)
            except Exception:
                journal.close()
                reader.close()
                orphan.release()
                raise

    def _run(self) -> None:
        assert self.journal is not None and self.slot is not None
        try:
            self._recover_orphans()
        except Exception:
            self.apply_errors += 1
            log.exception("audit: applying an orphan journal slot failed; it is retried at the next start")
        backoff = 0.0
        while True:
            self._wake.wait(backoff or self.linger_s)
            self._wake.clear()
            stopping = self._stopping.is_set()
            try:
                self._apply(self.slot, self._reader, self.applied, self.journal.end, self._advance)
                self._release_segments()
                backoff = 0.0
            except Exception:
                self.apply_errors += 1
                backoff = min(5.0, max(0.05, backoff * 2))
                log.exception("audit: applying the journal to the trail failed (retried in %.2f s; the records "
                              "stay in the journal)", backoff)
                if stopping and self.apply_errors > 3:
                    log.error("audit: stopping with records not yet in the trail; the next start applies them")
                    return
                continue
            if stopping:
                self.appender.append([], self.slot.id, self.applied, durable=True)
                return

    # -- flusher --------------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        assert self.journal is not None
        while True:
            requested = self._sync_wanted.wait(self.flush_interval_s)
            self._sync_wanted.clear()
            stopping = self._stopping.is_set()
            with self._sync_lock:
                waiting = bool(self._sync_waiters)
            if self.journal.dirty or waiting or requested:
                try:
                    reached = self.journal.sync()
                except Exception as exc:
                    log.exception("audit: syncing the journal to disk failed")
                    self._settle(None, exc)
                    time.sleep(0.05)
                else:
                    self._settle(reached, None)
            if stopping:
                self._settle(None, RuntimeError("the audit writer stopped"))
                return

    def _settle(self, reached: Position | None, exc: BaseException | None) -> None:
        """Answer the ``durable`` waiters up to ``reached`` (or fail them all with ``exc``)."""
        with self._sync_lock:
            done: list[tuple[Position, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
            waiting: list[tuple[Position, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
            for w in self._sync_waiters:
                (done if reached is None or w[0] <= reached else waiting).append(w)
            self._sync_waiters = waiting
        for _, loop, fut in done:
            loop.call_soon_threadsafe(_resolve, fut, exc)


def _resolve(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
