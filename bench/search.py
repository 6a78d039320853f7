"""Search benchmark: generated French-style patients with documents and vaccinations, then a realistic mix.

Generates ``--resources`` resources (per patient: 1 Patient, ``DOCS`` DocumentReferences with a contained
author, ``IMMS`` Immunizations; deterministic from ``--seed``), loads them through the server's write path
(PUT at their ids: validation -> store -> outbox -> indexer), then for each concurrency level runs each
workload for ``--seconds`` with clients picking random patients:

* ``iti67``      DocumentReference?patient=Patient/X&status=current&type=loinc|T&date=ge2015
* ``iti67-ins``  DocumentReference?patient.identifier=INS|N&status=current           (chain)
* ``pat-name``   Patient?family=<prefix>&birthdate=<year>
* ``pat-ins``    Patient?identifier=INS|N
* ``imm``        Immunization?patient=Patient/X&date=ge2018
* ``include``    DocumentReference?patient=Patient/X&_include=DocumentReference:subject
* ``author``     DocumentReference?patient=Patient/X&author.family=<name>          (contained chain)

Then ``deep paging``: follows ``next`` links of ``DocumentReference?status=current&_count=500`` past
10,000 results and reports the page latency of the first pages vs the deepest ones.

Printed per workload and level: requests/s, the ratio to the first level in this run, p50/p95/p99 in ms.
Run it at two sizes (``--resources 100000`` then ``1000000``) to see how latency grows with the database.

    .venv/bin/python bench/search.py --seconds 5                          # quick: 20,000 resources (make bench)
    .venv/bin/python bench/search.py --resources 100000                   # the reference run (~25 min load here)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import (
    Environment,
    LoadProcess,
    LoadResult,
    Op,
    add_provisioning_args,
    log,
    parse_levels,
    print_errors,
    print_table,
    put_ops,
    run_token,
    wait_searchable,
)

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


def generate(n_resources: int, seed: int, token: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Resources (patients first, so references resolve) and per-patient query keys."""
    rng = random.Random(seed)
    per_patient = 1 + DOCS + IMMS
    patients, others, keys = [], [], []
    for i in range(max(1, n_resources // per_patient)):
        pid = f"p{i}-{token}"
        family, given = rng.choice(FAMILIES), rng.choice(GIVENS)
        year = rng.randint(1930, 2020)
        ins = f"{rng.randint(1, 2)}{year % 100:02d}{rng.randint(1, 12):02d}{i:010d}"
        patients.append({
            "resourceType": "Patient", "id": pid, "gender": rng.choice(["male", "female"]),
            "identifier": [{"system": INS, "value": ins}],
            "name": [{"family": family, "given": [given]}], "birthDate": f"{year}-{rng.randint(1, 12):02d}-15",
            "address": [{"city": rng.choice(["Paris", "Lyon", "Orléans", "Nantes"]), "postalCode": "75001"}]})
        author = rng.choice(FAMILIES)
        for d in range(DOCS):
            day = f"{rng.randint(2010, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            others.append({
                "resourceType": "DocumentReference", "id": f"d{i}x{d}-{token}",
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
            others.append({
                "resourceType": "Immunization", "id": f"i{i}x{m}-{token}", "status": "completed",
                "patient": {"reference": f"Patient/{pid}"},
                "vaccineCode": {"coding": [{"system": "urn:v", "code": rng.choice(VACCINES)}]},
                "occurrenceDateTime": f"{rng.randint(2005, 2025)}-{rng.randint(1, 12):02d}-01"})
        keys.append({"id": pid, "ins": ins, "family": family, "year": str(year), "author": author})
    return patients + others, keys


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--resources", type=int, default=20_000,
                        help="resources to generate (default 20000, ~3 min of loading; the reference runs use "
                             "100000 and the issue's 1000000)")
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 16], help="client counts (default 1,16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each workload and level")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.resources <= 2_000_000:
        parser.error("--seconds in (0, 600], --resources in (0, 2000000]")

    token = run_token()
    resources, keys = generate(args.resources, args.seed, token)
    counts = {t: sum(r["resourceType"] == t for r in resources) for t in ("Patient", "DocumentReference",
                                                                          "Immunization")}
    log(f"generated {len(resources)} resources: {counts}")
    with Environment(args) as env, env.server("search") as base, LoadProcess() as load:
        t0 = time.perf_counter()
        loaded = load.drive(base, put_ops(resources), LOAD_CONCURRENCY, seconds=6 * 3600,
                            max_ops=len(resources))
        print_errors("load", loaded)
        with httpx.Client(base_url=base.rstrip("/") + "/", timeout=600) as client:
            wait_searchable(client, counts, counts if env.managed else None, timeout=3600)
        load_s = time.perf_counter() - t0
        print(f"\nloaded {loaded.ok} resources in {load_s:.0f} s ({loaded.ok / load_s:.0f}/s, "
              f"{LOAD_CONCURRENCY} clients, searchable at the end)\n")

        rows: list[list[object]] = []
        for name, ops in workloads(keys, args.seed).items():
            base_rate: float | None = None
            for level in args.concurrency:
                res: LoadResult = load.drive(base, ops, level, seconds=args.seconds, repeat=True, seed=level)
                print_errors(f"{name} x{level}", res)
                base_rate = base_rate or res.rate or None
                ratio = f"{res.rate / base_rate:.2f}" if base_rate else "-"
                rows.append([name, level, res.ok, res.errors, f"{res.rate:.0f}", ratio, f"{res.percentile_ms(.5):.1f}",
                             f"{res.percentile_ms(.95):.1f}", f"{res.percentile_ms(.99):.1f}"])
                log(f"{name} x{level}: {res.rate:.0f}/s p50 {res.percentile_ms(.5):.1f} ms")
        print(f"search mix at {len(resources)} resources")
        print_table(["workload", "clients", "ok", "errors", "req/s", "x level 1", "p50 ms", "p95 ms", "p99 ms"], rows)

        pages = deep_paging(base)
        if pages:
            deep = pages[20:] or pages[-1:]
            print(f"\ndeep paging (500/page): {len(pages)} pages = {len(pages) * 500} results; first 5 pages "
                  f"median {1000 * sorted(pages[:5])[len(pages[:5]) // 2]:.1f} ms, pages past 10,000 median "
                  f"{1000 * sorted(deep)[len(deep) // 2]:.1f} ms (ratio "
                  f"{sorted(deep)[len(deep) // 2] / sorted(pages[:5])[len(pages[:5]) // 2]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
