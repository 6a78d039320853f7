"""Cost of exact decimals (fhir_server/formats/numbers.py) against plain orjson, on Synthea data.

For each corpus it times ``orjson.loads`` (the baseline of the same run) and ``numbers.loads``
over the same documents, and ``numbers.dumps`` against ``orjson.dumps`` on what was parsed, and
prints the ratios with the share of documents that took the precise route. No server, no ES.

    .venv/bin/python bench/decimals.py [--data ../shared/data/synthea] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_server.formats import numbers

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"


def _corpora(data: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for type_ in ("Patient", "Immunization", "DocumentReference", "Condition"):
        lines: list[bytes] = []
        for f in sorted((data / "10-patients").glob(f"{type_}.*.ndjson")):
            lines += [ln for ln in f.read_bytes().splitlines() if ln.strip()]
        if lines:
            out[f"{type_} (ndjson lines)"] = lines
            out[f"{type_} (pretty-printed)"] = [orjson.dumps(orjson.loads(ln), option=orjson.OPT_INDENT_2)
                                                for ln in lines]
    bundles = sorted((data / "transaction-bundles").glob("*.json"))
    if bundles:
        out["transaction Bundles"] = [b.read_bytes() for b in bundles]
    return out


def _time(fn: Callable[[bytes], Any], docs: list[bytes], seconds: float) -> float:
    """Seconds per pass over ``docs`` (best of the passes done within ``seconds``, at least 3)."""
    best, spent, passes = float("inf"), 0.0, 0
    while passes < 3 or (spent < seconds and passes < 1000):
        t0 = time.perf_counter()
        for d in docs:
            fn(d)
        took = time.perf_counter() - t0
        best, spent, passes = min(best, took), spent + took, passes + 1
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    args = ap.parse_args()
    corpora = _corpora(args.data)
    if not corpora:
        print(f"no Synthea data under {args.data}", file=sys.stderr)
        return 1
    print(f"{'corpus':34} {'docs':>5} {'MB':>6} {'precise':>8} {'loads x':>8} {'dumps x':>8}")
    for name, docs in corpora.items():
        precise = sum(not numbers.compact(d)[0] for d in docs)
        base = _time(orjson.loads, docs, args.seconds)
        exact = _time(numbers.loads, docs, args.seconds)
        parsed_plain = [orjson.loads(d) for d in docs]
        parsed_exact = [numbers.loads(d) for d in docs]
        dump_base = _time(orjson.dumps, parsed_plain, args.seconds)  # type: ignore[arg-type]
        dump_exact = _time(numbers.dumps, parsed_exact, args.seconds)  # type: ignore[arg-type]
        mb = sum(map(len, docs)) / 1e6
        print(f"{name:34} {len(docs):5d} {mb:6.2f} {precise / len(docs):7.0%} {exact / base:8.2f} "
              f"{dump_exact / dump_base:8.2f}")
    print("precise: share of documents on the precise route (not one line orjson writes back byte for byte);")
    print("loads x / dumps x: time of numbers.loads/dumps divided by orjson.loads/dumps on the same documents,")
    print("same run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
