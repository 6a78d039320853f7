"""Ingest benchmark: PUT Synthea Patients, Immunizations and DocumentReferences over HTTP.

For each concurrency level a fresh server (own store, own index prefix) receives the same
resources (ids namespaced per level, references rewritten to match), written with PUT at their own
id by N concurrent clients. Printed per level: resources, seconds, resources/s, the ratio to the
first level's (concurrency 1) rate measured in this run, latency percentiles, and how long after
the last acknowledged write everything was searchable. Then the read-your-writes cost: the latency
of a search issued right after a write (it waits for the indexer) vs the same search with nothing
pending, median of ``--rw-samples`` pairs.

    .venv/bin/python bench/ingest.py                      # everything, concurrency 1,4,16
    .venv/bin/python bench/ingest.py --limit 300 --concurrency 1,4
    .venv/bin/python bench/ingest.py --url http://127.0.0.1:8080/fhir
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import (
    DATASETS,
    TYPES,
    Environment,
    LoadProcess,
    LoadResult,
    add_provisioning_args,
    cap,
    count_types,
    log,
    median_ms,
    namespaced,
    parse_levels,
    print_errors,
    print_table,
    put_ops,
    read_resources,
    run_token,
    wait_searchable,
)

RW_SYSTEM = "urn:bench:read-your-writes"


def read_your_writes(base_url: str, samples: int, token: str) -> tuple[list[float], list[float], int]:
    """(search-after-write latencies, idle-search latencies, searches that missed the write)."""
    after_write: list[float] = []
    idle: list[float] = []
    misses = 0
    with httpx.Client(base_url=base_url.rstrip("/") + "/", timeout=60) as client:
        for i in range(samples):
            pid = f"rw-{token}-{i}"
            patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": f"Rw{token}"}],
                                       "identifier": [{"system": RW_SYSTEM, "value": pid}]}
            put = client.put(f"Patient/{pid}", json=patient, headers={"Content-Type": "application/fhir+json"})
            if put.status_code not in (200, 201):
                raise SystemExit(f"PUT Patient/{pid} -> {put.status_code} {put.text[:500]}")
            params = {"identifier": f"{RW_SYSTEM}|{pid}"}
            # the first search waits for the write to be indexed, the second has nothing to wait for
            for bucket in (after_write, idle):
                t0 = time.perf_counter()
                resp = client.get("Patient", params=params)
                bucket.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    raise SystemExit(f"GET Patient?identifier=... -> {resp.status_code} {resp.text[:500]}")
                if [e["resource"]["id"] for e in resp.json().get("entry", [])] != [pid]:
                    misses += 1
    return after_write, idle, misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 4, 16],
                        help="comma-separated client counts; the first is the baseline (default 1,4,16)")
    parser.add_argument("--limit", type=int, help="cap the resources per level (each type keeps its share)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"default {','.join(DATASETS)}")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="time bound of each level")
    parser.add_argument("--rw-samples", type=int, default=50, help="write+search pairs for read-your-writes")
    args = parser.parse_args(argv)

    resources = cap(read_resources(args.data, args.datasets.split(","), TYPES), args.limit)
    counts = count_types(resources)
    token = run_token()
    log(f"{len(resources)} resources per level ({', '.join(f'{t} {n}' for t, n in counts.items())}), "
        f"concurrency {args.concurrency}, run {token}")

    rows: list[list[object]] = []
    results: list[LoadResult] = []
    rw: tuple[list[float], list[float], int] | None = None
    with Environment(args) as env, LoadProcess() as loader:
        for n, level in enumerate(args.concurrency):
            with env.server(f"c{level}") as base:
                ops = put_ops(namespaced(resources, f"-{token}c{level}"))
                with httpx.Client(base_url=base + "/", timeout=60) as client:
                    client.get("metadata").raise_for_status()  # warm-up: the server is up and answering
                    log(f"concurrency {level}: writing {len(ops)} resources to {base}")
                    result = loader.drive(base, ops, level, seconds=args.max_seconds)
                    print_errors(f"concurrency {level}", result)
                    searchable = wait_searchable(client, list(counts), counts if env.managed else None)
                results.append(result)
                base_rate = results[0].rate
                rows.append([level, result.ok, result.errors, f"{result.seconds:.2f}", f"{result.rate:.1f}",
                             f"{result.rate / base_rate:.2f}" if base_rate else "-",
                             f"{result.percentile_ms(0.5):.1f}", f"{result.percentile_ms(0.95):.1f}",
                             f"{searchable:.2f}", f"{result.ok / (result.seconds + searchable):.1f}"])
                if n == len(args.concurrency) - 1 and args.rw_samples > 0:
                    log(f"read-your-writes: {args.rw_samples} write+search pairs")
                    rw = read_your_writes(base, args.rw_samples, token)

    print(f"\nIngest over HTTP (PUT), {len(resources)} resources per level: "
          + ", ".join(f"{t} {n}" for t, n in counts.items()))
    print_table(["clients", "resources", "errors", "seconds", "res/s", f"vs c={args.concurrency[0]}",
                 "p50 ms", "p95 ms", "searchable +s", "res/s to searchable"], rows)
    if rw is not None:
        after, idle, misses = rw
        a, i = median_ms(after), median_ms(idle)
        print(f"\nRead-your-writes ({len(after)} pairs, Patient?identifier= on the loaded server):")
        print_table(["search", "median ms", "vs idle"],
                    [["right after a write", f"{a:.2f}", f"{a / i:.2f}" if i else "-"],
                     ["nothing pending", f"{i:.2f}", "1.00"]])
        print(f"cost of waiting for the index: {a - i:+.2f} ms median; searches missing the write: {misses}")
    failed = sum(r.errors for r in results)
    return 1 if failed or (rw is not None and rw[2]) else 0


if __name__ == "__main__":
    sys.exit(main())
