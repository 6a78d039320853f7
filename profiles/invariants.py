"""FHIRPath invariants (ElementDefinition.constraint), compiled once.

The hot datatype invariants (per-1, cpt-2, att-1, qty-3, pat-1) are implemented natively: fhirpathpy costs
~150 µs per evaluation, more than a whole Patient is allowed. The global rules ele-1, ext-1, ref-1, dom-2..dom-6 and
txt-1/txt-2 are enforced by the engine itself while it walks. Everything else runs through fhirpathpy (R4 model),
compiled once per expression; ``hasValue()``, which fhirpathpy lacks, is read as ``exists()`` (the same on JSON
primitives). An expression that fhirpathpy cannot compile or evaluate is skipped, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

# evaluated by the engine during the walk
ENGINE_RULES = frozenset({"ele-1", "ext-1", "ref-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6", "txt-1", "txt-2"})

Check = Callable[[Any, dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Invariant:
    key: str
    severity: str  # error | warning
    human: str
    expression: str
    check: Check | None  # None: enforced elsewhere or not evaluable


def _when(value: str) -> datetime | str:
    if len(value) > 10:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value


def _per1(v: Any, _r: dict[str, Any]) -> bool:
    start, end = v.get("start"), v.get("end")
    if not isinstance(start, str) or not isinstance(end, str):
        return True
    a, b = _when(start), _when(end)
    if isinstance(a, datetime) and isinstance(b, datetime):
        try:
            return a <= b
        except TypeError:
            return True
    n = min(len(start), len(end), 10)
    return start[:n] <= end[:n]


NATIVE: dict[str, Check] = {
    "per-1": _per1,
    "cpt-2": lambda v, _r: "value" not in v or "system" in v,
    "att-1": lambda v, _r: "data" not in v or "contentType" in v,
    "qty-3": lambda v, _r: "code" not in v or "system" in v,
    "pat-1": lambda v, _r: any(k in v for k in ("name", "telecom", "address", "organization")),
}


@cache
def _fhirpath(expression: str) -> Check | None:
    try:
        import fhirpathpy
        from fhirpathpy.models import models

        prepared = expression.replace("hasValue()", "exists()").replace("%ucum", "'http://unitsofmeasure.org'")
        fn = fhirpathpy.compile(prepared, models["r4"])
    except Exception as exc:  # a grammar fhirpathpy lacks
        log.info("invariant not compiled (%s): %s", exc, expression)
        return None

    def check(value: Any, resource: dict[str, Any]) -> bool:
        try:
            result = fn(value, {"resource": resource, "rootResource": resource, "context": value})
        except Exception:  # fhirpathpy gaps (functions, type resolution): not the client's fault
            return True
        return not result or result == [True]

    return check


def compile_invariant(key: str, severity: str, human: str, expression: str) -> Invariant:
    if key in ENGINE_RULES:
        return Invariant(key, severity, human, expression, None)
    return Invariant(key, severity, human, expression, NATIVE.get(key) or _fhirpath(expression))
