"""The audit journal: what a fail-closed answer waits for must reach the audit table exactly once,
whatever happens to the process that wrote it (crash, torn tail, damaged line, lost position)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from fhir_server.audit.applier import Applier
from fhir_server.audit.events import AuditRecord, facts
from fhir_server.audit.journal import Journal, JournalReader, Position, decode, encode, take_slot
from fhir_server.audit.writer import AuditWriter, _ProcessApplier
from fhir_server.storage import open_store
from fhir_server.storage.audit import AuditAppender, AuditLog, trail_of
from tests.conftest import make_settings
from tests.harness import pg_schema_url, start_server

ROOT = Path(__file__).resolve().parents[2]


def _record(i: int, status: int = 200) -> AuditRecord:
    return AuditRecord(recorded_us=1_767_225_600_000_000 + i, method="GET", path=f"/fhir/Patient/p{i}", query="",
                       status=status, path_params={"type": "Patient", "id": f"p{i}"}, principal=None,
                       address="127.0.0.1", content=orjson.dumps({"resourceType": "Patient", "id": f"p{i}"}))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store (and so the trail) of one test: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fhir.sqlite3'}"
        return
    with pg_schema_url("audit") as url:
        yield url


def _writer(url: str, tmp: Path, **kw: Any) -> AuditWriter:
    writer = AuditWriter(open_store(url), tmp / "journal", **kw)
    writer.start()
    return writer


def _trail_ids(url: str) -> list[str]:
    with AuditLog.of(url).engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT id FROM audit_event ORDER BY recorded_us, id"))]


def _crash_after_journalling(url: str, tmp: Path, n: int, applier: str = "thread") -> None:
    """A process journals ``n`` records and dies; with the applier as its thread, before that ran (its
    linger never ends); as its process, that process outlives it."""
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.security.test_audit_journal import _record
        from fhir_server.audit.writer import AuditWriter, _ProcessApplier
        from fhir_server.storage import open_store
        tmp = Path({str(tmp)!r})
        w = AuditWriter(open_store({url!r}), tmp / "journal", applier={applier!r}, linger_s=3600)
        w.start()
        for i in range({n}):
            w.record(_record(i))
        os._exit(0)  # no stop(): nothing applied, nothing synced, the slot lock dropped by the kernel
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@given(st.binary(max_size=300).filter(lambda b: b"\n" not in b))
def test_a_line_decodes_to_its_payload_and_any_flipped_byte_is_caught(payload: bytes) -> None:
    line = encode(payload)
    assert line.endswith(b"\n") and decode(line[:-1]) == payload
    for i in range(len(line) - 1):
        damaged = bytearray(line[:-1])
        damaged[i] ^= 0x01
        assert decode(bytes(damaged)) != payload or bytes(damaged) == line[:-1]


def test_records_read_back_in_order_across_segments(tmp_path: Path) -> None:
    slot = take_slot(tmp_path, "trail")
    journal = Journal(slot, segment_bytes=1000)
    payloads = [orjson.dumps({"n": i, "pad": "x" * (i % 50)}) for i in range(500)]
    ends = [journal.append(p) for p in payloads]
    assert ends == sorted(ends) and len(slot.segments()) > 10
    reader = JournalReader(slot)
    got: list[bytes] = []
    pos = (0, 0)
    while True:
        records, pos = reader.read(pos, journal.end, 37)
        if not records:
            break
        got += [p for _, p in records]
        assert records[-1][0] == pos
    assert got == payloads and pos == journal.end
    durable: list[bool] = []
    assert slot.drop_before(journal.end[0], durable=lambda: durable.append(True))
    assert slot.segments() == [journal.end[0]] and durable == [True]  # the durable commit came first
    assert not slot.drop_before(journal.end[0], durable=lambda: durable.append(True)) and durable == [True]
    journal.close()
    reader.close()
    slot.release()


def test_a_second_process_cannot_take_a_held_slot(tmp_path: Path) -> None:
    held = take_slot(tmp_path, "trail")
    other = take_slot(tmp_path, "trail")
    assert held.path != other.path and held.id != other.id
    foreign = take_slot(tmp_path, "another trail")  # slots of another trail are left alone
    assert foreign.path not in (held.path, other.path)
    for s in (held, other, foreign):
        s.release()


def test_a_crash_loses_nothing_journalled_and_a_restart_applies_it_once(store_url: str, tmp_path: Path) -> None:
    _crash_after_journalling(store_url, tmp_path, 40)
    assert _trail_ids(store_url) == []
    writer = _writer(store_url, tmp_path)
    assert writer.wait_applied(30)
    first = _trail_ids(store_url)
    assert len(first) == 40 and len(set(first)) == 40
    writer.stop()
    writer = _writer(store_url, tmp_path)  # a second start finds nothing more to apply
    assert writer.wait_applied(30)
    writer.stop()
    assert _trail_ids(store_url) == first


def test_the_applier_process_outlives_a_crashed_server_and_applies_all_it_journalled(store_url: str,
                                                                                    tmp_path: Path) -> None:
    _crash_after_journalling(store_url, tmp_path, 30, applier="process")
    deadline = time.monotonic() + 30
    while len(_trail_ids(store_url)) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_trail_ids(store_url)) == 30  # no new server started: the orphaned applier finished the job


def test_a_killed_applier_process_is_replaced_and_nothing_is_lost(store_url: str, tmp_path: Path) -> None:
    writer = _writer(store_url, tmp_path)
    for i in range(20):
        writer.record(_record(i))
    assert writer.wait_applied(30)
    runner = writer._runner
    assert isinstance(runner, _ProcessApplier) and runner.pid not in (None, os.getpid())
    os.kill(runner.pid, signal.SIGKILL)
    for i in range(20, 45):
        writer.record(_record(i))
    assert writer.wait_applied(30)
    assert runner.restarts == 1
    writer.stop()
    assert len(_trail_ids(store_url)) == 45


def test_a_lost_position_cannot_duplicate_records(store_url: str, tmp_path: Path) -> None:
    writer = _writer(store_url, tmp_path)
    for i in range(25):
        writer.record(_record(i))
    assert writer.wait_applied(30)
    writer.stop()
    before = _trail_ids(store_url)
    assert len(before) == 25
    with AuditAppender(store_url).engine.begin() as conn:  # as after restoring an older backup
        conn.execute(text("DELETE FROM audit_journal"))
    writer = _writer(store_url, tmp_path)
    assert writer.wait_applied(30)
    writer.stop()
    assert _trail_ids(store_url) == before  # replayed from the start of the journal, ids derived: no copy


def test_a_torn_tail_is_cut_and_a_damaged_line_skipped_without_stopping_the_trail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fhir.sqlite3'}"
    _crash_after_journalling(url, tmp_path, 10)
    segment = next((tmp_path / "journal" / "slot-0").glob("*.log"))
    data = segment.read_bytes()
    end = data.index(b"\0")  # segments are preallocated: the records end at the first NUL
    lines = data[:end].split(b"\n")
    lines[3] = lines[3][:20] + b"#" + lines[3][21:]  # a flipped byte in the 4th record
    torn = b"\n".join(lines) + b'0000abcd {"t": 1, "co'  # and half a record at the end
    segment.write_bytes(torn + data[len(torn):])
    slot = take_slot(tmp_path / "journal", AuditAppender(url).trail())
    Journal(slot, open_segment=False)  # what a start does first (and then applies, and deletes the segment)
    slot.release()
    assert segment.read_bytes()[:len(torn)].rstrip(b"\0") == b"\n".join(lines)  # the torn record zeroed
    writer = _writer(url, tmp_path)
    assert writer.wait_applied(30)
    assert writer.damaged == 1
    writer.record(_record(100))  # appends start after the cut
    assert writer.wait_applied(30)
    writer.stop()
    assert len(_trail_ids(url)) == 10  # 9 survivors + the new one


def test_a_dead_process_slot_is_applied_and_removed_by_the_next_start(store_url: str, tmp_path: Path) -> None:
    held = take_slot(tmp_path / "journal", AuditAppender(store_url).trail())  # slot-0 is busy...
    _crash_after_journalling(store_url, tmp_path, 15)  # ...so the crashing process journals into slot-1
    assert (tmp_path / "journal" / "slot-1").is_dir()
    held.release()
    writer = _writer(store_url, tmp_path)  # takes slot-0, finds slot-1 orphaned
    assert writer.slot is not None and writer.slot.path.name == "slot-0"
    deadline = 50
    while (tmp_path / "journal" / "slot-1").exists() and deadline:
        writer.wait_applied(0.1)
        deadline -= 1
    writer.stop()
    assert not (tmp_path / "journal" / "slot-1").exists()
    assert len(_trail_ids(store_url)) == 15


def test_applied_segments_are_deleted_and_the_rest_kept(store_url: str, tmp_path: Path) -> None:
    writer = _writer(store_url, tmp_path, segment_bytes=2000, linger_s=0.01)
    for i in range(300):
        writer.record(_record(i))
    assert writer.wait_applied(30)
    writer.record(_record(1000))  # a position is reported once the segments before it are released
    assert writer.wait_applied(30)
    assert writer.slot is not None
    segments = writer.slot.segments()
    writer.stop()
    assert len(segments) <= 2
    assert len(_trail_ids(store_url)) == 301


def test_segments_are_released_while_records_keep_arriving(store_url: str, tmp_path: Path) -> None:
    """Under steady traffic the applier never finds the journal drained: more records arrive while each
    batch commits. The segments it has applied must still go (before the position is reported), or the
    journal grows until the disk is full."""
    store = open_store(store_url)
    slot = take_slot(tmp_path / "journal", trail_of(store_url))
    journal = Journal(slot, segment_bytes=2000)
    applier = Applier(store_url, tmp_path / "journal", slot, max_batch=5, store=store)
    arrived = iter(range(300))
    reported: list[tuple[Position, list[int]]] = []

    def arrive(pos: Position) -> None:  # a batch is committed; meanwhile three more requests were journalled
        reported.append((pos, slot.segments()))
        for i in [next(arrived, None) for _ in range(3)]:
            if i is not None:
                journal.append(orjson.dumps(facts(_record(i))))

    arrive((0, 0))
    applier.apply(None, arrive)
    assert applier.applied == journal.end and len(reported) > 50
    assert [pos for pos, segments in reported if segments[0] < pos[0]] == []  # nothing applied left on disk
    applier.close()
    journal.close()
    slot.release()
    store.dispose()
    assert len(_trail_ids(store_url)) == 300


def test_a_full_disk_fails_the_rotation_not_a_record(tmp_path: Path) -> None:
    """For real: a child process whose files may not grow past 1 MB (RLIMIT_FSIZE) cannot reserve a
    segment for a 2 MB record; the append raises, and the journal goes on in its current segment."""
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from fhir_server.audit.journal import Journal, JournalReader, take_slot
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        slot = take_slot(Path({str(tmp_path)!r}), "trail")
        journal = Journal(slot, segment_bytes=256 << 10)
        journal.append(b'{{"n":1}}')
        try:
            journal.append(b'"' + b"x" * (2 << 20) + b'"')
        except OSError as exc:
            print("refused", exc.errno)
        journal.append(b'{{"n":2}}')
        records, _ = JournalReader(slot).read((0, 0), journal.end, 10)
        print("kept", [p.decode() for _, p in records])
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60, capture_output=True).stdout
    assert out.decode().splitlines() == ["refused 27", "kept ['{\"n\":1}', '{\"n\":2}']"]  # 27: EFBIG


@pytest.mark.parametrize("mode", ["fail-closed", "async"])
def test_a_journal_that_cannot_be_written_refuses_or_logs(es_url: str, tmp_path: Path, mode: str) -> None:
    """The next segment cannot be made (its file is already there): fail-closed refuses the answer, async
    answers and counts the failure; once the file is gone, answers and trail resume."""
    settings = make_settings(es_url, tmp_path, audit="on", audit_mode=mode)
    with start_server(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=30) as c:
        assert c.get("/Patient/nobody").status_code == 404
        writer = srv.ctx.audit
        assert writer is not None and writer.journal is not None and writer.slot is not None
        journal = writer.journal
        blocker = writer.slot.segment_path(journal.end[0] + 1)
        blocker.write_bytes(b"")
        journal._capacity = journal.end[1]  # the next record needs a new segment
        resp = c.get("/Patient/nobody")
        if mode == "fail-closed":
            assert resp.status_code == 500 and "audit" in resp.json()["issue"][0]["diagnostics"]
        else:
            assert resp.status_code == 404
        assert writer.failures == 1
        blocker.unlink()
        assert c.get("/Patient/nobody").status_code == 404  # the disk is back: answers and trail resume
        assert writer.wait_applied(30)
        assert AuditLog.of(srv.ctx.store.url).total() == 2


def test_sync_full_answers_after_the_journal_is_on_disk(es_url: str, tmp_path: Path) -> None:
    settings = make_settings(es_url, tmp_path, audit="on", audit_sync="full")
    with start_server(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=30) as c:
        for _ in range(5):
            assert c.get("/Patient/nobody").status_code == 404
        writer = srv.ctx.audit
        assert writer is not None and writer.journal is not None
        assert not writer.journal.dirty  # each answer waited for the fdatasync that covers it
        assert writer.wait_applied(30)
        assert AuditLog.of(srv.ctx.store.url).total() == 5
