"""The bulk load path (``fhir-server load --bulk``): same outcome as the write path, against real ES and SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import Elasticsearch

from fhir_server.context import ServerContext
from fhir_server.loader import BulkStats, bulk_load, load
from fhir_server.storage.schema import match_key
from tests.conftest import make_settings

INS = "urn:oid:1.2.250.1.213.1.4.8"


def _ndjson(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def _patients(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"resourceType": "Patient", "id": f"p{i}", "birthDate": "1980-02-03",
             "identifier": [{"system": INS, "value": f"1800275{i:08d}"}], "name": [{"family": f"Lefèvre{i}"}]}
            for i in range(start, start + n)]


def _search_ids(ctx: ServerContext, type_: str, query: dict[str, Any]) -> set[str]:
    ctx.es.indices.refresh(index=ctx.indices.alias(type_))
    resp = ctx.es.search(index=ctx.indices.alias(type_), query=query, size=1000, source=False)
    return {h["_id"] for h in resp["hits"]["hits"]}


def test_bulk_load_stores_versions_indexes_and_restores_settings(ctx: ServerContext, tmp_path: Path,
                                                                  shared_data: Path) -> None:
    src = shared_data / "synthea" / "10-patients"
    files = [src / f"{t}.000.ndjson" for t in ("Patient", "Immunization", "Encounter")]
    stats = BulkStats()
    report = bulk_load(ctx, files, workers=0, batch=50, stats=stats)
    assert report.rejected == []
    assert report.skipped["Encounter"] > 0
    served = [f for f in files if "Encounter" not in f.name]
    lines = [orjson.loads(line) for f in served for line in f.read_bytes().splitlines() if line.strip()]
    assert report.loaded == len(lines) == stats.fast
    assert stats.es_error is None and stats.left_to_indexer == 0
    assert ctx.store.outbox.max_seq() is None  # every row applied, none left for the indexer
    for res in lines[:20]:
        stored = ctx.store.read(res["resourceType"], res["id"])
        assert stored is not None and stored.version == 1 and stored.method == "PUT"
        body = stored.resource()
        assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"]
        assert {k: v for k, v in body.items() if k != "meta"} == {k: v for k, v in res.items() if k != "meta"}
    for type_ in ("Patient", "Immunization"):
        expected = {r["id"] for r in lines if r["resourceType"] == type_}
        assert _search_ids(ctx, type_, {"match_all": {}}) == expected
        for name in ctx.indices.physical(type_):
            settings = ctx.es.indices.get_settings(index=name, flat_settings=True)[name]["settings"]
            assert settings.get("index.refresh_interval") in (None, "1s")  # -1 only during the load


def test_bulk_and_write_path_give_the_same_index_documents(ctx: ServerContext, es_url: str, tmp_path: Path,
                                                           shared_data: Path) -> None:
    files = sorted((shared_data / "r4-examples").glob("DocumentReference-*.json")) + \
        sorted((shared_data / "r4-examples").glob("Patient-*.json"))
    report = bulk_load(ctx, files, workers=0)
    assert report.rejected == []
    other = ServerContext.build(make_settings(es_url, tmp_path / "one-by-one"), es_url, start_indexer=False)
    try:
        load(other, files)
        other.indexer.drain_all()
        for type_ in ("Patient", "DocumentReference"):
            for alias, c in ((ctx.indices.alias(type_), ctx), (other.indices.alias(type_), other)):
                c.es.indices.refresh(index=alias)
            mine, theirs = ({h["_id"]: h["_source"] for h in c.es.search(index=c.indices.alias(type_),
                                                                          size=500)["hits"]["hits"]}
                            for c in (ctx, other))
            assert mine.keys() == theirs.keys() and mine
            for id_ in mine:  # lastUpdated differs (written at another time); everything else is equal
                a, b = dict(mine[id_]), dict(theirs[id_])
                assert bool(a.get("content")) == bool(b.get("content"))
                for doc in (a, b):  # the _content text holds meta.lastUpdated too
                    doc.pop("meta"), doc.pop("content", None), doc["sp"].pop("_lastUpdated", None)
                assert a == b, id_
    finally:
        other.indices.drop_all()
        other.close()


def test_existing_and_repeated_ids_become_new_versions(ctx: ServerContext, tmp_path: Path) -> None:
    first = _ndjson(tmp_path / "a.ndjson", _patients(3))
    assert bulk_load(ctx, [first], workers=0).loaded == 3
    changed = _patients(2)
    changed[0]["name"] = [{"family": "Zoé"}]
    again = _ndjson(tmp_path / "b.ndjson", [*changed, changed[0] | {"gender": "female"}, *_patients(1, start=10)])
    stats = BulkStats()
    report = bulk_load(ctx, [again], workers=0, stats=stats)
    assert report.rejected == [] and report.loaded == 4
    assert stats.fast == 1 and stats.slow == 3  # p10 is new; p0, p1 exist; p0 repeats in the file
    assert ctx.store.read("Patient", "p0").version == 3  # type: ignore[union-attr]
    assert ctx.store.read("Patient", "p0").resource()["gender"] == "female"  # type: ignore[union-attr]
    assert ctx.store.read("Patient", "p1").version == 2  # type: ignore[union-attr]
    assert ctx.store.read("Patient", "p2").version == 1  # type: ignore[union-attr]
    assert ctx.store.outbox.max_seq() is None
    assert _search_ids(ctx, "Patient", {"term": {"sp.family.norm": "zoe"}}) == {"p0"}
    assert len(ctx.store.history("Patient", "p0", before_seq=None, since_us=None, count=10)) == 3


def test_resources_without_id_get_one_and_match_keys_are_written(ctx: ServerContext, tmp_path: Path) -> None:
    res = {"resourceType": "Patient", "identifier": [{"system": INS, "value": "180027512345678"}]}
    report = bulk_load(ctx, [_ndjson(tmp_path / "a.ndjson", [res, res])], workers=0)
    assert report.loaded == 2
    with ctx.store.engine.connect() as conn:
        rows = conn.execute(match_key.select().where(match_key.c.value == "180027512345678")).fetchall()
    assert len({r.id for r in rows}) == 2
    with ctx.store.unit() as unit:
        assert len(unit.match("Patient", ("identifier",), INS, "180027512345678")) == 2


def test_master_identifier_policy_holds_in_bulk(ctx: ServerContext, tmp_path: Path) -> None:
    def doc(id_: str, uid: str) -> dict[str, Any]:
        return {"resourceType": "DocumentReference", "id": id_, "status": "current",
                "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": uid},
                "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/a"}}]}

    bulk_load(ctx, [_ndjson(tmp_path / "a.ndjson", [doc("d1", "urn:oid:1.2.3")])], workers=0)
    report = bulk_load(ctx, [_ndjson(tmp_path / "b.ndjson", [doc("d2", "urn:oid:1.2.3"), doc("d3", "urn:oid:9"),
                                                             doc("d4", "urn:oid:9")])], workers=0)
    assert report.loaded == 1  # d3
    assert sorted(r[1].split()[0] for r in report.rejected) == ["409", "409"]
    assert all("masterIdentifier" in r[1] for r in report.rejected)
    assert ctx.store.read("DocumentReference", "d2") is None and ctx.store.read("DocumentReference", "d4") is None


def test_inline_attachment_data_takes_the_ordinary_path(ctx: ServerContext, tmp_path: Path) -> None:
    data = {"contentType": "text/plain", "data": "SGVsbG8="}
    created = {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": data}]}
    stats = BulkStats()
    report = bulk_load(ctx, [_ndjson(tmp_path / "a.ndjson", [created, created | {"id": "d1"}])], workers=0,
                       stats=stats)
    assert report.loaded == 2 and stats.slow == 2
    ids = _search_ids(ctx, "DocumentReference", {"match_all": {}})
    assert len(ids) == 2 and "d1" in ids
    (new_id,) = ids - {"d1"}
    att = ctx.store.read("DocumentReference", new_id).resource()["content"][0]["attachment"]  # type: ignore[union-attr]
    assert "data" not in att and att["url"].startswith("Binary/") and att["size"] == 5  # create: as ITI-105
    kept = ctx.store.read("DocumentReference", "d1").resource()["content"][0]["attachment"]  # type: ignore[union-attr]
    assert kept["data"] == "SGVsbG8="  # update keeps it, as PUT does


def test_validation_rejects_unless_disabled(ctx: ServerContext, tmp_path: Path) -> None:
    bad = {"resourceType": "Patient", "id": "bad", "birthDate": "1980-02-03", "unknownElement": 1}
    f = _ndjson(tmp_path / "a.ndjson", [bad, {"resourceType": "Patient", "id": "x y"}])
    (tmp_path / "a.ndjson").write_bytes(f.read_bytes() + b"{broken\n")
    report = bulk_load(ctx, [f], workers=0)
    assert report.loaded == 0
    reasons = dict(report.rejected)
    assert reasons["a.ndjson:1"].startswith("422") and "unknownElement" in reasons["a.ndjson:1"]
    assert "invalid id" in reasons["a.ndjson:2"]
    assert "malformed JSON" in reasons["a.ndjson:3"]
    trusted = bulk_load(ctx, [f], workers=0, validate=False)  # trusted data: profiles skipped, not the rest
    assert trusted.loaded == 1 and len(trusted.rejected) == 2
    assert ctx.store.read("Patient", "bad") is not None


def test_elasticsearch_down_loses_nothing(ctx: ServerContext, tmp_path: Path) -> None:
    live = ctx.es
    ctx.es = Elasticsearch("http://127.0.0.1:9", request_timeout=2, max_retries=0)
    try:
        stats = BulkStats()
        report = bulk_load(ctx, [_ndjson(tmp_path / "a.ndjson", _patients(30))], workers=0, batch=10, stats=stats)
    finally:
        ctx.es.close()
        ctx.es = live
    assert report.loaded == 30 and report.rejected == []
    assert stats.es_error is not None and stats.left_to_indexer == 30
    assert ctx.store.read("Patient", "p29") is not None
    assert ctx.store.outbox.pending_upto(10**12)  # the indexer has the rows...
    ctx.indexer.drain_all()  # ...and applies them once ES answers
    assert ctx.store.outbox.max_seq() is None
    assert len(_search_ids(ctx, "Patient", {"match_all": {}})) == 30


def test_cli_bulk_load_with_worker_processes(es_url: str, tmp_path: Path, shared_data: Path) -> None:
    prefix = f"tbulkcli{os.getpid()}-"
    env = {**os.environ, "FHIR_ES_URL": es_url, "FHIR_DB_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
           "FHIR_ES_INDEX_PREFIX": prefix}
    src = shared_data / "synthea" / "10-patients"
    bad = _ndjson(tmp_path / "bad.ndjson", [{"resourceType": "Patient", "birthDate": "not-a-date"}])
    proc = subprocess.run([sys.executable, "-m", "fhir_server.cli", "load", "--bulk", "--workers", "2",
                           str(src / "Patient.000.ndjson"), str(src / "Immunization.000.ndjson"), str(bad)],
                          env=env, capture_output=True, text=True, timeout=300)
    try:
        assert proc.returncode == 0, proc.stderr
        out = proc.stderr + proc.stdout
        lines = sum(1 for f in ("Patient", "Immunization") for line in (src / f"{f}.000.ndjson").read_text()
                    .splitlines() if line.strip())
        assert "loaded" in out and str(lines) in out
        assert "Patient.birthDate" in out
        es = Elasticsearch(es_url)
        es.indices.refresh(index=f"{prefix}*")
        assert es.count(index=f"{prefix}immunization")["count"] + es.count(index=f"{prefix}patient")["count"] == lines
        es.close()
    finally:
        es = Elasticsearch(es_url)
        es.indices.delete(index=prefix + "*", ignore_unavailable=True, allow_no_indices=True)
        es.close()


def test_outbox_rows_are_cleared_only_once_searchable(ctx: ServerContext, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty outbox up to a seq tells a server's read-your-writes barrier "searchable"; refresh is off
    during a bulk load, so the loader refreshes before it clears rows."""
    from fhir_server.index import bulk

    monkeypatch.setattr(bulk, "ACK_EVERY", 30)
    alias = ctx.indices.alias("Patient")
    cleared: list[int] = []
    done = ctx.store.outbox.done

    def checked_done(seqs: list[int]) -> None:
        cleared.extend(seqs)
        assert ctx.es.count(index=alias)["count"] >= len(cleared)  # what search sees, no refresh of ours
        done(seqs)

    monkeypatch.setattr(ctx.store.outbox, "done", checked_done)
    report = bulk_load(ctx, [_ndjson(tmp_path / "p.ndjson", _patients(100))], workers=0, batch=20, stats=BulkStats())
    assert report.rejected == [] and len(cleared) == 100


def test_bulk_load_moves_the_consent_log_marker(ctx: ServerContext, tmp_path: Path) -> None:
    """The Consent look-up's cache is keyed on the store's Consent log: bulk-written Consents must move it."""
    consents = [{"resourceType": "Consent", "id": f"c{i}", "status": "active",
                 "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                       "code": "patient-privacy"}]},
                 "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                 "patient": {"reference": f"Patient/p{i}"},
                 "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                            "code": "OPTOUT"}]}} for i in range(5)]
    before = ctx.store.log_marker("Consent")
    stats = BulkStats()
    report = bulk_load(ctx, [_ndjson(tmp_path / "c.ndjson", consents)], workers=0, stats=stats)
    assert report.rejected == [] and stats.fast == 5
    top = max(ctx.store.read("Consent", f"c{i}").seq for i in range(5))  # type: ignore[union-attr]
    assert ctx.store.log_marker("Consent") == (top, before[1] + 5)


@pytest.mark.parametrize("bulk", [False, True])
def test_json_files_are_read_once_and_loaded_in_order(ctx: ServerContext, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, bulk: bool) -> None:
    """A .json file is parsed once (transaction or not is decided on that parse), and inputs load in order:
    the transaction Bundle after the plain file before it writes the next version."""
    (tmp_path / "a-plain.json").write_bytes(orjson.dumps(_patients(1)[0]))
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _patients(1)[0] | {"gender": "female"}, "request": {"method": "PUT", "url": "Patient/p0"}}]}
    (tmp_path / "b-tx.json").write_bytes(orjson.dumps(tx))
    collection = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in _patients(2, start=5)]}
    (tmp_path / "c-collection.json").write_bytes(orjson.dumps(collection))
    reads: list[str] = []
    read_bytes = Path.read_bytes

    def counted(self: Path) -> bytes:
        reads.append(self.name)
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    report = bulk_load(ctx, [tmp_path], workers=0) if bulk else load(ctx, [tmp_path])
    assert report.rejected == [] and report.loaded == 4
    assert sorted(reads) == ["a-plain.json", "b-tx.json", "c-collection.json"]
    p0 = ctx.store.read("Patient", "p0")
    assert p0 is not None and p0.version == 2 and p0.resource()["gender"] == "female"


def test_a_batch_colliding_with_another_writer_takes_the_ordinary_path(ctx: ServerContext, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_server.storage import ConcurrentWrite, SQLWriteUnit

    def collide(self: SQLWriteUnit, items: list[Any]) -> list[Any]:
        raise ConcurrentWrite("an id of the batch was created meanwhile")

    monkeypatch.setattr(SQLWriteUnit, "insert_new_many", collide)
    stats = BulkStats()
    report = bulk_load(ctx, [_ndjson(tmp_path / "a.ndjson", _patients(4))], workers=0, stats=stats)
    assert report.rejected == [] and report.loaded == 4 and stats.slow == 4
    assert len(_search_ids(ctx, "Patient", {"match_all": {}})) == 4
