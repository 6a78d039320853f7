"""Validation throughput, resources per second on one core (CPU time of this process), for the resources the
issue names: a Patient INS (FR Core), a PDSm comprehensive DocumentReference, an FR Core Immunization, plus
Synthea Patients against base R4.

Figures are also given as ratios to baselines measured in the same run:

- ``parse``: ``orjson.loads`` of the same resource (the floor every write pays);
- ``structural``: the previous validator (``fhir.resources`` pydantic models);
- ``store write``: one SQLite store transaction (version + head + outbox rows) for the same resource, i.e. the
  in-process part of the ingest cost (HTTP and Elasticsearch come on top, so the real share is smaller).

    .venv/bin/python bench/validate.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fhir_server.storage import open_store  # noqa: E402
from profiles import validate  # noqa: E402
from profiles.structural import validate_structure  # noqa: E402


def _load(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((SHARED / rel).read_bytes())
    return data


def samples() -> dict[str, list[dict[str, Any]]]:
    ins = _load("fr/frcore/Patient-FRCorePatientExample.json")
    ins["identifier"][0]["value"] = "180017505600103"  # a valid NIR key: no warning path
    doc = _load("fr/pdsm-published-json/DocumentReference-exemple-pdsm-documentreference.json")
    for c in doc["contained"]:
        c.get("meta", {}).pop("lastUpdated", None)
    patient = copy.deepcopy(_load("fr/pdsm-published-json/Patient-fr-patient-123.json"))
    patient.pop("meta", None)
    patient["id"] = "p"
    doc["contained"].append(patient)
    doc["author"] = [{"reference": "#practitioner-example"}]
    doc["authenticator"] = {"reference": "#practitioner-example"}
    doc["context"]["sourcePatientInfo"] = {"reference": "#p"}
    imm = _load("fr/frcore/Immunization-FRCoreImmunizationExample.json")
    synthea = [orjson.loads(line) for line in
               (SHARED / "synthea" / "10-patients" / "Patient.000.ndjson").read_text().splitlines() if line.strip()]
    for r in (ins, doc, imm, *synthea):
        assert not [i for i in validate(r) if i.severity in ("error", "fatal")], r.get("id")
    return {"Patient INS (FR Core 2.1.0)": [ins], "DocumentReference (PDSm 3.1.1)": [doc],
            "Immunization (FR Core 2.2.0)": [imm], "Synthea Patient (base R4)": synthea}


def rate(fn: Callable[[dict[str, Any]], object], items: list[dict[str, Any]], seconds: float) -> float:
    """Calls per CPU second, over at least ``seconds`` of CPU time."""
    fn(items[0])  # warm-up (compiled definitions, caches)
    n, start = 0, time.process_time()
    while True:
        for item in items:
            fn(item)
        n += len(items)
        spent = time.process_time() - start
        if spent >= seconds:
            return n / spent


def store_write_rate(items: list[dict[str, Any]], seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.sqlite3")
        counter = iter(range(10**9))

        def write(resource: dict[str, Any]) -> None:
            with store.unit() as unit:
                body = {k: v for k, v in resource.items() if k != "masterIdentifier"}  # unique per store
                unit.put(str(resource["resourceType"]), f"b{next(counter)}", body, method="PUT")

        try:
            return rate(write, items, seconds)
        finally:
            close = getattr(store, "close", None)
            if close:
                close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per measurement")
    args = ap.parse_args()
    print(f"{'resource':34} {'validate/s':>11} {'parse/s':>10} {'structural/s':>13} {'store/s':>9} "
          f"{'vs parse':>9} {'vs struct':>10} {'share of write':>15}")
    for name, items in samples().items():
        raws = [orjson.dumps(r) for r in items]
        v = rate(validate, items, args.seconds)
        by_id = {id(r): raw for r, raw in zip(items, raws, strict=True)}

        def parse(r: dict[str, Any], by_id: dict[int, bytes] = by_id) -> object:
            return orjson.loads(by_id[id(r)])

        p = rate(parse, items, args.seconds)
        s = rate(validate_structure, items, args.seconds)
        w = store_write_rate(items, args.seconds)
        share = (1 / v) / (1 / v + 1 / w)  # validation's part of (validation + store write)
        print(f"{name:34} {v:11,.0f} {p:10,.0f} {s:13,.0f} {w:9,.0f} {v / p:9.3f} {v / s:10.2f} {share:14.0%}")


if __name__ == "__main__":
    main()
