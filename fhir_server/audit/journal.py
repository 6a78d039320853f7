"""The audit journal: the local append-only file a fail-closed answer waits for.

Why: a fail-closed answer must not leave before its audit record is safe, and at one client a
database commit plus the hand-off to a writer thread and back (about 0.2-0.6 ms) was a fifth of a
read. Appending one line to a file is a ``write()`` into the page cache (a microsecond): once it
returns, the record survives any crash of the server process, as a SQLite ``synchronous=NORMAL``
commit does. The applier (:mod:`.writer`) tails the journal into the audit table of the store of
record in large transactions, and a flusher ``fdatasync``s it within ``flush_interval_s`` (or before
the answer with ``FHIR_AUDIT_SYNC=full``). A crash loses nothing that was answered: at start the
applier goes on from the position the audit table recorded with the last rows it inserted.

Layout: ``<dir>/slot-<n>/`` per writing process (an ``flock``-ed ``lock`` file; ``slot.json`` with the
slot's UUID and the trail it belongs to), holding segments ``<number>.log``. A line is
``<crc32 of the payload, 8 hex digits> <payload>\\n``; the payload is compact JSON (orjson never writes
a raw newline). Slots left by processes that are gone are replayed by the next process that starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (segment number, byte offset just past a record)
SEGMENT_BYTES = 64 << 20
_READ_CHUNK = 1 << 20
_SUFFIX = ".log"


def _fsync_dir(path: Path) -> None:
    """A created, renamed or removed file's name is durable only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(number: int) -> str:
    return f"{number:016d}{_SUFFIX}"


def encode(payload: bytes) -> bytes:
    return b"%08x %b\n" % (zlib.crc32(payload), payload)


def decode(line: bytes) -> bytes | None:
    """The payload of one line (without its newline), or None when the line is damaged."""
    if len(line) < 9 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    return payload if zlib.crc32(payload) == crc else None


class Slot:
    """One process's corner of the journal directory, held by an exclusive ``flock`` for its lifetime."""

    def __init__(self, path: Path, id_: str, lock_fd: int) -> None:
        self.path = path
        self.id = id_
        self._lock_fd = lock_fd

    @classmethod
    def try_take(cls, path: Path, trail: str) -> Slot | None:
        """The slot at ``path`` if no live process holds it and it belongs to ``trail`` (or is new)."""
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        meta_file = path / "slot.json"
        try:
            meta = orjson.loads(meta_file.read_bytes()) if meta_file.exists() else None
        except (OSError, orjson.JSONDecodeError):
            meta = None
        if meta is None:
            meta = {"id": str(uuid.uuid4()), "trail": trail}
            tmp = path / "slot.json.tmp"
            tmp.write_bytes(orjson.dumps(meta))
            os.replace(tmp, meta_file)
            _fsync_dir(path)
        if meta.get("trail") != trail or not isinstance(meta.get("id"), str):
            log.warning("audit journal slot %s belongs to another audit trail (%s); left alone", path,
                        meta.get("trail"))
            os.close(fd)
            return None
        return cls(path, meta["id"], fd)

    def segments(self) -> list[int]:
        return sorted(int(p.name.removesuffix(_SUFFIX)) for p in self.path.glob("*" + _SUFFIX)
                      if p.name.removesuffix(_SUFFIX).isdigit())

    def segment_path(self, number: int) -> Path:
        return self.path / _segment_name(number)

    def release(self, remove: bool = False) -> None:
        """Give the slot up; with ``remove``, delete it (an orphan whose records are all applied)."""
        if remove:
            for p in self.path.iterdir():
                if p.name != "lock":
                    p.unlink(missing_ok=True)
            (self.path / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()
        os.close(self._lock_fd)


def take_slot(directory: Path, trail: str) -> Slot:
    """The first free slot of ``directory`` (slot-0, slot-1, ...), created if needed."""
    for n in range(10_000):
        slot = Slot.try_take(directory / f"slot-{n}", trail)
        if slot is not None:
            return slot
    raise OSError(errno.EMFILE, f"no free audit journal slot in {directory}")


def orphan_slots(directory: Path, trail: str, own: Slot) -> Iterator[Slot]:
    """Slots of ``trail`` no live process holds (their process ended): the caller applies and removes them."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("slot-*")):
        if path == own.path or not path.is_dir():
            continue
        slot = Slot.try_take(path, trail)
        if slot is not None:
            yield slot


class JournalReader:
    """Sequential reads of a slot's records from a position (the applier, and replays)."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self._fds: dict[int, int] = {}
        self.damaged = 0  # lines skipped because their checksum failed

    def _fd(self, segment: int) -> int:
        fd = self._fds.get(segment)
        if fd is None:
            fd = self._fds[segment] = os.open(self.slot.segment_path(segment), os.O_RDONLY)
        return fd

    def forget(self, below: int) -> None:
        for segment in [s for s in self._fds if s < below]:
            os.close(self._fds.pop(segment))

    def read(self, start: Position, end: Position, max_records: int) -> tuple[list[tuple[Position, bytes]], Position]:
        """Up to ``max_records`` payloads after ``start`` and not past ``end``, each with the position just
        past it, and the position reached (past damaged lines too, which are logged and skipped)."""
        segment, offset = start
        out: list[tuple[Position, bytes]] = []
        while len(out) < max_records and (segment, offset) < end:
            limit = end[1] if segment == end[0] else os.fstat(self._fd(segment)).st_size
            if offset >= limit:
                if segment >= end[0]:
                    break
                segment, offset = segment + 1, 0  # segments are numbered without gaps
                continue
            chunk = os.pread(self._fd(segment), min(_READ_CHUNK, limit - offset), offset)
            if not chunk:
                break
            lines = chunk.split(b"\n")
            if len(lines) == 1:  # one line longer than a chunk: read it whole
                chunk = os.pread(self._fd(segment), limit - offset, offset)
                lines = chunk.split(b"\n")
            if len(lines) == 1:
                raise OSError(errno.EIO, f"audit journal segment {segment} has no record end before byte {limit}")
            for line in lines[:-1]:  # the last piece is the start of a line beyond this chunk (or b"")
                offset += len(line) + 1
                payload = decode(line)
                if payload is None:
                    self.damaged += 1
                    log.error("audit journal %s: a damaged record at byte %d of segment %d was skipped",
                              self.slot.path, offset - len(line) - 1, segment)
                    continue
                out.append(((segment, offset), payload))
                if len(out) >= max_records:
                    break
        return out, (segment, offset)

    def close(self) -> None:
        self.forget(1 << 62)


class Journal:
    """The appending side of one slot. ``append`` is safe from any thread and never waits for a disk."""

    def __init__(self, slot: Slot, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.slot = slot
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        segments = slot.segments()
        self.first = segments[0] if segments else 0
        self._segment = segments[-1] if segments else 0
        path = slot.segment_path(self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = self._repair_tail()
        if not segments:
            _fsync_dir(slot.path)
        self.records = 0  # appended by this process
        self._dirty = False
        self.closed = False

    def _repair_tail(self) -> int:
        """Cut a line the previous process (or a power cut) left half-written: appends start on a line."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        rfd = os.open(self.slot.segment_path(self._segment), os.O_RDONLY)
        try:
            back = 0
            while back < size:
                back = min(size, back + _READ_CHUNK)
                tail = os.pread(rfd, back, size - back)
                cut = tail.rfind(b"\n")
                if cut >= 0:
                    good = size - back + cut + 1
                    break
            else:
                good = 0
        finally:
            os.close(rfd)
        if good != size:
            log.warning("audit journal %s: %d byte(s) of a record cut short by a crash were dropped",
                        self.slot.segment_path(self._segment), size - good)
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        return good

    @property
    def end(self) -> Position:
        return (self._segment, self._size)

    def append(self, payload: bytes) -> Position:
        """Write one record; when this returns, the record survives a crash of this process."""
        line = encode(payload)
        with self._lock:
            if self.closed:
                raise OSError(errno.EBADF, "the audit journal is closed")
            if self._size >= self.segment_bytes:
                self._rotate()
            written = os.write(self._fd, line)
            if written != len(line):  # a full disk can write part of it: take it back, fail the request
                os.ftruncate(self._fd, self._size)
                raise OSError(errno.ENOSPC, f"short write to the audit journal ({written} of {len(line)} bytes)")
            self._size += written
            self.records += 1
            self._dirty = True
            return (self._segment, self._size)

    def _rotate(self) -> None:
        """Next segment (under the lock). The closed one is synced first, so every position before the
        current segment is on disk, which :meth:`sync` relies on."""
        os.fdatasync(self._fd)
        os.close(self._fd)
        self._segment += 1
        self._fd = os.open(self.slot.segment_path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | os.O_APPEND, 0o600)
        self._size = 0
        _fsync_dir(self.slot.path)

    def sync(self) -> Position:
        """``fdatasync`` what was appended so far (off the request path); returns the position now durable."""
        with self._lock:
            if self.closed:
                return self.end
            fd = os.dup(self._fd)  # a rotation may close ours meanwhile; the dup keeps the file
            reached = self.end
            self._dirty = False
        try:
            os.fdatasync(fd)
        except BaseException:
            self._dirty = True
            raise
        finally:
            os.close(fd)
        return reached

    @property
    def dirty(self) -> bool:
        return self._dirty

    def drop_before(self, segment: int) -> None:
        """Delete the segments before ``segment``: their records are durably in the audit table."""
        removed = False
        for number in self.slot.segments():
            if number >= min(segment, self._segment):
                break
            self.slot.segment_path(number).unlink(missing_ok=True)
            removed = True
        if removed:
            _fsync_dir(self.slot.path)
        self.first = max(self.first, min(segment, self._segment))

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            os.fsync(self._fd)
            os.close(self._fd)
