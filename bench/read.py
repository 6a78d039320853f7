"""Read benchmark: reads/s (GET Patient/{id}) and searches/s (GET Immunization?patient=Patient/{id}).

Loads a modest dataset (by default the 10-patients Synthea Patients and Immunizations, PUT at their
own ids) into a server it starts itself (or ``--url``), checks a search returns what was loaded, then
runs each workload for ``--seconds`` at each concurrency level, clients picking random patients.
Printed: requests, seconds, requests/s, the ratio to the first level (concurrency 1) of the same
workload in this run, and latency percentiles.

    .venv/bin/python bench/read.py                        # 10 s per workload and level, 1 and 16 clients
    .venv/bin/python bench/read.py --seconds 3 --concurrency 1,4,16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import (
    Environment,
    LoadProcess,
    LoadResult,
    Op,
    add_provisioning_args,
    cap,
    count_types,
    log,
    namespaced,
    parse_levels,
    print_errors,
    print_table,
    put_ops,
    read_resources,
    run_token,
    wait_searchable,
)

LOAD_CONCURRENCY = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 16],
                        help="comma-separated client counts; the first is the baseline (default 1,16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each workload and level")
    parser.add_argument("--datasets", default="10-patients", help="default 10-patients")
    parser.add_argument("--limit", type=int, help="cap the resources loaded (each type keeps its share)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")

    token = run_token()
    resources = namespaced(cap(read_resources(args.data, args.datasets.split(","), ("Patient", "Immunization")),
                               args.limit), f"-{token}")
    counts = count_types(resources)
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    imms_of: dict[str, int] = {}
    for r in resources:
        if r["resourceType"] == "Immunization":
            ref = r.get("patient", {}).get("reference", "")
            imms_of[ref] = imms_of.get(ref, 0) + 1
    workloads = {
        "read Patient/{id}": [Op("GET", f"Patient/{pid}") for pid in patients],
        "search Immunization?patient=": [Op("GET", f"Immunization?patient=Patient/{pid}") for pid in patients],
    }

    rows: list[list[object]] = []
    failed = 0
    with Environment(args) as env, LoadProcess() as loader, env.server("read") as base:
        log(f"loading {len(resources)} resources ({counts}) into {base}")
        load = loader.drive(base, put_ops(resources), LOAD_CONCURRENCY, seconds=300)
        print_errors("load", load)
        if load.errors:
            return 1
        with httpx.Client(base_url=base + "/", timeout=60) as client:
            wait_searchable(client, list(counts), counts if env.managed else None)
            # the search workload measures real work: check it finds what was loaded
            probe = max(patients, key=lambda pid: imms_of.get(f"Patient/{pid}", 0))
            resp = client.get("Immunization", params={"patient": f"Patient/{probe}", "_count": "1000"})
            got = len(resp.json().get("entry", [])) if resp.status_code == 200 else -1
            want = imms_of.get(f"Patient/{probe}", 0)
            if got != want:
                log(f"Immunization?patient=Patient/{probe} returned {got} entries, {want} loaded: {resp.text[:500]}")
                return 1
            log(f"loaded; Immunization?patient= returns {want} for the busiest patient")
        for name, ops in workloads.items():
            baseline: LoadResult | None = None
            for level in args.concurrency:
                log(f"{name}: {level} clients for {args.seconds:g} s")
                result = loader.drive(base, ops, level, seconds=args.seconds, repeat=True, seed=level)
                print_errors(f"{name} x{level}", result)
                failed += result.errors
                baseline = baseline or result
                rows.append([name, level, result.ok, result.errors, f"{result.seconds:.2f}", f"{result.rate:.1f}",
                             f"{result.rate / baseline.rate:.2f}" if baseline.rate else "-",
                             f"{result.percentile_ms(0.5):.2f}", f"{result.percentile_ms(0.95):.2f}"])

    print(f"\nReads and searches over HTTP: {', '.join(f'{t} {n}' for t, n in counts.items())} loaded")
    print_table(["workload", "clients", "requests", "errors", "seconds", "req/s", f"vs c={args.concurrency[0]}",
                 "p50 ms", "p95 ms"], rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
