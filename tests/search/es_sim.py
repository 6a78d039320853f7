"""A tiny in-memory evaluator of the ES query DSL subset that ``search.query`` emits.

It lets unit tests check end-to-end semantics (extracted document + compiled query -> match?)
without an Elasticsearch node.  It follows the ES rules that matter here: keyword fields
match on any of their values; ``long_range`` values (dates in microseconds) are stored as
inclusive bounds (``lt`` = bound - 1) and range queries honour ``relation``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INF = float("inf")


def _ms(iso: str) -> int:
    dt = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _values(doc: dict[str, Any], path: str) -> list[Any]:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    return node if isinstance(node, list) else [node]


def _bounds(spec: dict[str, Any]) -> tuple[float, float]:
    lo = spec.get("gte", -_INF)
    hi = spec["lt"] - 1 if "lt" in spec else _INF
    return lo, hi


def _wildcard(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)


def matches(doc: dict[str, Any], q: dict[str, Any]) -> bool:
    ((kind, body),) = q.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        must = body.get("filter", []) + body.get("must", [])
        should = body.get("should", [])
        msm = body.get("minimum_should_match", 0 if must else 1 if should else 0)
        return (
            all(matches(doc, c) for c in must)
            and sum(matches(doc, c) for c in should) >= msm
            and not any(matches(doc, c) for c in body.get("must_not", []))
        )
    ((field, arg),) = body.items()
    vals = _values(doc, field)
    if kind == "term":
        return arg in vals
    if kind == "terms":
        return any(v in arg for v in vals)
    if kind == "prefix":
        p = arg["value"] if isinstance(arg, dict) else arg
        return any(isinstance(v, str) and v.startswith(p) for v in vals)
    if kind == "wildcard":
        rx = _wildcard(arg["value"])
        return any(isinstance(v, str) and rx.fullmatch(v) for v in vals)
    if kind == "regexp":  # the subset emitted (groups, |, .*, [^...], escapes) reads the same in Python
        rx = re.compile(arg["value"], re.S)
        return any(isinstance(v, str) and rx.fullmatch(v) for v in vals)
    if kind == "range":
        qlo, qhi = _bounds(arg)
        relation = arg.get("relation", "intersects")
        for v in vals:
            lo, hi = _bounds(v) if isinstance(v, dict) else (_ms(v), _ms(v))
            if relation == "within" and qlo <= lo and hi <= qhi:
                return True
            if relation == "contains" and lo <= qlo and qhi <= hi:
                return True
            if relation == "intersects" and lo <= qhi and hi >= qlo:
                return True
        return False
    raise AssertionError(f"query kind not simulated: {kind}")
