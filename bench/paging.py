"""Search paging under a flood of first pages: points-in-time (PITs) held open and Elasticsearch heap.

Replays the issue-11 flood (``GET /Patient?_count=1`` in a loop, every answer carrying a ``next`` link)
against an in-process server for ``--seconds`` per sort, with ``--clients`` threads, following the ``next``
link of a ``--follow`` share of the answers. Every second it prints: requests served, the PITs of the server's
pool (``ctx.pits.open_count()``, opened and refused so far), the search contexts open on this server's indices
(``<prefix>*/_stats/search``: its PITs as Elasticsearch counts them, plus the searches in flight at that
instant), on the whole node (shared: other users' too) and the node's heap use. Figures only: no assertion, no
timing claim (client threads share the GIL with the server; read requests/s as "how fast the flood went
here").

    .venv/bin/python bench/paging.py --es-url http://127.0.0.1:9200 --seconds 20
    .venv/bin/python bench/paging.py --es-url http://127.0.0.1:9200 --sorts=,-family --pit-max 50
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import FHIR_JSON, Environment, log, print_table


def load(client: httpx.Client, n: int) -> None:
    """``n`` patients in batch Bundles of 100, family names with ties (for a sort that is not the id)."""
    for start in range(0, n, 100):
        entries = [{"request": {"method": "POST", "url": "Patient"},
                    "resource": {"resourceType": "Patient", "name": [{"family": f"Flood{i % 26:02d}"}]}}
                   for i in range(start, min(n, start + 100))]
        resp = client.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": "batch", "entry": entries})
        resp.raise_for_status()


def node_figures(es: Any, prefix: str) -> tuple[int, int, int]:
    """(contexts on this server's indices, contexts on the node, heap used %)."""
    mine = es.indices.stats(index=f"{prefix}*", metric="search").body["indices"]
    nodes = es.nodes.stats(metric="indices,jvm", index_metric="search").body["nodes"].values()
    return (sum(int(ix["total"]["search"]["open_contexts"]) for ix in mine.values()),
            sum(int(n["indices"]["search"]["open_contexts"]) for n in nodes),
            max(int(n["jvm"]["mem"]["heap_used_percent"]) for n in nodes))


def flood(base_url: str, sort: str, seconds: float, clients: int, follow: float, served: list[int]) -> None:
    lock = threading.Lock()
    params = {"_count": "1", **({"_sort": sort} if sort else {})}
    stop = time.monotonic() + seconds

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base_url, timeout=60) as c:
            while time.monotonic() < stop:
                page = c.get("/Patient", params=params).json()
                nxt = next((lk["url"] for lk in page.get("link", []) if lk["relation"] == "next"), None)
                followed = bool(nxt) and rng.random() < follow
                if followed:
                    c.get(str(nxt))
                with lock:
                    served[0] += 1 + followed

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--es-url", help="an Elasticsearch to use (default: start a managed node)")
    ap.add_argument("--seconds", type=float, default=10.0, help="flood duration per sort")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--follow", type=float, default=0.1, help="share of first pages whose next link is followed")
    ap.add_argument("--sorts", default=",-family", help="comma-separated _sort values ('' = the default, id)")
    ap.add_argument("--pit-max", type=int, default=None, help="FHIR_SEARCH_PIT_MAX of the server")
    ap.add_argument("--pit-per-client", type=int, default=None, help="FHIR_SEARCH_PIT_MAX_PER_CLIENT")
    args = ap.parse_args(argv)
    args.url = args.db_url = None

    from fhir_devtools import es_node
    from fhir_server.settings import Settings
    from tests.harness import start_server

    overrides: dict[str, Any] = {}
    if args.pit_max is not None:
        overrides["search_pit_max"] = args.pit_max
    if args.pit_per_client is not None:
        overrides["search_pit_max_per_client"] = args.pit_per_client
    with Environment(args) as env:
        workdir = Path(tempfile.mkdtemp(prefix="fhir-bench-paging-"))
        settings = Settings(db_url=f"sqlite:///{workdir / 'fhir.sqlite3'}", es_url=env.es_url,
                            es_index_prefix=f"benchpg{uuid.uuid4().hex[:8]}-", host="127.0.0.1",
                            port=es_node.free_port(), **overrides)
        srv = start_server(settings)
        try:
            with httpx.Client(base_url=srv.base_url, timeout=120) as c:
                load(c, args.patients)
            pits, es = srv.ctx.pits, srv.ctx.es
            log(f"{args.patients} patients loaded; caps: {pits.limit} PITs, {pits.per_client} per client, "
                f"keep-alive {pits.keep_alive}")
            for sort in args.sorts.split(","):
                log(f"flood: GET /Patient?_count=1{'&_sort=' + sort if sort else ''} for {args.seconds:.0f} s, "
                    f"{args.clients} clients, following {args.follow:.0%} of the next links")
                served = [0]
                t = threading.Thread(target=flood, args=(srv.base_url, sort, args.seconds, args.clients,
                                                         args.follow, served))
                t0 = time.monotonic()
                t.start()
                rows: list[list[object]] = []
                while t.is_alive():
                    t.join(timeout=1.0)
                    mine, node, heap = node_figures(es, settings.es_index_prefix)
                    rows.append([f"{time.monotonic() - t0:.0f}", served[0], pits.open_count(), pits.opened,
                                 pits.refused, mine, node, f"{heap}%"])
                print(f"\n_sort={sort or '(id)'}")
                print_table(["s", "requests", "pool open", "opened", "refused", "ES ctx (server)",
                             "ES ctx (node)", "heap"], rows)
                pits.close_all()
        finally:
            srv.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
