"""`fhir-server load` of transaction Bundles goes through the transaction path (Synthea bundles)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx

from fhir_server.loader import LoadReport, load, load_transaction
from tests.harness import RunningServer


def _synthea(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "synthea" / "transaction-bundles").glob("*.json"))


def _served(files: list[Path]) -> int:
    return sum(1 for f in files for e in json.loads(f.read_text())["entry"]
               if e["resource"]["resourceType"] in ("Patient", "Immunization"))


def test_synthea_transaction_bundles_load_atomically_and_idempotently(server: RunningServer, client: httpx.Client,
                                                                      shared_data: Path) -> None:
    files = _synthea(shared_data)
    report = load(server.ctx, files)
    assert report.rejected == []
    assert report.loaded == _served(files) and report.skipped["Observation"] > 0
    patients = client.get("/Patient", params={"_summary": "count"}).json()["total"]
    assert patients == sum(1 for f in files if "Information" not in f.name)  # + hospital/practitioner files
    # each Immunization points at its patient, by the uuid the bundle gave it
    bundle = json.loads(files[0].read_text())
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    imms = client.get("/Immunization", params={"patient": f"Patient/{pid}"}).json()
    assert imms["total"] == sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Immunization")
    # loading again writes new versions of the same resources, never duplicates
    load(server.ctx, files)
    assert client.get("/Patient", params={"_summary": "count"}).json()["total"] == patients


def test_a_bundle_with_one_bad_entry_is_rejected_whole(server: RunningServer, client: httpx.Client,
                                                       shared_data: Path) -> None:
    bundle = json.loads(_synthea(shared_data)[1].read_text())
    broken = copy.deepcopy(bundle)
    pid = "broken-" + next(e["resource"]["id"] for e in broken["entry"] if e["resource"]["resourceType"] == "Patient")
    for e in broken["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"]["id"] = pid
            e["fullUrl"] = f"urn:uuid:{pid}"
        if e["resource"]["resourceType"] == "Immunization":
            e["resource"]["status"] = "not-a-status"
    report = LoadReport()
    load_transaction(server.ctx, "broken.json", broken, report)
    assert report.loaded == 0 and len(report.rejected) == 1 and "Bundle.entry[" in report.rejected[0][1]
    assert client.get(f"/Patient/{pid}").status_code == 404
