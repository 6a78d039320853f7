"""The audit trail's writing side: the journal on the request path, an applier and a flusher off it.

- :meth:`AuditWriter.record` (request path): the request's :func:`.events.facts` as one journal line,
  a ``write()`` into the page cache. Fail-closed answers wait for this, nothing else (and, with
  ``sync="full"``, for the flusher's next ``fdatasync``: one per group of concurrent answers).
- The applier (:mod:`.applier`; its own process by default, or a thread) tails the journal every
  ``linger_s`` (sooner when a reader waits or a backlog builds up), splits each record into its
  AuditEvents' facts and inserts them with the journal position they reach, in one transaction per
  ``max_batch`` records: a commit per batch instead of per request, and no thread hand-off on the
  request path. At start it goes on from the position the table holds, so what a crash left in the
  journal is applied once; slots of processes that are gone are applied too. If the server process
  dies, its applier process still applies everything journalled, then exits.
- The flusher thread ``fdatasync``s the journal within ``flush_interval_s`` of an append.

Readers of the trail (``AuditEvent`` read and search) call :meth:`AuditWriter.wait_applied` first: a
record is searchable as soon as the answer it traces has been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Literal

import orjson

from fhir_server.storage import SQLResourceStore
from fhir_server.storage.audit import Sync, trail_of

from .applier import Applier
from .events import AuditRecord, facts, plain_facts
from .journal import SEGMENT_BYTES, Journal, Position, Slot, take_slot

log = logging.getLogger(__name__)

Mode = Literal["process", "thread"]


class AuditWriter:
    def __init__(self, store: SQLResourceStore, journal_dir: Path, *, sync: Sync = "normal",
                 applier: Mode = "process", linger_s: float = 0.5, max_batch: int = 1024,
                 flush_interval_s: float = 0.2, segment_bytes: int = SEGMENT_BYTES,
                 wait_timeout_s: float = 10.0) -> None:
        self.store = store
        self.journal_dir = journal_dir
        self.sync = sync
        self.mode = applier
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.segment_bytes = segment_bytes
        self.wait_timeout_s = wait_timeout_s
        self.wake_bytes = 512 << 10  # a backlog this large wakes the applier before its linger ends
        self.slot: Slot | None = None
        self.journal: Journal | None = None
        self.applied: Position = (0, 0)
        self.damaged = 0  # journal lines the applier skipped as damaged
        self._applied_cond = threading.Condition()
        self._stopping = threading.Event()
        self._sync_wanted = threading.Event()
        self._sync_lock = threading.Lock()
        self._sync_waiters: list[tuple[Position, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._flusher = threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True)
        self._runner: _ThreadApplier | _ProcessApplier | None = None
        self._running = False
        self.failures = 0  # records the request path could not journal (async mode only logs them)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.slot = take_slot(self.journal_dir, trail_of(self.store.url))
        self.journal = Journal(self.slot, self.segment_bytes)
        self._running = True
        self._runner = _ProcessApplier(self) if self.mode == "process" else _ThreadApplier(self)
        self._runner.start()
        self._flusher.start()

    def stop(self) -> None:
        """Refuse new records, sync the journal, let the applier apply all of it, then end the threads."""
        if not self._running:
            return
        self._running = False
        assert self.journal is not None and self.slot is not None and self._runner is not None
        self._stopping.set()
        self._sync_wanted.set()
        self._flusher.join(timeout=30)
        self.journal.close()  # synced: the applier reads a complete, durable journal
        self._runner.stop()
        self.slot.release()

    # -- request path ---------------------------------------------------------------------------

    def record(self, rec: AuditRecord) -> Position:
        """Journal one request's record; raises if it cannot be (fail-closed answers 500)."""
        journal = self.journal
        if not self._running or journal is None:
            raise RuntimeError("the audit writer is not running")
        try:
            f = facts(rec)
        except Exception:  # never fail a request over the summary of its body: trace it plainly
            log.exception("audit: the facts of %s %s could not be read; recorded without them", rec.method, rec.path)
            f = plain_facts(rec)
        pos = journal.append(orjson.dumps(f))
        applied = self.applied
        if (pos[0] != applied[0] or pos[1] - applied[1] > self.wake_bytes) and self._runner is not None:
            self._runner.wake()
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
        if self.journal is None or self._runner is None:
            return True
        target = self.journal.end
        with self._applied_cond:
            if self.applied >= target:
                return True
        self._runner.wake()
        with self._applied_cond:
            return self._applied_cond.wait_for(lambda: self.applied >= target,
                                               self.wait_timeout_s if timeout_s is None else timeout_s)

    def _advance(self, pos: Position, damaged: int) -> None:
        with self._applied_cond:
            self.applied = max(self.applied, pos)
            self.damaged = damaged
            self._applied_cond.notify_all()

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


class _ThreadApplier:
    """The applier as a thread of the server (``FHIR_AUDIT_APPLIER=thread``): no process to start, but it
    shares the GIL with the requests."""

    def __init__(self, writer: AuditWriter) -> None:
        self.writer = writer
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-applier", daemon=True)

    def start(self) -> None:
        w = self.writer
        assert w.slot is not None
        self.applier = Applier(w.store.url, w.journal_dir, w.slot, max_batch=w.max_batch, linger_s=w.linger_s,
                               store=w.store)
        w._advance(self.applier.applied, 0)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._wake.set()
        self._thread.join(timeout=60)
        self.applier.close()

    def _wait(self, timeout: float) -> bool:
        self._wake.wait(timeout)
        self._wake.clear()
        return not self.writer._running

    def _run(self) -> None:
        w = self.writer
        assert w.journal is not None
        journal = w.journal
        self.applier.serve(self._wait, lambda: journal.end, lambda pos: w._advance(pos, self.applier.damaged))


class _ProcessApplier:
    """The applier as a child process (:func:`.applier.main`), restarted if it dies while the server runs."""

    def __init__(self, writer: AuditWriter) -> None:
        self.writer = writer
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdin: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        w = self.writer
        assert w.slot is not None
        root = str(Path(__file__).resolve().parents[2])  # this code's own tree, whatever sys.path says
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen([sys.executable, "-m", "fhir_server.audit.applier"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        config = {"store": w.store.url, "dir": str(w.journal_dir), "slot": str(w.slot.path),
                  "max_batch": w.max_batch, "linger_s": w.linger_s}
        proc.stdin.write(orjson.dumps(config) + b"\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdin.fileno(), False)  # a wake never blocks the event loop
        self._proc, self._stdin = proc, proc.stdin
        self._reader = threading.Thread(target=self._follow, args=(proc,), name="audit-applier-reports",
                                        daemon=True)
        self._reader.start()

    def wake(self) -> None:
        stdin = self._stdin
        if stdin is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, ValueError, OSError):
            os.write(stdin.fileno(), b"w")  # a full pipe already holds a wake

    def _follow(self, proc: subprocess.Popen[bytes]) -> None:
        """Applied positions as the child reports them; if it dies while the server runs, start another."""
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 4 and parts[0] == b"applied":
                self.writer._advance((int(parts[1]), int(parts[2])), int(parts[3]))
        code = proc.wait()
        if self.writer._running and proc is self._proc:
            self.restarts += 1
            log.error("audit: the applier process ended (exit %s) while the server runs; starting another", code)
            time.sleep(min(5.0, 0.1 * self.restarts))
            if self.writer._running:
                self.start()

    def stop(self) -> None:
        """End of stdin: the child applies everything, commits durably and exits."""
        proc, stdin = self._proc, self._stdin
        self._stdin = None
        if proc is None or stdin is None:
            return
        with contextlib.suppress(OSError):
            stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log.error("audit: the applier process did not finish within 60 s; killed (the next start applies "
                      "what it had not)")
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None
