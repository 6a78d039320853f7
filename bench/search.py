"""Search benchmark: generated French-style patients with documents and vaccinations, then a realistic mix.

Generates ``--resources`` resources (per patient: 1 Patient with an INS identifier, ``DOCS`` PDSm-like
DocumentReferences with a contained author, ``IMMS`` Immunizations; deterministic from ``--seed``) as ndjson
under ``--data-dir`` (default ``/work/benchdata/search-<size>-s<seed>/``), bulk-loads them
(``fhir_server.loader.bulk_load``: store batches + ES bulk requests, worker processes) into a SQLite store kept
in that directory and indices under the prefix ``bench<size>-`` (``bench100k-``, ``bench1m-``) of ``--es-url``,
and measures a same-run HTTP ingest baseline (``--http-sample`` PUTs into a scratch server) to print the bulk
rate as a ratio to it. ``--reuse`` skips generation and loading when the store and the index of that size are
complete (``loaded.json`` + ES counts), so a measurement can be repeated without reloading.

Then a server runs in-process on that store and, for each concurrency level, each workload runs for
``--seconds`` with clients picking random patients:

* ``iti67``      DocumentReference?patient=Patient/X&status=current&type=loinc|T&date=ge2015
* ``iti67-ins``  DocumentReference?patient.identifier=INS|N&status=current           (chain)
* ``pat-name``   Patient?family=<prefix>&birthdate=<year>
* ``pat-ins``    Patient?identifier=INS|N
* ``imm``        Immunization?patient=Patient/X&date=ge2018
* ``include``    DocumentReference?patient=Patient/X&_include=DocumentReference:subject
* ``author``     DocumentReference?patient=Patient/X&author.family=<name>          (contained chain)

Then ``deep paging``: follows ``next`` links of ``DocumentReference?status=current&_count=500`` past
10,000 results and reports the page latency of the first pages vs the deepest ones.

Printed per workload and level: requests/s, the ratio to the first level in this run, p50/p95/p99 in ms and
the 1-minute load average (the machine may be shared: read latencies with it).

    .venv/bin/python bench/search.py --es-url http://127.0.0.1:9200 --seconds 5       # quick: 20,000 resources
    .venv/bin/python bench/search.py --es-url http://127.0.0.1:9200 --resources 100000
    # 1M: load once (~40 min on 2 busy cores, ~15-20 min idle; --no-validate: generated data is trusted),
    # then measure as often as wanted (~3 min: 7 workloads x 2 levels x 10 s + deep paging):
    .venv/bin/python bench/search.py --es-url http://127.0.0.1:9200 --resources 1000000 --no-validate --reuse
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import (
    LoadProcess,
    LoadResult,
    Op,
    add_provisioning_args,
    count_types,
    log,
    parse_levels,
    print_errors,
    print_table,
    put_ops,
    run_token,
    wait_searchable,
)

TYPES = ("Patient", "DocumentReference", "Immunization")  # load order: patients first
DEFAULT_DATA_DIR = Path("/work/benchdata")

INS = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"
DOCS = 4
IMMS = 2
LOAD_CONCURRENCY = 8
FAMILIES = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
            "Simon", "Laurent", "Lefèvre", "Michel", "García", "David", "Bertrand", "Roux", "Vincent", "Fournier",
            "Morel", "Girard", "André", "Lefebvre", "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Martínez"]
GIVENS = ["Hélène", "Zoé", "Bénédicte", "Jean", "Léa", "Chloé", "Noé", "Inès", "Maël", "Gaëlle", "Paul", "Lucas",
          "Émile", "Agnès", "Jérôme", "Aurélie", "Théo", "Camille", "Loïc", "Anaïs"]
DOC_TYPES = ["11488-4", "34133-9", "11490-0", "15507-7", "18748-4", "60591-5", "87273-9", "11369-6"]
VACCINES = ["FLU", "COVID", "DTP", "ROR", "HPV", "HEPB"]
SETTINGS_ = ["ONC", "CARD", "GEN", "PED"]
PER_PATIENT = 1 + DOCS + IMMS


def patient_resources(rng: random.Random, i: int, token: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One patient's resources (Patient, DOCS DocumentReferences, IMMS Immunizations) and its query keys."""
    sfx = f"-{token}" if token else ""
    pid = f"p{i}{sfx}"
    family, given = rng.choice(FAMILIES), rng.choice(GIVENS)
    year = rng.randint(1930, 2020)
    ins = f"{rng.randint(1, 2)}{year % 100:02d}{rng.randint(1, 12):02d}{i:010d}"
    out: list[dict[str, Any]] = [{
        "resourceType": "Patient", "id": pid, "gender": rng.choice(["male", "female"]),
        "identifier": [{"system": INS, "value": ins}],
        "name": [{"family": family, "given": [given]}], "birthDate": f"{year}-{rng.randint(1, 12):02d}-15",
        "address": [{"city": rng.choice(["Paris", "Lyon", "Orléans", "Nantes"]), "postalCode": "75001"}]}]
    author = rng.choice(FAMILIES)
    for d in range(DOCS):
        day = f"{rng.randint(2010, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        out.append({
            "resourceType": "DocumentReference", "id": f"d{i}x{d}{sfx}",
            "status": "current" if rng.random() < 0.9 else "superseded",
            "subject": {"reference": f"Patient/{pid}"}, "date": f"{day}T10:00:00+01:00",
            "contained": [{"resourceType": "Practitioner", "id": "a",
                           "name": [{"family": author, "given": [rng.choice(GIVENS)]}]}],
            "author": [{"reference": "#a"}],
            "type": {"coding": [{"system": LOINC, "code": rng.choice(DOC_TYPES)}]},
            "category": [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "REPORTS"}]}],
            "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                           "code": "N"}]}],
            "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/b{i}x{d}",
                                        "creation": day, "title": "Compte rendu"}}],
            "context": {"period": {"start": day},
                        "practiceSetting": {"coding": [{"system": "urn:s", "code": rng.choice(SETTINGS_)}]}}})
    for m in range(IMMS):
        out.append({
            "resourceType": "Immunization", "id": f"i{i}x{m}{sfx}", "status": "completed",
            "patient": {"reference": f"Patient/{pid}"},
            "vaccineCode": {"coding": [{"system": "urn:v", "code": rng.choice(VACCINES)}]},
            "occurrenceDateTime": f"{rng.randint(2005, 2025)}-{rng.randint(1, 12):02d}-01"})
    return out, {"id": pid, "ins": ins, "family": family, "year": str(year), "author": author}


def generate(n_resources: int, seed: int, token: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Resources (patients first) and per-patient query keys, in memory (small sizes, the HTTP sample)."""
    rng = random.Random(seed)
    patients, others, keys = [], [], []
    for i in range(max(1, n_resources // PER_PATIENT)):
        resources, key = patient_resources(rng, i, token)
        patients.append(resources[0])
        others += resources[1:]
        keys.append(key)
    return patients + others, keys


def write_dataset(directory: Path, n_resources: int, seed: int) -> list[dict[str, str]]:
    """Stream the data set to ``<directory>/<Type>.ndjson`` (constant memory) and its keys to ``keys.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    keys: list[dict[str, str]] = []
    files = {t: (directory / f"{t}.ndjson.tmp").open("wb") for t in TYPES}
    try:
        for i in range(max(1, n_resources // PER_PATIENT)):
            resources, key = patient_resources(rng, i, "")
            for r in resources:
                files[r["resourceType"]].write(orjson.dumps(r) + b"\n")
            keys.append(key)
    finally:
        for f in files.values():
            f.close()
    for t in TYPES:
        (directory / f"{t}.ndjson.tmp").replace(directory / f"{t}.ndjson")
    (directory / "keys.json").write_bytes(orjson.dumps(keys))
    return keys


def workloads(keys: list[dict[str, str]], seed: int, n: int = 2000) -> dict[str, list[Op]]:
    rng = random.Random(seed + 1)
    picks = [rng.choice(keys) for _ in range(n)]

    def op(path: str, **params: str) -> Op:
        return Op("GET", f"{path}?{urlencode(params)}")

    return {
        "iti67": [op("DocumentReference", patient=f"Patient/{k['id']}", status="current",
                     type=f"{LOINC}|{rng.choice(DOC_TYPES)}", date="ge2015") for k in picks],
        "iti67-ins": [op("DocumentReference", **{"patient.identifier": f"{INS}|{k['ins']}"}, status="current")
                      for k in picks],
        "pat-name": [op("Patient", family=k["family"][:4], birthdate=k["year"]) for k in picks],
        "pat-ins": [op("Patient", identifier=f"{INS}|{k['ins']}") for k in picks],
        "imm": [op("Immunization", patient=f"Patient/{k['id']}", date="ge2018") for k in picks],
        "include": [op("DocumentReference", patient=f"Patient/{k['id']}", _include="DocumentReference:subject")
                    for k in picks],
        "author": [op("DocumentReference", patient=f"Patient/{k['id']}", **{"author.family": k["author"]})
                   for k in picks],
    }


def deep_paging(base: str, max_pages: int = 60) -> list[float]:
    """Latency (s) of each page of a 500-per-page walk, bounded in pages."""
    out: list[float] = []
    with httpx.Client(timeout=120) as client:
        url: str | None = f"{base}/DocumentReference?status=current&_count=500&_total=none"
        for _ in range(max_pages):
            if url is None:
                break
            t0 = time.perf_counter()
            resp = client.get(url)
            out.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                log(f"deep paging stopped: {resp.status_code} {resp.text[:300]}")
                break
            url = next((link["url"] for link in resp.json()["link"] if link["relation"] == "next"), None)
    return out


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _loadavg() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Dataset:
    """A generated data set loaded into its own store and index prefix, kept between runs."""

    directory: Path
    es_url: str
    prefix: str

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.directory / 'fhir.sqlite3'}"

    @property
    def marker(self) -> Path:
        return self.directory / "loaded.json"

    def settings(self, **extra: Any) -> Any:
        from fhir_server.settings import Settings

        return Settings(db_url=self.db_url, es_url=self.es_url, es_index_prefix=self.prefix, **extra)

    def loaded(self) -> dict[str, Any] | None:
        """The marker of a complete load whose indices still hold every resource, else None."""
        if not self.marker.exists() or not (self.directory / "fhir.sqlite3").exists():
            return None
        info: dict[str, Any] = orjson.loads(self.marker.read_bytes())
        with httpx.Client(timeout=60) as es:
            for type_, n in info["counts"].items():
                resp = es.get(f"{self.es_url}/{self.prefix}{type_.lower()}/_count")
                if resp.status_code != 200 or resp.json().get("count") != n:
                    log(f"{self.prefix}{type_.lower()}: {resp.text[:200]} (expected {n}): reloading")
                    return None
        stale = self.stale_types()
        if stale:  # the server would rebuild them one resource at a time at start: a bulk reload is faster
            log(f"{self.prefix}*: {stale} indexed with another search parameter set: reloading")
            return None
        return info

    def stale_types(self) -> list[str]:
        from elasticsearch import Elasticsearch

        from fhir_server.index.indices import IndexManager
        from search.registry import SearchParameterRegistry

        es = Elasticsearch(self.es_url)
        try:
            return IndexManager(es, SearchParameterRegistry.load_default(), self.settings()).stale_types()
        finally:
            es.close()

    def load(self, n_resources: int, seed: int, *, validate: bool, workers: int | None) -> dict[str, Any]:
        """Generate the files if missing, then bulk-load them into a fresh store and fresh indices."""
        from fhir_server.context import ServerContext
        from fhir_server.loader import BulkStats, bulk_load

        if not (self.directory / "keys.json").exists():
            t0 = time.perf_counter()
            write_dataset(self.directory, n_resources, seed)
            log(f"generated {self.directory} in {time.perf_counter() - t0:.0f} s")
        self.marker.unlink(missing_ok=True)
        for f in self.directory.glob("fhir.sqlite3*"):
            f.unlink()
        with httpx.Client(timeout=120) as es:
            es.delete(f"{self.es_url}/{self.prefix}*", params={"expand_wildcards": "all"})
        settings = self.settings()
        ctx = ServerContext.build(settings, self.es_url, start_indexer=False)
        stats = BulkStats()
        done = 0
        load_before = _loadavg()
        try:
            def progress(n: int) -> None:
                nonlocal done
                step = 50_000
                if (done + n) // step > done // step:
                    log(f"  {done + n} resources ({(done + n) / (time.perf_counter() - t0):.0f}/s, {_loadavg()})")
                done += n

            t0 = time.perf_counter()
            report = bulk_load(ctx, [self.directory / f"{t}.ndjson" for t in TYPES], validate=validate,
                               workers=workers, on_progress=progress, stats=stats)
        finally:
            ctx.close()
        if report.rejected or stats.es_error:
            raise SystemExit(f"bulk load: {len(report.rejected)} rejected (first: {report.rejected[:3]}), "
                             f"ES error {stats.es_error}")
        counts = {t: 0 for t in TYPES}
        for line_file in TYPES:
            with (self.directory / f"{line_file}.ndjson").open("rb") as fh:
                counts[line_file] = sum(1 for _ in fh)
        info = {"counts": counts, "loaded": report.loaded, "seconds": stats.seconds, "validate": validate,
                "rate": report.loaded / stats.seconds, "load_before": load_before, "load_after": _loadavg(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.marker.write_bytes(orjson.dumps(info))
        return info


def http_ingest_rate(es_url: str, n: int, seed: int) -> float:
    """Resources/s of PUTs over HTTP (LOAD_CONCURRENCY clients) into a scratch server, until searchable."""
    from fhir_devtools import es_node
    from fhir_server.settings import Settings
    from tests.harness import start_server

    token = run_token()
    resources, _ = generate(n, seed + 7, token)
    counts = count_types(resources)
    with tempfile.TemporaryDirectory(prefix="fhir-bench-ingest-") as tmp:
        srv = start_server(Settings(db_url=f"sqlite:///{tmp}/fhir.sqlite3", es_url=es_url,
                                    es_index_prefix=f"benchtmp{token}-", port=es_node.free_port()))
        try:
            with LoadProcess() as load:
                t0 = time.perf_counter()
                res = load.drive(srv.base_url, put_ops(resources), LOAD_CONCURRENCY, seconds=600,
                                 max_ops=len(resources))
                print_errors("HTTP ingest", res)
                with httpx.Client(base_url=srv.base_url + "/", timeout=600) as client:
                    wait_searchable(client, counts, counts, timeout=600)
                return res.ok / (time.perf_counter() - t0)
        finally:
            srv.stop()  # also deletes the scratch indices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--resources", type=int, default=20_000,
                        help="resources to generate (default 20000; the reference runs use 100000 and 1000000)")
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 16], help="client counts (default 1,16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each workload and level")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"where data sets, their stores and load markers live (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the loaded store + index of this size when complete (else load it)")
    parser.add_argument("--load-only", action="store_true", help="load the data set, measure nothing")
    parser.add_argument("--no-validate", action="store_true",
                        help="bulk load without profile validation (the data is generated, hence trusted)")
    parser.add_argument("--workers", type=int, default=None, help="bulk load worker processes (default: CPUs)")
    parser.add_argument("--http-sample", type=int, default=1400,
                        help="resources PUT over HTTP into a scratch server for the ingest baseline (0: skip)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.resources <= 2_000_000:
        parser.error("--seconds in (0, 600], --resources in (0, 2000000]")
    if args.url:
        parser.error("search.py runs its own server on its persisted data set; --url is not supported")
    es_url = args.es_url or os.environ.get("FHIR_ES_URL")
    if not es_url:
        parser.error("--es-url (or FHIR_ES_URL) is needed: the data set persists in that cluster")

    label = _label(args.resources)
    ds = Dataset(args.data_dir / f"search-{label}-s{args.seed}", es_url.rstrip("/"), f"bench{label}-")
    info = ds.loaded() if args.reuse else None
    reused = info is not None
    if info is None:
        log(f"bulk-loading {args.resources} resources into {ds.directory} and {ds.prefix}* ...")
        info = ds.load(args.resources, args.seed, validate=not args.no_validate, workers=args.workers)
    print(f"data set {ds.directory.name}: {info['counts']} in {ds.prefix}*; bulk load "
          f"{'(reused, loaded ' + info['when'] + ') ' if reused else ''}{info['loaded']} resources in "
          f"{info['seconds']:.0f} s = {info['rate']:.0f}/s to searchable, validation "
          f"{'on' if info['validate'] else 'off'} ({info['load_before']} -> {info['load_after']})")
    if not reused and args.http_sample:
        rate = http_ingest_rate(es_url, args.http_sample, args.seed)
        print(f"HTTP ingest (PUT, {LOAD_CONCURRENCY} clients, {args.http_sample} resources, to searchable): "
              f"{rate:.0f}/s ({_loadavg()}); bulk load = {info['rate'] / rate:.1f}x HTTP")
    if args.load_only:
        return 0

    keys = orjson.loads((ds.directory / "keys.json").read_bytes())
    from fhir_devtools import es_node
    from tests.harness import start_server

    srv = start_server(ds.settings(port=es_node.free_port()))
    try:
        base = srv.base_url
        with LoadProcess() as load:
            rows: list[list[object]] = []
            for name, ops in workloads(keys, args.seed).items():
                base_rate: float | None = None
                for level in args.concurrency:
                    res: LoadResult = load.drive(base, ops, level, seconds=args.seconds, repeat=True, seed=level)
                    print_errors(f"{name} x{level}", res)
                    base_rate = base_rate or res.rate or None
                    ratio = f"{res.rate / base_rate:.2f}" if base_rate else "-"
                    load1 = f"{os.getloadavg()[0]:.1f}"
                    rows.append([name, level, res.ok, res.errors, f"{res.rate:.0f}", ratio,
                                 f"{res.percentile_ms(.5):.1f}", f"{res.percentile_ms(.95):.1f}",
                                 f"{res.percentile_ms(.99):.1f}", load1])
                    log(f"{name} x{level}: {res.rate:.0f}/s p50 {res.percentile_ms(.5):.1f} ms ({_loadavg()})")
            print(f"search mix at {sum(info['counts'].values())} resources")
            print_table(["workload", "clients", "ok", "errors", "req/s", "x level 1", "p50 ms", "p95 ms", "p99 ms",
                         "load 1m"], rows)

        pages = deep_paging(base)
        if pages:
            deep = pages[20:] or pages[-1:]
            first = sorted(pages[:5])[len(pages[:5]) // 2]
            deep_m = sorted(deep)[len(deep) // 2]
            print(f"\ndeep paging (500/page): {len(pages)} pages = {len(pages) * 500} results; first 5 pages "
                  f"median {1000 * first:.1f} ms, pages past 10,000 median {1000 * deep_m:.1f} ms "
                  f"(ratio {deep_m / first:.2f}; {_loadavg()})")
    finally:  # not srv.stop(): that deletes the indices, and this data set is kept
        srv.uvicorn_server.should_exit = True
        srv.thread.join(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
