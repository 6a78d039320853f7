"""The store of record, against SQLite and (when FHIR_TEST_PG_URL is set, as in CI) PostgreSQL."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from fhir_server.storage import (
    ConcurrentWrite,
    MatchKey,
    NewResource,
    SQLResourceStore,
    VersionConflict,
    format_instant,
    now_us,
    open_store,
)
from fhir_server.storage.backfill import backfill_type_log

PG_URL = os.environ.get("FHIR_TEST_PG_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLResourceStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    else:
        if not PG_URL:
            if os.environ.get("CI"):
                pytest.fail("FHIR_TEST_PG_URL must be set in CI")
            pytest.skip("FHIR_TEST_PG_URL not set")
        s = open_store(PG_URL)
        with s.engine.begin() as conn:
            for table in ("outbox", "index_error", "match_key", "resource", "resource_version", "type_log"):
                conn.execute(text(f"DELETE FROM {table}"))
        backfill_type_log(s)
    yield s
    s.dispose()


def _put(store: SQLResourceStore, id_: str, family: str, if_match: int | None = None) -> int:
    with store.unit() as unit:
        v = unit.put("Patient", id_, {"resourceType": "Patient", "name": [{"family": family}]}, method="PUT",
                     if_match=if_match)
    return v.version


def test_versions_are_kept_and_meta_is_assigned(store: SQLResourceStore) -> None:
    assert _put(store, "a", "One") == 1
    assert _put(store, "a", "Two") == 2
    current = store.read("Patient", "a")
    assert current is not None and current.version == 2
    res = current.resource()
    assert res["meta"]["versionId"] == "2" and res["id"] == "a"
    assert list(res)[:3] == ["resourceType", "id", "meta"]
    v1 = store.vread("Patient", "a", 1)
    assert v1 is not None and v1.resource()["name"][0]["family"] == "One"


def test_every_write_has_its_outbox_row_in_the_same_transaction(store: SQLResourceStore) -> None:
    _put(store, "b", "X")
    with store.unit() as unit:
        unit.delete("Patient", "b")
    pending = store.outbox.pending(10)
    assert [(e.type, e.id) for e in pending] == [("Patient", "b"), ("Patient", "b")]
    # a failed transaction leaves neither version nor outbox row
    with pytest.raises(RuntimeError), store.unit() as unit:
        unit.put("Patient", "c", {"resourceType": "Patient"}, method="PUT")
        raise RuntimeError("boom")
    assert store.read("Patient", "c") is None
    assert len(store.outbox.pending(10)) == 2
    store.outbox.done([e.seq for e in pending])
    assert store.outbox.max_seq() is None


def test_if_match_and_delete(store: SQLResourceStore) -> None:
    _put(store, "d", "X")
    with pytest.raises(VersionConflict):
        _put(store, "d", "Y", if_match=5)
    assert _put(store, "d", "Y", if_match=1) == 2
    with store.unit() as unit:
        deleted = unit.delete("Patient", "d")
    assert deleted is not None and deleted.deleted and deleted.version == 3
    with store.unit() as unit:
        assert unit.delete("Patient", "d") is None  # already deleted: no new version
    current = store.read("Patient", "d")
    assert current is not None and current.deleted


def test_concurrent_updates_with_if_match_one_winner_per_version(store: SQLResourceStore) -> None:
    _put(store, "e", "Start")
    wins: list[int] = []
    losses: list[str] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            wins.append(_put(store, "e", f"W{n}", if_match=1))
        except (VersionConflict, ConcurrentWrite) as exc:
            losses.append(type(exc).__name__)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [2]
    assert len(losses) == 7
    current = store.read("Patient", "e")
    assert current is not None and current.version == 2


def _concurrently(write: Callable[[int, int], int], threads: int = 4, each: int = 5) -> list[int]:
    """``write(thread, i)`` ``each`` times in each of ``threads`` threads, retried on ConcurrentWrite; the results."""
    done: list[int] = []

    def worker(n: int) -> None:
        for i in range(each):
            for _attempt in range(50):
                try:
                    done.append(write(n, i))
                    break
                except ConcurrentWrite:
                    continue

    running = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    return done


def test_concurrent_unconditional_updates_never_lose_a_version(store: SQLResourceStore) -> None:
    _put(store, "f", "Start")
    done = _concurrently(lambda n, _i: _put(store, "f", f"W{n}"))
    assert sorted(done) == list(range(2, 22))
    assert store.history_total("Patient", "f", since_us=None) == 21


def test_history_paging_by_seq(store: SQLResourceStore) -> None:
    for i in range(7):
        _put(store, f"h{i}", "H")
    page1 = store.history("Patient", None, before_seq=None, since_us=None, count=4)
    page2 = store.history("Patient", None, before_seq=page1[-1].seq, since_us=None, count=4)
    ids = [v.id for v in page1 + page2]
    assert ids == [f"h{i}" for i in reversed(range(7))]


def test_iter_current_skips_deleted(store: SQLResourceStore) -> None:
    for i in range(5):
        _put(store, f"i{i}", "I")
    with store.unit() as unit:
        unit.delete("Patient", "i2")
    batches = list(store.iter_current("Patient", batch=2))
    assert [len(b) for b in batches] == [2, 2]
    assert [v.id for b in batches for v in b] == ["i0", "i1", "i3", "i4"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
))
def test_content_round_trips_unchanged(store: SQLResourceStore, payload: object) -> None:
    id_ = uuid.uuid4().hex
    with store.unit() as unit:
        unit.put("Patient", id_, {"resourceType": "Patient", "extension": [{"x": payload}]}, method="PUT")
    stored = store.read("Patient", id_)
    assert stored is not None
    assert stored.resource()["extension"] == [{"x": payload}]


def _consent(store: SQLResourceStore, id_: str) -> int:
    with store.unit() as unit:
        return unit.put("Consent", id_, {"resourceType": "Consent", "status": "active"}, method="PUT").seq


def test_log_marker_moves_with_every_committed_version_of_its_type_only(store: SQLResourceStore) -> None:
    start = store.log_marker("Consent")
    seq = _consent(store, "c1")
    assert store.log_marker("Consent") == (seq, start[1] + 1)
    _put(store, "p1", "Other type")  # untracked: no bump
    assert store.log_marker("Consent") == (seq, start[1] + 1)
    with pytest.raises(RuntimeError), store.unit() as unit:  # rolled back: no bump either
        unit.put("Consent", "c2", {"resourceType": "Consent", "status": "active"}, method="PUT")
        raise RuntimeError("boom")
    assert store.log_marker("Consent") == (seq, start[1] + 1)
    with store.unit() as unit:
        gone = unit.delete("Consent", "c1")
    assert gone is not None and store.log_marker("Consent") == (gone.seq, start[1] + 2)
    with pytest.raises(ValueError):
        store.log_marker("Patient")  # only tracked types have a log


def test_log_marker_sees_a_commit_below_the_highest_seq(store: SQLResourceStore) -> None:
    """PostgreSQL hands out seqs at insert and may commit them in another order: a late commit under the
    highest seq must still move the marker (the count does), and count once."""
    if store.dialect == "sqlite":
        pytest.skip("SQLite serialises writers: seqs commit in order")
    with ExitStack() as late:
        unit = late.enter_context(store.unit())
        low = unit.put("Consent", "late", {"resourceType": "Consent", "status": "active"}, method="PUT").seq
        high = _consent(store, "early")  # another transaction takes a higher seq and commits first
        assert high > low
        before = store.log_marker("Consent")
        assert before[0] == high
    after = store.log_marker("Consent")
    assert after != before and after == (high, before[1] + 1)


def test_log_marker_counts_concurrent_writers_exactly(store: SQLResourceStore) -> None:
    start = store.log_marker("Consent")
    seqs = _concurrently(lambda n, i: _consent(store, f"w{n}-{i % 2}"))
    assert len(seqs) == 20
    assert store.log_marker("Consent") == (max(seqs), start[1] + 20)


def test_type_log_is_backfilled_for_a_store_older_than_it(store: SQLResourceStore) -> None:
    seqs = [_consent(store, f"b{i}") for i in range(3)]
    with store.engine.begin() as conn:  # a store written before the table (and schema migrations) existed
        conn.execute(text("DROP TABLE type_log" if store.dialect == "sqlite" else "DELETE FROM type_log"))
        if store.dialect == "sqlite":  # and the tables later than create_all
            conn.execute(text("DROP TABLE alembic_version"))
            conn.execute(text("DROP TABLE rules_version"))
    store.create_schema()
    with store.engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM resource_version WHERE type = 'Consent'")).scalar_one()
    assert store.log_marker("Consent") == (max(seqs), n)
    seq = _consent(store, "b9")
    assert store.log_marker("Consent") == (seq, n + 1)


def _new(type_: str, id_: str, *keys: MatchKey, indexed: bool = True) -> NewResource:
    body = {"resourceType": type_, "id": id_, "meta": {"versionId": "1", "lastUpdated": format_instant(now_us())}}
    return NewResource(type_, id_, "PUT", now_us(), orjson.dumps(body), frozenset(keys), indexed)


def test_insert_new_many_writes_what_put_writes_and_declines_what_it_cannot_decide(store: SQLResourceStore) -> None:
    uid = MatchKey("masterIdentifier", "urn:ietf:rfc:3986", "urn:oid:1.2.3")
    ins = MatchKey("identifier", "urn:oid:1.2.250.1.213.1.4.8", "1800275")
    _put(store, "old", "Exists")
    with store.unit() as unit:
        unit.put("DocumentReference", "held", {"resourceType": "DocumentReference", "masterIdentifier": {
            "system": uid.system, "value": uid.value}}, method="PUT")
    twin = MatchKey("masterIdentifier", "urn:ietf:rfc:3986", "urn:oid:9")
    items = [_new("Patient", "n1", ins), _new("Patient", "old"), _new("Patient", "n1"),
             _new("DocumentReference", "d1", uid), _new("DocumentReference", "d2", twin),
             _new("DocumentReference", "d3", twin), _new("Binary", "b1", indexed=False), _new("Consent", "c1")]
    before = store.log_marker("Consent")
    pending = {e.seq for e in store.outbox.pending(100)}
    with store.unit() as unit:
        out = unit.insert_new_many(items)
    written = [(v.type, v.id) for v in out if v is not None]
    # exists, repeated id, masterIdentifier held, masterIdentifier carried twice: left to put()
    assert written == [("Patient", "n1"), ("Binary", "b1"), ("Consent", "c1")]
    assert [v is None for v in out] == [False, True, True, True, True, True, False, False]
    n1 = store.read("Patient", "n1")
    assert n1 is not None and n1.version == 1 and n1.content == items[0].content
    with store.unit() as unit:
        assert unit.match("Patient", ("identifier",), ins.system, ins.value) == {"n1"}
    queued = [(e.type, e.id) for e in store.outbox.pending(100) if e.seq not in pending]
    assert queued == [("Patient", "n1"), ("Consent", "c1")]  # Binary: not indexed
    c1 = out[-1]
    assert c1 is not None and store.log_marker("Consent") == (c1.seq, before[1] + 1)
