"""Audit benchmark: the cost of auth and audit per request, as ratios to the same requests with both off.

Starts one in-process server per configuration (fresh SQLite store, same Elasticsearch), loads a few
Patients, then runs each workload (read ``Patient/{id}``, create ``Patient``) at each concurrency level:

- ``off``: FHIR_AUTH=off, FHIR_AUDIT=off (the baseline)
- ``audit-async``: audit on, answers without waiting for the record's commit
- ``audit``: audit on, fail-closed (the default: each answer waits for its record's group commit)
- ``auth``: bearer tokens (FHIR_AUTH=jwt, a development issuer), audit off
- ``auth+audit``: both, fail-closed (what a production server runs)

Printed: req/s and p50 per configuration, and the ratio of req/s to ``off`` at the same workload and level
(1.00 = free, 0.90 = 10 % fewer requests per second). The load runs in a spawned process.

    .venv/bin/python bench/audit.py                       # 5 s per workload, configuration and level
    .venv/bin/python bench/audit.py --seconds 10 --concurrency 1,16
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import Environment, LoadResult, add_provisioning_args, log, parse_levels, print_table, run_token

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"auth": "off", "audit": "off"},
    "audit-async": {"auth": "off", "audit": "on", "audit_mode": "async"},
    "audit": {"auth": "off", "audit": "on", "audit_mode": "fail-closed"},
    "auth": {"auth": "jwt", "audit": "off"},
    "auth+audit": {"auth": "jwt", "audit": "on", "audit_mode": "fail-closed"},
}
Op = tuple[str, str, bytes | None]


async def _drive(base: str, ops: list[Op], concurrency: int, seconds: float, token: str | None) -> LoadResult:
    result = LoadResult()
    headers = dict(FHIR_JSON, **({"Authorization": f"Bearer {token}"} if token else {}))
    deadline = time.perf_counter() + seconds
    counter = iter(range(10_000_000))

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            method, path, body = ops[next(counter) % len(ops)]
            t0 = time.perf_counter()
            resp = await client.request(method, path, content=body)
            result.latencies.append(time.perf_counter() - t0)
            if resp.status_code < 300:
                result.ok += 1
            else:
                result.errors += 1
                if len(result.first_errors) < 3:
                    result.first_errors.append(f"{method} {path} -> {resp.status_code} {resp.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base + "/", headers=headers, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def drive(base: str, ops: list[Op], concurrency: int, seconds: float, token: str | None) -> LoadResult:
    return asyncio.run(_drive(base, ops, concurrency, seconds, token))


@contextmanager
def server(env: Environment, tmp: Path, label: str, overrides: dict[str, Any], issuer: Any) -> Iterator[str]:
    from fhir_server import es_node
    from fhir_server.settings import Settings
    from tests.harness import start_server

    workdir = Path(tempfile.mkdtemp(prefix=f"srv-{label}-", dir=tmp))
    auth = {"auth_issuer": issuer.issuer, "auth_audience": issuer.audience, "auth_jwks_file": issuer.jwks_file}
    settings = Settings(db_url=f"sqlite:///{workdir / 'fhir.sqlite3'}", es_url=env.es_url,
                        es_index_prefix=f"bench{run_token()}-{label.replace('+', '-')}-", host="127.0.0.1",
                        port=es_node.free_port(), **(auth if overrides["auth"] == "jwt" else {}), **overrides)
    srv = start_server(settings)
    try:
        yield srv.base_url
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 16], help="client counts (default 1,16)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--patients", type=int, default=50, help="Patients loaded for the read workload")
    args = parser.parse_args(argv)
    if args.url:
        parser.error("bench/audit.py starts its own servers (one per configuration); --url is not supported")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    from fhir_server.security.dev_issuer import DevIssuer

    ids = [f"bench-{run_token()}-{i}" for i in range(args.patients)]
    patient = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Bench", "given": ["Audit"]}]})
    workloads: dict[str, list[Op]] = {
        "read Patient/{id}": [("GET", f"Patient/{i}", None) for i in ids],
        "create Patient": [("POST", "Patient", patient)],
    }
    rows: list[list[object]] = []
    rates: dict[tuple[str, str, int], float] = {}
    failed = 0
    ctx = multiprocessing.get_context("spawn")
    with Environment(args) as env, concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        tmp = Path(tempfile.mkdtemp(prefix="fhir-bench-audit-"))
        issuer = DevIssuer(tmp / "issuer")
        issuer.ensure_keys()
        try:
            for label, overrides in CONFIGS.items():
                token = issuer.mint("bench", "system/*.cruds") if overrides["auth"] == "jwt" else None
                with server(env, tmp, label, overrides, issuer) as base:
                    load = [("PUT", f"Patient/{i}", orjson.dumps({"resourceType": "Patient", "id": i})) for i in ids]
                    pool.submit(drive, base, load, 4, 60.0, token).result()
                    for name, ops in workloads.items():
                        for level in args.concurrency:
                            log(f"{label}: {name} x{level} for {args.seconds:g} s")
                            res = pool.submit(drive, base, ops, level, args.seconds, token).result()
                            for err in res.first_errors:
                                log(f"  {err}")
                            failed += res.errors
                            rates[(label, name, level)] = res.rate
                            base_rate = rates.get(("off", name, level), 0.0)
                            rows.append([name, level, label, res.ok, f"{res.rate:.1f}",
                                         f"{res.rate / base_rate:.2f}" if base_rate else "-",
                                         f"{res.percentile_ms(0.5):.2f}", f"{res.percentile_ms(0.95):.2f}"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    rows.sort(key=lambda r: (str(r[0]), int(str(r[1])), list(CONFIGS).index(str(r[2]))))
    print("\nCost of auth and audit per request (SQLite store of record, loopback HTTP)")
    print_table(["workload", "clients", "config", "requests", "req/s", "vs off", "p50 ms", "p95 ms"], rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
