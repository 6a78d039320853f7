"""The applier: tails a journal slot into the audit table. Runs as its own process by default.

Why a process: the applier's work (reading journal lines, splitting them into AuditEvent facts,
batched inserts) is pure Python; in a process it never holds the server's GIL, uses a core the server
does not, and outlives a crashed server (it applies all that was journalled, then exits). Measured with
``bench/audit.py`` on 2 cores, it costs the same as the thread (``FHIR_AUDIT_APPLIER=thread``): a read at
1 client 0.96x vs 0.97x the requests/s of audit off, server CPU with the applier's 1.09x vs 1.07x; at 16
clients 0.98x both. What made audit cheap is the journal (no database commit, no thread hand-off, no
``write()`` releasing the GIL on the request path), not where the applier runs.

Protocol with :class:`.writer.AuditWriter` (``python -m fhir_server.audit.applier``): the first stdin
line is the JSON configuration (so the store URL and its password stay out of ``ps``); each further
byte on stdin wakes the applier before its linger ends; end of stdin means "the server stops": apply
everything, commit durably, exit 0. Each committed batch is reported on stdout as
``applied <segment> <offset> <damaged>``. The journal files are read directly (the server never tells
where its records end): a record is applied once its whole line is in the file and checks.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fhir_common.types import Resource
from fhir_server.storage import SQLResourceStore
from fhir_server.storage.audit import AuditAppender, AuditRow, audit_id

from .events import columns, event_facts
from .journal import Journal, JournalReader, Position, Slot, orphan_slots

log = logging.getLogger(__name__)

_BUILD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def row_of(ef: dict[str, Any], id_: str) -> AuditRow:
    """The audit table's row of one AuditEvent's facts (:func:`.events.event_facts`)."""
    action, outcome, subtype, refs = columns(ef)
    return AuditRow(id_, int(ef["t"]), action, outcome, subtype, orjson.dumps(ef), refs)


class Applier:
    """Applies one journal slot (and the slots dead processes left) to the audit table of a store."""

    def __init__(self, store_url: str, journal_dir: Path, slot: Slot, *, max_batch: int = 512,
                 linger_s: float = 0.5, store: SQLResourceStore | None = None) -> None:
        self.store_url = store_url
        self.journal_dir = journal_dir
        self.slot = slot
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.appender = AuditAppender(store_url)
        self._store = store  # for the look-ups of refused reads; opened on first need
        self.reader = JournalReader(slot)
        self.applied: Position = self._start_of(slot)

    def _start_of(self, slot: Slot) -> Position:
        """Where applying ``slot`` starts: the position the table stored, or the slot's first segment when
        none is stored or the segments it names are gone."""
        segments = slot.segments()
        first = segments[0] if segments else 0
        start = self.appender.position(slot.id)
        return start if start is not None and start[0] >= first else (first, 0)

    @property
    def damaged(self) -> int:
        return self.reader.damaged

    def _lookup(self, type_: str, id_: str) -> Resource | None:
        if self._store is None:
            self._store = SQLResourceStore(self.store_url)
        stored = self._store.read(type_, id_)
        return None if stored is None or stored.deleted else stored.resource()

    def _rows(self, slot: Slot, records: list[tuple[Position, bytes]]) -> list[AuditRow]:
        rows: list[AuditRow] = []
        for n, ((segment, offset), payload) in enumerate(records, 1):
            if n % 8 == 0:
                time.sleep(0)  # in a thread of the server: let a waiting request have the GIL
            try:
                f = orjson.loads(payload)
                origin = b"%s|%d|%d" % (slot.id.encode(), segment, offset)
                rows += [row_of(ef, audit_id(ef["t"], origin, i)) for i, ef in enumerate(event_facts(f, self._lookup))]
            except (orjson.JSONDecodeError, *_BUILD_ERRORS):  # a record no code can read: skipped, loudly
                log.exception("audit: an unreadable journal record (slot %s, %d:%d) was skipped",
                              slot.path, segment, offset)
        return rows

    def _apply_slot(self, slot: Slot, reader: JournalReader, start: Position, end: Position | None,
                    on_progress: Callable[[Position], None] | None = None) -> Position:
        pos = start
        while True:
            records, reached = reader.read(pos, end, self.max_batch)
            if reached == pos:
                return pos
            self.appender.append(self._rows(slot, records), slot.id, reached)
            pos = reached
            if on_progress is not None:
                on_progress(pos)

    def apply(self, end: Position | None = None, on_progress: Callable[[Position], None] | None = None) -> Position:
        """Insert the slot's records after :attr:`applied`, up to ``end`` (None: what the files hold).

        A batch that reaches a new segment releases the ones before it before it is reported: under steady
        traffic this loop never runs dry, so releasing only once it returns let the journal grow without
        bound, and a reported position did not mean its segments were gone."""

        def advance(pos: Position) -> None:
            crossed = pos[0] != self.applied[0]
            self.applied = pos
            if crossed:
                self.release_segments()
            if on_progress is not None:
                on_progress(pos)

        return self._apply_slot(self.slot, self.reader, self.applied, end, advance)

    def release_segments(self) -> None:
        """Delete fully applied segments, once a durable commit covers them (also run after each pass: a
        start from a stored position, or a release that failed, leaves some behind)."""
        if self.slot.drop_before(self.applied[0], durable=lambda: self.finish()):
            self.reader.forget(self.applied[0])

    def finish(self) -> None:
        """One durable commit: every record applied so far survives a power cut."""
        self.appender.append([], self.slot.id, self.applied, durable=True)

    def recover_orphans(self) -> None:
        """Apply and remove the slots of processes that ended without applying all they journalled."""
        for orphan in orphan_slots(self.journal_dir, self.appender.trail(), self.slot):
            journal = Journal(orphan, open_segment=False)  # repairs a torn tail
            reader = JournalReader(orphan)
            try:
                end = journal.end
                reached = self._apply_slot(orphan, reader, min(self._start_of(orphan), end), end)
                self.appender.append([], orphan.id, reached, durable=True)
                log.info("audit: applied journal slot %s left by an earlier process", orphan.path)
                reader.close()
                orphan.release(remove=True)
            except Exception:
                reader.close()
                orphan.release()
                raise

    def serve(self, wait: Callable[[float], bool], end: Callable[[], Position | None],
              on_progress: Callable[[Position], None]) -> bool:
        """The applier's loop, as a thread of the server or as its own process: orphans first, then after
        each ``wait(timeout)`` (woken early, or the timeout; True once the server stops) everything up to
        ``end()``. Returns True when it stopped with all of it applied and durably committed."""
        try:
            self.recover_orphans()
        except Exception:
            log.exception("audit: applying an orphan journal slot failed; it is retried at the next start")
        on_progress(self.applied)
        stopping, errors, backoff = False, 0, 0.0
        while True:
            stopping = wait(backoff or self.linger_s) or stopping
            try:
                self.apply(end(), on_progress)
                self.release_segments()
                backoff = 0.0
            except Exception:
                errors += 1
                backoff = min(5.0, max(0.05, backoff * 2))
                log.exception("audit: applying the journal failed (retried in %.2f s; the records stay in the "
                              "journal)", backoff)
                if stopping and errors > 3:
                    log.error("audit: stopping with records not yet in the trail; the next start applies them")
                    return False
                continue
            if stopping:
                self.finish()
                return True

    def close(self) -> None:
        self.reader.close()
        self.appender.dispose()
        if self._store is not None:
            self._store.dispose()


def _report(applier: Applier) -> None:
    try:
        sys.stdout.write(f"applied {applier.applied[0]} {applier.applied[1]} {applier.damaged}\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # the server is gone: go on applying, report to no one
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _Stdin:
    """The server's side of the pipe: a byte wakes the applier, its end says the server stops."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self.ended = False

    def wait(self, timeout: float) -> bool:
        if self.ended:  # select would no longer wait
            time.sleep(timeout)
        elif select.select([self.fd], [], [], timeout)[0] and not os.read(self.fd, 4096):
            self.ended = True
        return self.ended


def main() -> int:
    """The applier process (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s audit-applier: %(message)s")
    cfg = orjson.loads(sys.stdin.buffer.readline())
    applier = Applier(cfg["store"], Path(cfg["dir"]), Slot.peek(Path(cfg["slot"])), max_batch=int(cfg["max_batch"]),
                      linger_s=float(cfg["linger_s"]))
    done = applier.serve(_Stdin().wait, lambda: None, lambda _pos: _report(applier))
    _report(applier)
    applier.close()
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
