"""Where the server-side time of a search goes, phase by phase, on a data set loaded by ``bench/search.py``.

In-process (no HTTP): for each query of the mix, ``--n`` searches of random patients through
``fhir_server.interactions.search.search``, each phase timed by wrapping the function that does it:
the read-your-writes wait (outbox look-up), compile (parameters -> ES query, chains' inner ES searches
included, shown apart), the main ES search, hydration from the store (``read_many``), ``_include``, and the
serialisation of the Bundle (orjson). Printed in ms per search and as shares of the total.

    .venv/bin/python bench/search_phases.py --es-url http://127.0.0.1:9200 --resources 100000
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from bench._common import print_table
from bench.search import DEFAULT_DATA_DIR, INS, LOINC, Dataset, _label, _loadavg

TIMES: dict[str, float] = collections.defaultdict(float)


def _timed(obj: Any, name: str, label: str) -> None:
    fn = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - t0

    setattr(obj, name, wrapper)


QUERIES: dict[str, Callable[[dict[str, str]], tuple[str, list[tuple[str, str]]]]] = {
    "iti67": lambda k: ("DocumentReference", [("patient", f"Patient/{k['id']}"), ("status", "current"),
                                              ("type", f"{LOINC}|11488-4"), ("date", "ge2015")]),
    "iti67-ins": lambda k: ("DocumentReference", [("patient.identifier", f"{INS}|{k['ins']}"), ("status", "current")]),
    "imm": lambda k: ("Immunization", [("patient", f"Patient/{k['id']}"), ("date", "ge2018")]),
    "include": lambda k: ("DocumentReference", [("patient", f"Patient/{k['id']}"),
                                                ("_include", "DocumentReference:subject")]),
    "author": lambda k: ("DocumentReference", [("patient", f"Patient/{k['id']}"), ("author.family", k["author"])]),
}
PHASES = ["wait", "compile", "  chain: refers_to_type", "  chain: matching_ids", "ES search", "store read_many",
          "_include", "serialise"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es-url", default=os.environ.get("FHIR_ES_URL"))
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--n", type=int, default=200, help="searches per query (default 200)")
    args = parser.parse_args(argv)
    if not args.es_url or not 0 < args.n <= 100_000:
        parser.error("--es-url (or FHIR_ES_URL) is needed; --n in 1..100000")
    label = _label(args.resources)
    ds = Dataset(args.data_dir / f"search-{label}-s{args.seed}", args.es_url.rstrip("/"), f"bench{label}-")
    if ds.loaded() is None:
        raise SystemExit(f"{ds.directory} is not loaded: run bench/search.py --resources {args.resources} --load-only")

    from fhir_server.context import ServerContext
    from fhir_server.interactions import search as search_mod
    from fhir_server.interactions import search_exec

    ctx = ServerContext.build(ds.settings(), ds.es_url, start_indexer=False)
    try:
        keys = orjson.loads((ds.directory / "keys.json").read_bytes())
        _timed(ctx.indexer, "wait_until_indexed", "wait")
        _timed(search_mod, "_compile", "compile")
        _timed(search_exec.EsResolver, "refers_to_type", "  chain: refers_to_type")
        _timed(search_exec.EsResolver, "matching_ids", "  chain: matching_ids")
        _timed(search_mod, "_run", "ES search")
        _timed(ctx.store, "read_many", "store read_many")
        _timed(search_mod.includes, "collect", "_include")
        rng = random.Random(args.seed)
        rows: list[list[object]] = []
        for name, query in QUERIES.items():
            for _ in range(20):  # warm caches and connections
                search_mod.search(ctx, *query(rng.choice(keys)))
            TIMES.clear()
            t0 = time.perf_counter()
            for _ in range(args.n):
                result = search_mod.search(ctx, *query(rng.choice(keys)))
                t1 = time.perf_counter()
                orjson.dumps(result.body)
                TIMES["serialise"] += time.perf_counter() - t1
            total = (time.perf_counter() - t0) / args.n * 1000
            rows.append([name, f"{total:.2f}", *(f"{TIMES[p] / args.n * 1000:.2f}" for p in PHASES),
                         f"{os.getloadavg()[0]:.1f}"])
    finally:
        ctx.close()
    print(f"server-side ms per search at {sum(ds.loaded()['counts'].values())} resources ({_loadavg()}); "  # type: ignore[index]
          "compile includes the chain rows")
    print_table(["query", "total", *PHASES, "load 1m"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
