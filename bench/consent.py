"""Consent benchmark: what the per-request opposition look-up costs a professional's read and search.

One in-process server with ``FHIR_AUTH=jwt`` (audit off, to isolate the look-up), a fresh SQLite store and
an index prefix of its own on the given Elasticsearch. It loads ``--patients`` Patients with one
DocumentReference each and ``--consents`` deny Consents naming other practitioners, plus ``--opposing``
naming the measured one. The same requests are then sent in ``--rounds`` rounds, ``system``, ``user`` and
``opposed`` taking turns request by request (``miss`` in a slice of its own after them):

- ``system``: a ``system/*.rs`` token (no look-up: the baseline),
- ``user``: a ``user/*.rs`` token no Consent names (look-up, cache hit: one key read of the Consent marker),
- ``opposed``: a ``user/*.rs`` token ``--opposing`` patients opposed (cache hit + exclusion clause),
- ``miss``: like ``opposed``, but a Consent about someone else is written before each request (the cache entry
  catches up from the new Consent version in the store; a search also waits for that write to be indexed;
  the write itself is not timed).

Printed: requests/s and p50 per token for a read and a search, the ratio of requests/s to ``system`` and the
p50 difference to it, with the load average before and after the measured phase (the client shares the
server's process, so a busy neighbour shows up there: compare ratios of one run, not figures of two).

    .venv/bin/python bench/consent.py --es-url http://127.0.0.1:9200
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from fhir_devtools import es_node
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.settings import Settings
from tests.harness import start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}


def consent(patient: str, practitioner: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active", "scope": SCOPE,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTOUT"}]},
            "provision": {"type": "deny", "actor": [{"role": {"text": "care"},
                                                     "reference": {"reference": f"Practitioner/{practitioner}"}}]}}


def _post(c: httpx.Client, resource: dict[str, Any]) -> str:
    resp = c.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    resp.raise_for_status()
    return str(resp.json()["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es-url", required=True)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--consents", type=int, default=500, help="Consents naming other practitioners")
    parser.add_argument("--opposing", type=int, default=20, help="patients opposing the measured practitioner")
    parser.add_argument("--requests", type=int, default=100, help="per token, workload and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-consent-"))
    issuer = DevIssuer(work / "issuer")
    issuer.ensure_keys()
    settings = Settings(db_url=f"sqlite:///{work / 'fhir.sqlite3'}", es_url=args.es_url,
                        es_index_prefix=f"benchconsent{uuid.uuid4().hex[:6]}-", port=es_node.free_port(),
                        auth="jwt", auth_issuer=issuer.issuer, auth_audience=issuer.audience,
                        auth_jwks_file=issuer.jwks_file, audit="off")
    srv = start_server(settings)
    try:
        def client(token: str) -> httpx.Client:
            return httpx.Client(base_url=srv.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

        admin = client(issuer.mint("admin", "system/*.cruds"))
        patients = [_post(admin, {"resourceType": "Patient", "name": [{"family": f"P{i}"}]})
                    for i in range(args.patients)]
        docs = [_post(admin, {"resourceType": "DocumentReference", "status": "current",
                              "subject": {"reference": f"Patient/{p}"},
                              "content": [{"attachment": {"url": "http://x/d"}}]}) for p in patients]
        for i in range(args.consents):
            _post(admin, consent(patients[i % len(patients)], f"other-{i}"))
        for p in patients[-args.opposing:]:
            _post(admin, consent(p, "measured"))
        tokens = {"system": issuer.mint("svc", "system/*.rs"),
                  "user": issuer.mint("u", "user/*.rs", fhir_user="Practitioner/free"),
                  "opposed": issuer.mint("m", "user/*.rs", fhir_user="Practitioner/measured")}
        tokens["miss"] = tokens["opposed"]
        workloads = {"read": lambda i: f"/DocumentReference/{docs[i % (len(docs) - args.opposing)]}",
                     "search": lambda i: "/DocumentReference?_count=10&status=current"}
        times: dict[tuple[str, str], list[float]] = {}
        clients = {name: client(token) for name, token in tokens.items()}
        steady = [n for n in tokens if n != "miss"]

        def timed(name: str, wl: str, url: str) -> None:
            t0 = time.perf_counter()
            resp = clients[name].get(url)
            times.setdefault((name, wl), []).append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.text

        load_before = os.getloadavg()
        for wl, path in workloads.items():
            for round_ in range(args.rounds):
                order = steady[round_ % len(steady):] + steady[:round_ % len(steady)]
                for i in range(args.requests):  # request by request in turns: a neighbour's burst hits all alike
                    for name in order:
                        timed(name, wl, path(i))
                for i in range(args.requests):  # its own slice: its writes would make the others catch up
                    _post(admin, consent(patients[i % len(patients)], f"churn-{uuid.uuid4().hex}"))
                    timed("miss", wl, path(i))
                admin.get("/Consent", params={"_summary": "count"})  # barrier: no indexing left for the next slice
        for c in clients.values():
            c.close()
        load_after = os.getloadavg()
        print(f"{args.patients} patients, {args.consents + args.opposing} Consents, "
              f"{args.opposing} opposing the measured practitioner; {args.rounds}x{args.requests} requests each")
        print("load average before: " + " ".join(f"{x:.2f}" for x in load_before)
              + ", after: " + " ".join(f"{x:.2f}" for x in load_after))
        print(f"{'token':<9} {'workload':<8} {'req/s':>8} {'p50 ms':>8} {'vs system':>10} {'p50 +ms':>8}")
        for wl in workloads:
            base = len(times[("system", wl)]) / sum(times[("system", wl)])
            base_p50 = statistics.median(times[("system", wl)])
            for name in tokens:
                t = times[(name, wl)]
                rate, p50 = len(t) / sum(t), statistics.median(t)
                print(f"{name:<9} {wl:<8} {rate:8.1f} {p50 * 1000:8.2f} {rate / base:10.2f} "
                      f"{(p50 - base_p50) * 1000:+8.2f}")
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
