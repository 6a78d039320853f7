"""Patient/[id]/$everything latency for one patient with ~500 resources (figures only, no assertion).

Loads one patient with ``--documents`` DocumentReferences (each with its Binary), ``--immunizations``
Immunizations and a few Lists (batch Bundles), into an in-process server (or ``--url``), then times
``--runs`` sequential requests of: the whole record on one page (``_count`` at the maximum), the same
followed page by page (``_count=50``, every ``next`` link), and a ``start``/``end`` range. Printed: p50 and
p90 per workload, entries per answer.

    .venv/bin/python bench/everything.py --es-url http://127.0.0.1:9200
    .venv/bin/python bench/everything.py --es-url http://127.0.0.1:9200 --documents 300 --immunizations 200
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import FHIR_JSON, Environment, add_provisioning_args, log, print_table


def _batch(client: httpx.Client, resources: list[dict[str, Any]]) -> list[str]:
    """POST ``resources`` in batches of 100; their ids."""
    ids: list[str] = []
    for start in range(0, len(resources), 100):
        entries = [{"request": {"method": "POST", "url": r["resourceType"]}, "resource": r}
                   for r in resources[start:start + 100]]
        resp = client.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": "batch", "entry": entries})
        resp.raise_for_status()
        for e in resp.json()["entry"]:
            assert e["response"]["status"].startswith("201"), e
            ids.append(e["response"]["location"].split("/")[1])
    return ids


def load(client: httpx.Client, documents: int, immunizations: int) -> str:
    pid = _batch(client, [{"resourceType": "Patient", "name": [{"family": "Everything"}]}])[0]
    ref = {"reference": f"Patient/{pid}"}
    data = base64.b64encode(b"x" * 2000).decode()
    binaries = _batch(client, [{"resourceType": "Binary", "contentType": "text/plain", "data": data}] * documents)
    _batch(client, [{"resourceType": "DocumentReference", "status": "current", "subject": ref,
                     "date": f"20{10 + i % 15:02d}-01-01T00:00:00Z",
                     "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{b}"}}]}
                    for i, b in enumerate(binaries)])
    _batch(client, [{"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "v"},
                     "patient": ref, "occurrenceDateTime": f"20{10 + i % 15:02d}-06-01"}
                    for i in range(immunizations)])
    _batch(client, [{"resourceType": "List", "status": "current", "mode": "working", "subject": ref}] * 5)
    return pid


def timed(client: httpx.Client, url: str, params: dict[str, str], follow: bool) -> tuple[float, int]:
    """Seconds for the answer (every page when ``follow``) and the entries received."""
    t0 = time.perf_counter()
    resp = client.get(url, params=params)
    resp.raise_for_status()
    body = resp.json()
    entries = len(body.get("entry", []))
    while follow:
        nxt = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        if nxt is None:
            break
        resp = client.get(nxt)
        resp.raise_for_status()
        body = resp.json()
        entries += len(body.get("entry", []))
    return time.perf_counter() - t0, entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_provisioning_args(parser)
    parser.add_argument("--documents", type=int, default=250)
    parser.add_argument("--immunizations", type=int, default=245)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    with Environment(args) as env, env.server("everything") as base, \
            httpx.Client(base_url=base + "/", timeout=120) as client:
        pid = load(client, args.documents, args.immunizations)
        log(f"patient {pid}: {args.documents} documents (+ Binary), {args.immunizations} immunizations, 5 lists")
        url = f"Patient/{pid}/$everything"
        workloads = {"one page (_count=1000)": ({"_count": "1000"}, False),
                     "all pages (_count=50)": ({"_count": "50"}, True),
                     "start/end, one page": ({"_count": "1000", "start": "2015-01-01", "end": "2019-12-31"}, False)}
        rows: list[list[object]] = []
        for label, (params, follow) in workloads.items():
            timed(client, url, params, follow)  # warm-up
            samples = [timed(client, url, params, follow) for _ in range(args.runs)]
            ms = sorted(1000 * s for s, _ in samples)
            rows.append([label, samples[0][1], f"{statistics.median(ms):.1f}",
                         f"{ms[min(len(ms) - 1, int(0.9 * len(ms)))]:.1f}"])
        print_table(["workload", "entries", "p50 ms", "p90 ms"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
