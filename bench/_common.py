"""Helpers shared by the benchmarks: Synthea data, self-provisioning, and the load generator.

Provisioning: without ``--url`` a benchmark starts a managed Elasticsearch node of its own (temp data
dir, free loopback port) and runs servers in-process (``tests.harness.start_server``), each with a
fresh temp SQLite store (or ``--db-url``) and a fresh index prefix, and tears everything down on exit.

Load generation runs in a separate process (asyncio + httpx), so the client's CPU time does not
compete with the in-process server for the GIL; the figures are still end to end over loopback HTTP.
Every loop is bounded both in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "synthea"
DATASETS = ("100-patients", "10-patients")
TYPES = ("Patient", "Immunization", "DocumentReference")
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
REQUEST_TIMEOUT_S = 60.0
MAX_ID_LEN = 64

if str(REPO_ROOT) not in sys.path:  # `tests.harness` lives in the repository, not in the installed package
    sys.path.insert(0, str(REPO_ROOT))


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the figures."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def read_resources(data: Path, datasets: Sequence[str], types: Sequence[str]) -> list[dict[str, Any]]:
    """Resources of ``types`` from ``<data>/<dataset>/<Type>.*.ndjson``, types in the order given, no duplicates."""
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for type_ in types:
        for ds in datasets:
            for f in sorted((data / ds).glob(f"{type_}.*ndjson")):
                with f.open("rb") as fh:
                    for line in fh:
                        if not line.strip():
                            continue
                        res = orjson.loads(line)
                        key = (res.get("resourceType", ""), res.get("id", ""))
                        if key[0] != type_ or not key[1] or key in seen:
                            continue
                        seen.add(key)
                        out.append(res)
    if not out:
        raise SystemExit(f"no {'/'.join(types)} resources under {data} ({', '.join(datasets)})")
    return out


def cap(resources: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """At most ``limit`` resources, each type keeping its share (at least one), order preserved."""
    if limit is None or limit >= len(resources):
        return resources
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    quota = {t: max(1, len(rs) * limit // len(resources)) for t, rs in by_type.items()}
    out = [r for t, rs in by_type.items() for r in rs[: quota[t]]]
    return out[:limit]


def count_types(resources: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in resources:
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    return counts


@dataclass(frozen=True)
class Op:
    """One HTTP request of the load: ``method`` on ``path`` (relative to the base) with an optional body."""

    method: str
    path: str
    body: bytes | None = None


def namespaced(resources: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """Copies whose ids (and the references between them) carry ``suffix``.

    Each run (and each concurrency level) thus writes new resources, so every PUT is an
    update-as-create whatever the server already holds, and references still resolve.
    """
    ids = {(r["resourceType"], r["id"]) for r in resources}

    def new_id(id_: str) -> str:
        return (id_ + suffix)[-MAX_ID_LEN:] if len(id_) + len(suffix) > MAX_ID_LEN else id_ + suffix

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fix(v) for k, v in node.items()}
            ref = node.get("reference")
            if isinstance(ref, str) and ref.count("/") == 1:
                type_, id_ = ref.split("/")
                if (type_, id_) in ids:
                    out["reference"] = f"{type_}/{new_id(id_)}"
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    out = []
    for r in resources:
        copy = fix(r)
        copy["id"] = new_id(r["id"])
        out.append(copy)
    return out


def put_ops(resources: list[dict[str, Any]]) -> list[Op]:
    """PUT each resource at its own id (update-as-create), so references between them stay valid."""
    return [Op("PUT", f"{r['resourceType']}/{r['id']}", orjson.dumps(r)) for r in resources]


def run_token() -> str:
    return uuid.uuid4().hex[:6]


# --------------------------------------------------------------------------- provisioning


def add_provisioning_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="benchmark this running server (FHIR base URL) instead of starting one")
    parser.add_argument("--es-url", help="use this Elasticsearch instead of starting a managed node")
    parser.add_argument("--db-url", help="SQLAlchemy URL of the store (e.g. postgresql+psycopg://...); "
                                         "default: a temp SQLite file per server")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"Synthea ndjson root (default {DEFAULT_DATA})")


def parse_levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or any(n < 1 or n > 256 for n in levels):
        raise argparse.ArgumentTypeError("concurrency levels are integers in 1..256, comma-separated")
    return levels


class Environment:
    """What the benchmark runs against: ``--url``, or servers it starts itself (and stops)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url: str | None = args.url.rstrip("/") if args.url else None
        self.es_url: str | None = args.es_url
        self.db_url: str | None = args.db_url
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None

    def __enter__(self) -> Environment:
        if self.url is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="fhir-bench-"))
            self._stack.callback(shutil.rmtree, self._tmp, True)
            if self.es_url is None:
                self.es_url = self._start_es(self._tmp / "es")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start_es(self, data_dir: Path) -> str:
        from fhir_devtools import es_node
        from fhir_server.settings import Settings

        cfg = es_node.NodeConfig.from_settings(Settings(), port=es_node.free_port(), data_dir=data_dir, name="bench")
        log(f"starting a managed Elasticsearch node on 127.0.0.1:{cfg.port} ...")
        t0 = time.perf_counter()
        self._stack.callback(es_node.stop, cfg)
        url = es_node.start(cfg, timeout=180)
        log(f"Elasticsearch up at {url} in {time.perf_counter() - t0:.1f} s")
        return url

    @property
    def managed(self) -> bool:
        return self.url is None

    @contextlib.contextmanager
    def server(self, label: str, **overrides: Any) -> Iterator[str]:
        """A FHIR base URL: a fresh in-process server (own store and index prefix, ``overrides`` on its
        settings), or ``--url``."""
        if self.url is not None:
            yield self.url
            return
        from fhir_devtools import es_node
        from fhir_server.settings import Settings
        from tests.harness import start_server

        assert self._tmp is not None and self.es_url is not None
        workdir = Path(tempfile.mkdtemp(prefix=f"srv-{label}-", dir=self._tmp))
        settings = Settings(db_url=self.db_url or f"sqlite:///{workdir / 'fhir.sqlite3'}", es_url=self.es_url,
                            es_index_prefix=f"bench{run_token()}-{label.replace('+', '-')}-", host="127.0.0.1",
                            port=es_node.free_port(), **overrides)
        srv = start_server(settings)
        try:
            yield srv.base_url
        finally:
            srv.stop()
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- load generation


@dataclass
class LoadResult:
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(base_url: str, ops: Sequence[Op], concurrency: int, seconds: float, repeat: bool,
                 max_ops: int, seed: int, headers: Mapping[str, str] | None) -> LoadResult:
    result = LoadResult()
    rng = random.Random(seed)
    issued = 0
    order: Iterator[int] = iter(range(len(ops)))
    deadline = time.perf_counter() + seconds

    def next_op() -> Op | None:
        nonlocal issued
        if issued >= max_ops or time.perf_counter() >= deadline:
            return None
        if repeat:
            issued += 1
            return ops[rng.randrange(len(ops))]
        i = next(order, None)
        if i is None:
            return None
        issued += 1
        return ops[i]

    async def worker(client: httpx.AsyncClient) -> None:
        while (op := next_op()) is not None:
            t0 = time.perf_counter()
            try:
                resp = await client.request(op.method, op.path, content=op.body,
                                            headers=FHIR_JSON if op.body is not None else None)
                status, text = resp.status_code, resp.text if resp.status_code >= 400 else ""
            except httpx.HTTPError as exc:
                status, text = 0, f"{type(exc).__name__}: {exc}"
            result.latencies.append(time.perf_counter() - t0)
            if 200 <= status < 300:
                result.ok += 1
            else:
                result.errors += 1
                if len(result.first_errors) < 5:
                    result.first_errors.append(f"{op.method} {op.path} -> {status} {text[:300]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=REQUEST_TIMEOUT_S,
                                 limits=limits, headers=headers) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def drive(base_url: str, ops: Sequence[Op], concurrency: int, *, seconds: float, repeat: bool = False,
          max_ops: int = 1_000_000, seed: int = 0, headers: Mapping[str, str] | None = None) -> LoadResult:
    """Issue ``ops`` (once each, or random picks when ``repeat``) with ``concurrency`` clients, bounded in time;
    ``headers`` go with every request (e.g. a bearer token)."""
    return asyncio.run(_drive(base_url, ops, concurrency, seconds, repeat, max_ops, seed, headers))


class LoadProcess:
    """One worker process that runs :func:`drive` on request (spawned, so it shares nothing with us)."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1,
                                                            mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def drive(self, base_url: str, ops: Sequence[Op], concurrency: int, *, seconds: float,
              repeat: bool = False, max_ops: int = 1_000_000, seed: int = 0) -> LoadResult:
        fut = self._pool.submit(drive, base_url, list(ops), concurrency, seconds=seconds, repeat=repeat,
                                max_ops=max_ops, seed=seed)
        return fut.result(timeout=seconds + 2 * REQUEST_TIMEOUT_S + 30)


def wait_searchable(client: httpx.Client, types: Iterable[str], expected: dict[str, int] | None,
                    timeout: float = 300.0) -> float:
    """Seconds until a search of every type succeeds (searches wait for pending writes) and, when
    ``expected`` is given (a fresh server), reports at least that many resources."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    pending = list(types)
    for _ in range(100_000):
        if not pending:
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            raise SystemExit(f"not searchable after {timeout:.0f} s: {pending}")
        resp = client.get(f"{pending[0]}", params={"_summary": "count"})
        if resp.status_code == 503:
            continue  # the index is catching up; the server already waited its consistency timeout
        if resp.status_code != 200:
            raise SystemExit(f"GET {pending[0]}?_summary=count -> {resp.status_code} {resp.text[:500]}")
        total = resp.json().get("total")
        if expected is None or (isinstance(total, int) and total >= expected.get(pending[0], 0)):
            pending.pop(0)
        else:
            time.sleep(0.05)
    raise SystemExit("wait_searchable: too many attempts")


def median_ms(values: Sequence[float]) -> float:
    return 1000 * statistics.median(values) if values else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def print_errors(label: str, result: LoadResult) -> None:
    if result.errors:
        log(f"{label}: {result.errors} failed requests; first ones:")
        for e in result.first_errors:
            log(f"  {e}")
