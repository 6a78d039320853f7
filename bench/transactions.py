"""Transaction benchmark: Synthea transaction Bundles and small ITI-65 provide bundles over HTTP.

1. Synthea: the transaction Bundles of ``<data>/transaction-bundles`` (entries of types this server
   does not hold removed and references to them made literal, as ``fhir-server load`` does) are
   POSTed to ``/fhir`` by N concurrent clients for ``--seconds`` each level, on a fresh server per
   level. Printed: bundles/s, served resources/s and the ratio to the first level's rate.
2. ITI-65: one SubmissionSet List + one DocumentReference + one Binary per transaction (the
   PDSm4DMP example, each with its own masterIdentifier), at the same levels; printed with the
   ratio to single ``POST /fhir/Patient`` creates measured on the same server at the same level.

    .venv/bin/python bench/transactions.py                          # levels 1,8,32, 10 s each
    .venv/bin/python bench/transactions.py --concurrency 1,8 --seconds 5
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

try:
    from bench._common import Environment, LoadProcess, Op, add_provisioning_args, log, parse_levels, print_table
except ModuleNotFoundError:  # run as a script: bench/ is not a package on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._common import Environment, LoadProcess, Op, add_provisioning_args, log, parse_levels, print_table

SERVED = {"Patient", "Immunization", "DocumentReference", "List", "Binary"}
URN = re.compile(r"^urn:uuid:(.+)$")
FHIR_JSON = {"Content-Type": "application/fhir+json"}
NIR = "123456789012345"


def _literal(node: Any, urls: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _literal(v, urls) for k, v in node.items()}
    if isinstance(node, list):
        return [_literal(v, urls) for v in node]
    return urls.get(node, node) if isinstance(node, str) else node


def synthea_bundles(data: Path) -> list[tuple[bytes, int]]:
    """(body, served entries) of each Synthea transaction Bundle with at least one served entry."""
    out = []
    for f in sorted((data / "transaction-bundles").glob("*.json")):
        bundle = orjson.loads(f.read_bytes())
        dropped = {e["fullUrl"]: f"{e['resource']['resourceType']}/{m.group(1)}" for e in bundle["entry"]
                   if e["resource"]["resourceType"] not in SERVED and (m := URN.match(e.get("fullUrl", "")))}
        kept = [e for e in bundle["entry"] if e["resource"]["resourceType"] in SERVED]
        if kept:
            out.append((orjson.dumps({**bundle, "entry": _literal(kept, dropped)}), len(kept)))
    return out


def iti65_ops(data: Path, n: int) -> list[Op]:
    example = data.parent / "fr" / "pdsm4dmp-json" / "Bundle-example-td2-iti65-lot-soumission.json"
    bundle = orjson.loads(example.read_bytes())
    for e in bundle["entry"]:  # the known defects of the example (see tests/test_mhd.py)
        if e["resource"]["resourceType"] == "DocumentReference":
            e["resource"]["custodian"] = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1"}}
            e["resource"]["masterIdentifier"]["use"] = "usual"
    ops = []
    token = uuid.uuid4().hex[:8]
    for i in range(n):
        b = copy.deepcopy(bundle)
        for e in b["entry"]:
            if e["resource"]["resourceType"] == "DocumentReference":
                e["resource"]["masterIdentifier"]["value"] += f".{token}.{i}"
        ops.append(Op("POST", "", orjson.dumps(b)))
    return ops


def ins_patient(base: str, data: Path) -> None:
    pat = orjson.loads((data.parent / "fr" / "pdsm-published-json" / "Patient-fr-patient-123.json").read_bytes())
    pat["id"] = "bench-ins"
    for ident in pat["identifier"]:
        if ident.get("system") == "urn:oid:1.2.250.1.213.1.4.8":
            ident["value"] = NIR
    resp = httpx.put(f"{base}/Patient/bench-ins", json=pat, headers=FHIR_JSON, timeout=60)
    resp.raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound of each measurement")
    parser.add_argument("--max-iti65", type=int, default=3000, help="distinct ITI-65 bundles prepared per level")
    args = parser.parse_args(argv)
    bundles = synthea_bundles(args.data)
    mean_entries = sum(n for _, n in bundles) / len(bundles)
    log(f"{len(bundles)} Synthea bundles, {mean_entries:.1f} served entries each on average")
    synthea_rows: list[list[object]] = []
    iti_rows: list[list[object]] = []
    base_rate: float | None = None
    with Environment(args) as env, LoadProcess() as loader:
        for level in args.concurrency:
            with env.server(f"tx{level}") as base:
                ops = [Op("POST", "", body) for body, _ in bundles]
                res = loader.drive(base, ops, level, seconds=args.seconds, repeat=True)
                rate = res.rate * mean_entries
                base_rate = base_rate or rate
                synthea_rows.append([level, res.ok, res.errors, f"{res.rate:.1f}", f"{rate:.0f}",
                                     f"{rate / base_rate:.2f}", f"{res.percentile_ms(0.5):.0f}",
                                     f"{res.percentile_ms(0.95):.0f}"])
                if res.errors:
                    log(f"errors: {res.first_errors[:2]}")
                ins_patient(base, args.data)
                iti = loader.drive(base, iti65_ops(args.data, args.max_iti65), level, seconds=args.seconds)
                single = loader.drive(base, [Op("POST", "Patient", b'{"resourceType":"Patient"}')], level,
                                      seconds=args.seconds, repeat=True)
                iti_rows.append([level, iti.ok, iti.errors, f"{iti.rate:.1f}", f"{single.rate:.1f}",
                                 f"{iti.rate / single.rate:.2f}" if single.rate else "-",
                                 f"{iti.percentile_ms(0.5):.0f}"])
                if iti.errors:
                    log(f"errors: {iti.first_errors[:2]}")
    print("Synthea transaction bundles (POST /fhir)")
    print_table(["clients", "bundles ok", "errors", "bundles/s", "resources/s", "ratio to first", "p50 ms",
                 "p95 ms"], synthea_rows)
    print("\nITI-65 provide bundles (List + DocumentReference + Binary)")
    print_table(["clients", "tx ok", "errors", "tx/s", "single creates/s", "tx/s ÷ creates/s", "p50 ms"], iti_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
