"""A/B benchmark: the same workloads against two running servers (two revisions of the code, two settings),
interleaved round by round so a neighbour's burst on a shared machine hits both alike.

Start each server yourself (own store, own index prefix, same Elasticsearch), e.g. the old revision from a
``git worktree`` and the new one from the checkout, then:

    .venv/bin/python bench/ab.py --a http://127.0.0.1:8081/fhir --b http://127.0.0.1:8082/fhir

Workloads: ``read`` (GET Patient/{id}), ``search`` (GET Patient?family=), ``create`` (POST Patient),
``update`` (PUT Patient/{id}), ``transaction`` (a Bundle of 10 POST entries). Printed per workload and round:
requests/s of A and B; then the median over rounds of the B/A ratio (1.00 = same speed), p50 of each, and
the load average before and after (the box is shared: read ratios, not absolute rates).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import Op, drive, log, parse_levels, print_table

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Ab"]}], "gender": "female",
            "birthDate": "1970-01-01"}


def _seed(base: str, n: int, family: str) -> list[str]:
    """``n`` Patients of one family in the server; their ids."""
    ids = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(n):
            resp = c.post("/Patient", content=orjson.dumps(_patient(family)), headers=FHIR_JSON)
            resp.raise_for_status()
            ids.append(resp.json()["id"])
    return ids


def _ops(workload: str, ids: list[str], family: str) -> list[Op]:
    if workload == "read":
        return [Op("GET", f"Patient/{i}") for i in ids]
    if workload == "search":
        return [Op("GET", f"Patient?family={family}&_count=10")]
    if workload == "create":
        return [Op("POST", "Patient", orjson.dumps(_patient(family + "c")))]
    if workload == "update":
        return [Op("PUT", f"Patient/{i}", orjson.dumps({**_patient(family), "id": i})) for i in ids]
    if workload == "transaction":
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _patient(family + "t"),
             "request": {"method": "POST", "url": "Patient"}} for _ in range(10)]}
        return [Op("POST", "", orjson.dumps(bundle))]
    raise SystemExit(f"unknown workload {workload}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="FHIR base URL of server A (the baseline)")
    parser.add_argument("--b", required=True, help="FHIR base URL of server B")
    parser.add_argument("--workloads", default="read,search,create,update,transaction")
    parser.add_argument("--concurrency", type=parse_levels, default=[1])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each slice")
    args = parser.parse_args()
    family = f"Ab{uuid.uuid4().hex[:8]}"
    ids = {name: _seed(url, 50, family) for name, url in (("a", args.a), ("b", args.b))}
    load_before = os.getloadavg()
    rows = []
    for workload in args.workloads.split(","):
        for level in args.concurrency:
            rates: dict[str, list[float]] = {"a": [], "b": []}
            p50: dict[str, list[float]] = {"a": [], "b": []}
            for r in range(args.rounds):
                order = ("a", "b") if r % 2 == 0 else ("b", "a")  # neither always goes first
                for name in order:
                    url = args.a if name == "a" else args.b
                    result = drive(url, _ops(workload, ids[name], family), level, seconds=args.seconds,
                                   repeat=True, seed=r)
                    if result.errors:
                        log(f"{workload} {name}: {result.errors} errors, e.g. {result.first_errors[:1]}")
                    rates[name].append(result.rate)
                    p50[name].append(result.percentile_ms(0.5))
            ratios = [b / a for a, b in zip(rates["a"], rates["b"], strict=True) if a > 0]
            med_a, med_b = statistics.median(rates["a"]), statistics.median(rates["b"])
            rows.append((workload, level, f"{med_a:.0f}", f"{med_b:.0f}",
                         f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}",
                         f"{statistics.median(p50['a']):.2f}", f"{statistics.median(p50['b']):.2f}"))
    print_table(("workload", "clients", "A req/s", "B req/s", "B/A (median)", "B/A range", "A p50 ms", "B p50 ms"),
                rows)
    load_after = os.getloadavg()
    print(f"load average: before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} "
          f"{load_after[1]:.2f}")


if __name__ == "__main__":
    main()
