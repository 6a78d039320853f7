"""Audit benchmark: the cost of auth and audit per request, as ratios to the same requests with both off.

Starts one in-process server per configuration (fresh SQLite store, same Elasticsearch) and keeps them all
up; loads the same Patients into each, then runs every workload (read ``Patient/{id}``, search
``Patient?family=``, create ``Patient``) at each concurrency level **interleaved**: ``--rounds`` short
slices per configuration, the configurations taking turns, so a neighbour's burst on a shared machine
hits every configuration alike and the ratios stay fair.

- ``off``: FHIR_AUTH=off, FHIR_AUDIT=off (the baseline)
- ``audit``: audit on, fail-closed, FHIR_AUDIT_SYNC=normal (the answer waits for the journal append)
- ``audit-thread``: the same with the applier as a thread of the server (FHIR_AUDIT_APPLIER=thread)
- ``auth``: bearer tokens (FHIR_AUTH=jwt, a development issuer), audit off
- ``auth+audit``: both, fail-closed, sync normal (what a production server runs by default)
- ``auth+audit-full``: both, fail-closed, FHIR_AUDIT_SYNC=full (the answer waits for the fsync too)

Printed: req/s and p50/p95 per configuration, the ratio of req/s to ``off`` at the same workload and
level (1.00 = free, 0.90 = 10 % fewer requests per second), and the server's CPU time per request (user +
system of the process that hosts the servers, all threads, and of their audit applier processes,
measured around each slice: the clients run in a spawned process and Elasticsearch in its own) with its
ratio to ``off``. On a shared machine the CPU
ratio is the steadier figure: a neighbour's burst stretches wall time, not the work a request costs.

    .venv/bin/python bench/audit.py                       # 6 s per workload, configuration and level
    .venv/bin/python bench/audit.py --seconds 10 --rounds 5 --concurrency 1,16
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import (
    Environment,
    LoadResult,
    Op,
    add_provisioning_args,
    drive,
    log,
    parse_levels,
    print_table,
    run_token,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"auth": "off", "audit": "off"},
    "audit": {"auth": "off", "audit": "on", "audit_mode": "fail-closed", "audit_sync": "normal"},
    "audit-thread": {"auth": "off", "audit": "on", "audit_mode": "fail-closed", "audit_sync": "normal",
                     "audit_applier": "thread"},
    "auth": {"auth": "jwt", "audit": "off"},
    "auth+audit": {"auth": "jwt", "audit": "on", "audit_mode": "fail-closed", "audit_sync": "normal"},
    "auth+audit-full": {"auth": "jwt", "audit": "on", "audit_mode": "fail-closed", "audit_sync": "full"},
}


def _cpu_s() -> float:
    """User + system CPU seconds of this process (the servers), all threads, plus the audit applier
    processes the servers started (their work is part of what audit costs)."""
    t = os.times()
    return t.user + t.system + _appliers_cpu_s()


def _appliers_cpu_s() -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"fhir_server.audit.applier" not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid: ours, not another run's
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 16], help="client counts (default 1,16)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per workload, configuration "
                                                                    "and level (split into --rounds slices)")
    parser.add_argument("--rounds", type=int, default=3, help="slices per configuration, taken in turns")
    parser.add_argument("--patients", type=int, default=50, help="Patients loaded for the read workload")
    parser.add_argument("--configs", default=",".join(c for c in CONFIGS if c != "audit-thread"),
                        help="comma-separated subset of " + ", ".join(CONFIGS))
    args = parser.parse_args(argv)
    if args.url:
        parser.error("bench/audit.py starts its own servers (one per configuration); --url is not supported")
    if not 0 < args.seconds <= 600 or not 1 <= args.rounds <= 100:
        parser.error("--seconds must be in (0, 600] and --rounds in 1..100")
    configs = [c for c in args.configs.split(",") if c]
    if "off" not in configs or any(c not in CONFIGS for c in configs):
        parser.error(f"--configs must include off and name only {', '.join(CONFIGS)}")
    from fhir_server.security.dev_issuer import DevIssuer

    ids = [f"bench-{run_token()}-{i}" for i in range(args.patients)]
    patient = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Bench", "given": ["Audit"]}]})
    workloads: dict[str, list[Op]] = {
        "read Patient/{id}": [Op("GET", f"Patient/{i}") for i in ids],
        "search Patient?family=": [Op("GET", "Patient?family=Bench&_count=10")],
        "create Patient": [Op("POST", "Patient", patient)],
    }
    rows: list[list[object]] = []
    failed = 0
    ctx = multiprocessing.get_context("spawn")
    with Environment(args) as env, concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool, \
            contextlib.ExitStack() as servers:
        tmp = Path(tempfile.mkdtemp(prefix="fhir-bench-audit-"))
        servers.callback(shutil.rmtree, tmp, True)
        issuer = DevIssuer(tmp / "issuer")
        issuer.ensure_keys()
        auth = {"auth_issuer": issuer.issuer, "auth_audience": issuer.audience, "auth_jwks_file": issuer.jwks_file}
        bases: dict[str, tuple[str, dict[str, str]]] = {}
        for label in configs:
            overrides = CONFIGS[label]
            jwt = overrides["auth"] == "jwt"
            headers = {"Authorization": f"Bearer {issuer.mint('bench', 'system/*.cruds')}"} if jwt else {}
            base = servers.enter_context(env.server(label, **overrides, **(auth if jwt else {})))
            load = [Op("PUT", f"Patient/{i}", orjson.dumps({"resourceType": "Patient", "id": i,
                                                            "name": [{"family": "Bench"}]})) for i in ids]
            loaded = pool.submit(drive, base, load, 4, seconds=120.0, headers=headers).result()
            if loaded.ok != len(load):
                raise SystemExit(f"{label}: loading failed: {loaded.first_errors}")
            bases[label] = (base, headers)
        for name, ops in workloads.items():
            for level in args.concurrency:
                log(f"{name} x{level}: {args.rounds} round(s) of {args.seconds / args.rounds:g} s per configuration")
                results = {label: LoadResult() for label in configs}
                cpu = dict.fromkeys(configs, 0.0)
                for round_ in range(args.rounds):
                    order = configs[round_ % len(configs):] + configs[:round_ % len(configs)]  # rotate who goes first
                    for label in order:
                        base, headers = bases[label]
                        before = _cpu_s()
                        res = pool.submit(drive, base, ops, level, seconds=args.seconds / args.rounds, repeat=True,
                                          headers=headers).result()
                        cpu[label] += _cpu_s() - before
                        total = results[label]
                        total.ok += res.ok
                        total.errors += res.errors
                        total.seconds += res.seconds
                        total.latencies += res.latencies
                        total.first_errors += res.first_errors[:3 - len(total.first_errors)]
                for label in configs:
                    res = results[label]
                    for err in res.first_errors:
                        log(f"  {label}: {err}")
                    failed += res.errors
                    base_rate = results["off"].rate
                    per_request = 1e6 * cpu[label] / res.ok if res.ok else float("nan")
                    base_cpu = 1e6 * cpu["off"] / results["off"].ok if results["off"].ok else float("nan")
                    rows.append([name, level, label, res.ok, f"{res.rate:.1f}",
                                 f"{res.rate / base_rate:.2f}" if base_rate else "-",
                                 f"{res.percentile_ms(0.5):.2f}", f"{res.percentile_ms(0.95):.2f}",
                                 f"{per_request:.0f}", f"{per_request / base_cpu:.3f}"])
    print("\nCost of auth and audit per request (SQLite store of record, loopback HTTP, configurations interleaved)")
    print_table(["workload", "clients", "config", "requests", "req/s", "vs off", "p50 ms", "p95 ms",
                 "server CPU us/req", "CPU vs off"], rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
