"""The audit journal: the local append-only file a fail-closed answer waits for.

Why: a fail-closed answer must not leave before its audit record is safe, and at one client a
database commit plus the hand-off to a writer thread and back (about 0.2-0.6 ms) was a fifth of a
read. Appending one line to a file mapped in memory is a copy into the page cache (a microsecond):
once it is done, the record survives any crash of the server process, as a SQLite
``synchronous=NORMAL`` commit does. The applier (:mod:`.applier`) tails the journal into the audit
table of the store of record in large transactions, and a flusher ``fdatasync``s it within
``flush_interval_s`` (or before the answer with ``FHIR_AUDIT_SYNC=full``). A crash loses nothing that
was answered: at start the applier goes on from the position the audit table recorded with the last
rows it inserted.

Layout: ``<dir>/slot-<n>/`` per writing process (an ``flock``-ed ``lock`` file; ``slot.json`` with the
slot's UUID and the trail it belongs to), holding preallocated segments ``<number>.log`` whose records
end at the first NUL byte. A line is ``<crc32 of the payload, 8 hex digits> <payload>\\n``; the payload
is compact JSON (orjson never writes a raw newline nor a NUL). Slots left by processes that are gone
are replayed by the next process that starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (segment number, byte offset just past a record)
SEGMENT_BYTES = 16 << 20  # about 60,000 records
_READ_CHUNK = 1 << 20
SUSPECT_S = 2.0  # how long a live line may fail its checksum before it is skipped as damaged
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

    @classmethod
    def peek(cls, path: Path) -> Slot:
        """A slot another process holds, for reading (the applier process of the writer holding it)."""
        meta = orjson.loads((path / "slot.json").read_bytes())
        return cls(path, str(meta["id"]), -1)

    def drop_before(self, segment: int, durable: Callable[[], None]) -> bool:
        """Delete the segments before ``segment`` (their records are applied), after ``durable()`` made
        the audit table's copy of them survive a power cut. True when some were deleted."""
        old = [n for n in self.segments() if n < segment]
        if not old:
            return False
        durable()
        for number in old:
            self.segment_path(number).unlink(missing_ok=True)
        _fsync_dir(self.path)
        return True

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
        if self._lock_fd >= 0:
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
        self._suspect: tuple[Position, float] | None = None

    def _fd(self, segment: int) -> int:
        fd = self._fds.get(segment)
        if fd is None:
            fd = self._fds[segment] = os.open(self.slot.segment_path(segment), os.O_RDONLY)
        return fd

    def _given_up(self, pos: Position) -> bool:
        """Whether a line at the live tail has failed its check for long enough to be damage, not a copy
        still under way (a write() of one line completes in microseconds)."""
        now = time.monotonic()
        if self._suspect is None or self._suspect[0] != pos:
            self._suspect = (pos, now)
            return False
        return now - self._suspect[1] > SUSPECT_S

    def forget(self, below: int) -> None:
        for segment in [s for s in self._fds if s < below]:
            os.close(self._fds.pop(segment))

    def read(self, start: Position, end: Position | None,
             max_records: int) -> tuple[list[tuple[Position, bytes]], Position]:
        """Up to ``max_records`` payloads after ``start``, each with the position just past it, and the
        position reached (past damaged lines too, which are logged and skipped).

        ``end``: where the appending side says the records end (same process). None: whatever complete
        lines the files hold now (another process appends): a line at the tail of the last segment that
        does not check yet may still be being copied in, so reading stops before it and retries later.
        A segment's records end at its first NUL byte (segments are preallocated) or its end."""
        segment, offset = start
        out: list[tuple[Position, bytes]] = []
        last = end[0] if end is not None else max(self.slot.segments(), default=segment)
        want = _READ_CHUNK
        while len(out) < max_records:
            fd = self._fd(segment)
            limit = end[1] if end is not None and segment == end[0] else os.fstat(fd).st_size
            live = segment >= last
            chunk = os.pread(fd, min(want, limit - offset), offset) if offset < limit else b""
            nul = chunk.find(b"\0")
            data = chunk if nul < 0 else chunk[:nul]
            complete = data.rfind(b"\n") + 1
            if complete == 0 and nul < 0 and len(chunk) == want:  # one line longer than a chunk
                want *= 4
                continue
            want = _READ_CHUNK
            for line in data[:complete].split(b"\n")[:-1]:
                payload = decode(line)
                if payload is None:
                    if end is None and live and not self._given_up((segment, offset)):
                        return out, (segment, offset)  # maybe not fully copied in yet: next time
                    self.damaged += 1
                    log.error("audit journal %s: a damaged record at byte %d of segment %d was skipped",
                              self.slot.path, offset, segment)
                    offset += len(line) + 1
                    continue
                offset += len(line) + 1
                out.append(((segment, offset), payload))
                if len(out) >= max_records:
                    return out, (segment, offset)
            if complete and nul < 0 and offset < limit:
                continue  # more of this segment beyond the chunk
            if live:
                break  # the records end here for now
            if len(data) > complete:
                self.damaged += 1
                log.error("audit journal %s: %d byte(s) without a record end at the tail of segment %d were "
                          "skipped", self.slot.path, len(data) - complete, segment)
            segment, offset = segment + 1, 0  # segments are numbered without gaps
        return out, (segment, offset)

    def close(self) -> None:
        self.forget(1 << 62)


def _records_end(fd: int) -> tuple[int, int]:
    """(end of the last complete line, end of the data) of a segment: data ends at its first NUL."""
    size = os.fstat(fd).st_size
    data_end, off = size, 0
    while off < size:
        chunk = os.pread(fd, min(_READ_CHUNK, size - off), off)
        k = chunk.find(b"\0")
        if k >= 0:
            data_end = off + k
            break
        off += len(chunk)
    back = data_end
    while back > 0:
        start = max(0, back - _READ_CHUNK)
        cut = os.pread(fd, back - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1, data_end
        back = start
    return 0, data_end


class Journal:
    """The appending side of one slot. ``append`` is safe from any thread and never waits for a disk.

    Segments are preallocated (``posix_fallocate``: the disk space is reserved when the segment is made,
    so a full disk fails a rotation, never a record half-written) and mapped in memory: an append is a
    copy into the page cache under the GIL, with no system call. A ``write()`` would release the GIL and
    take it back, a hand-off to whichever thread wanted it, which in the server cost a read several
    times the copy itself."""

    def __init__(self, slot: Slot, segment_bytes: int = SEGMENT_BYTES, *, open_segment: bool = True) -> None:
        """``open_segment=False``: only repair the slot's tail and tell its :attr:`end` (an orphan's)."""
        self.slot = slot
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._dirty = False
        self.closed = False
        self._fd = -1
        self._mm: mmap.mmap | None = None
        segments = slot.segments()
        self._segment = segments[-1] if segments else -1
        self._size = self._capacity = 0
        if segments:
            self._size = self._repair_tail(slot.segment_path(self._segment))
        if not open_segment:
            self.closed = True
            return
        self._open_next(segment_bytes)  # a process appends only to segments it created

    @staticmethod
    def _repair_tail(path: Path) -> int:
        """Zero a line the previous process (or a power cut) left half-written; returns the records' end."""
        fd = os.open(path, os.O_RDWR)
        try:
            good, data_end = _records_end(fd)
            if good != data_end:
                log.warning("audit journal %s: %d byte(s) of a record cut short by a crash were dropped",
                            path, data_end - good)
                os.pwrite(fd, bytes(data_end - good), good)
                os.fsync(fd)
        finally:
            os.close(fd)
        return good

    def _open_next(self, size: int) -> None:
        """Make, reserve and map the next segment, then switch to it (the old one synced first, so every
        position before the current segment is on disk, which :meth:`sync` relies on). On failure (a full
        disk), the current segment stays the one appended to."""
        number = self._segment + 1
        path = self.slot.segment_path(number)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            mm = mmap.mmap(fd, size)
            _fsync_dir(self.slot.path)
            if self._mm is not None:
                os.fdatasync(self._fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        old_fd, old_mm = self._fd, self._mm
        self._fd, self._mm, self._segment, self._size, self._capacity = fd, mm, number, 0, size
        if old_mm is not None:
            old_mm.close()
            os.close(old_fd)

    @property
    def end(self) -> Position:
        return (self._segment, self._size)

    def append(self, payload: bytes) -> Position:
        """Write one record; when this returns, the record survives a crash of this process."""
        line = encode(payload)
        n = len(line)
        with self._lock:
            if self.closed or self._mm is None:
                raise OSError(errno.EBADF, "the audit journal is closed")
            if self._size + n > self._capacity:
                self._open_next(max(self.segment_bytes, n))
            self._mm[self._size:self._size + n] = line
            self._size += n
            self._dirty = True
            return (self._segment, self._size)

    def sync(self) -> Position:
        """``fdatasync`` what was appended so far (off the request path); returns the position now durable."""
        with self._lock:
            if self.closed:
                return self.end
            fd = os.dup(self._fd)  # a rotation may close ours meanwhile; the dup keeps the file
            reached = self.end
            self._dirty = False
        try:
            os.fdatasync(fd)  # writes back the pages dirtied through the mapping too
        except BaseException:
            self._dirty = True
            raise
        finally:
            os.close(fd)
        return reached

    @property
    def dirty(self) -> bool:
        return self._dirty

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._mm is not None:
                os.fsync(self._fd)
                self._mm.close()
                os.close(self._fd)
                self._mm = None
