"""FHIRPath invariants (ElementDefinition.constraint), compiled once.

The hot datatype invariants (per-1, cpt-2, att-1, qty-3, pat-1) and the Bundle ones (bdl-*) are implemented
natively: fhirpathpy costs ~150 µs per evaluation, more than a whole Patient is allowed. The global rules ele-1,
ext-1, ref-1, dom-2..dom-6 and txt-1/txt-2 are enforced by the engine itself while it walks. Everything else runs
through :mod:`fhir_common.fhirpath` (fhirpathpy, R4 model, one evaluation at a time: validations of concurrent
requests must not see each other's state), compiled once per expression; ``hasValue()``, which fhirpathpy lacks, is
read as ``exists()`` (the same on JSON primitives). An expression that fhirpathpy cannot compile or evaluate is
skipped, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fhir_common.fhirpath import FHIRPathError, check_compiles, evaluate
from fhir_common.types import Resource

log = logging.getLogger(__name__)

# evaluated by the engine during the walk
ENGINE_RULES = frozenset({"ele-1", "ext-1", "ref-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6", "txt-1", "txt-2"})

Check = Callable[[Any, Resource], bool]


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


def _per1(v: Any, _r: Resource) -> bool:
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


def _entries(bundle: Resource) -> list[dict[str, Any]]:
    entries = bundle.get("entry")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _first_resource_type(bundle: Resource) -> Any:
    entries = _entries(bundle)
    res = entries[0].get("resource") if entries else None
    return res.get("resourceType") if isinstance(res, dict) else None


def _bdl7(b: Resource, _r: Resource) -> bool:
    if b.get("type") == "history":
        return True
    keys = []
    for e in _entries(b):
        if "fullUrl" in e:
            res = e.get("resource")
            meta = res.get("meta") if isinstance(res, dict) else None
            version = meta.get("versionId") if isinstance(meta, dict) else None
            keys.append(f"{e['fullUrl']}{version or ''}")
    return len(keys) == len(set(keys))


NATIVE: dict[str, Check] = {
    # Bundle (bundle.html#invs): large Bundles made fhirpathpy cost ~1 ms per entry
    "bdl-1": lambda b, _r: "total" not in b or b.get("type") in ("searchset", "history"),
    "bdl-2": lambda b, _r: b.get("type") == "searchset" or not any("search" in e for e in _entries(b)),
    "bdl-3": lambda b, _r: all(("request" in e) == (b.get("type") in ("batch", "transaction", "history"))
                               for e in _entries(b)),
    "bdl-4": lambda b, _r: all(("response" in e) == (b.get("type") in ("batch-response", "transaction-response",
                                                                        "history")) for e in _entries(b)),
    "bdl-5": lambda e, _r: "resource" in e or "request" in e or "response" in e,
    "bdl-7": _bdl7,
    "bdl-8": lambda e, _r: not (isinstance(e.get("fullUrl"), str) and "/_history/" in e["fullUrl"]),
    "bdl-9": lambda b, _r: b.get("type") != "document" or (
        isinstance(b.get("identifier"), dict) and "system" in b["identifier"] and "value" in b["identifier"]),
    "bdl-10": lambda b, _r: b.get("type") != "document" or "timestamp" in b,
    "bdl-11": lambda b, _r: b.get("type") != "document" or _first_resource_type(b) == "Composition",
    "bdl-12": lambda b, _r: b.get("type") != "message" or _first_resource_type(b) == "MessageHeader",
    "per-1": _per1,
    "cpt-2": lambda v, _r: "value" not in v or "system" in v,
    "att-1": lambda v, _r: "data" not in v or "contentType" in v,
    "qty-3": lambda v, _r: "code" not in v or "system" in v,
    "pat-1": lambda v, _r: any(k in v for k in ("name", "telecom", "address", "organization")),
}


@cache
def _fhirpath(expression: str) -> Check | None:
    prepared = expression.replace("hasValue()", "exists()").replace("%ucum", "'http://unitsofmeasure.org'")
    try:
        check_compiles(prepared)
    except FHIRPathError as exc:  # a grammar fhirpathpy lacks
        log.info("invariant not compiled (%s): %s", exc, expression)
        return None

    def check(value: Any, resource: Resource) -> bool:
        try:
            result = evaluate(prepared, value, {"resource": resource, "rootResource": resource, "context": value})
        except FHIRPathError:  # fhirpathpy gaps (functions, type resolution): not the client's fault
            return True
        return not result or result == [True]

    return check


def compile_invariant(key: str, severity: str, human: str, expression: str) -> Invariant:
    if key in ENGINE_RULES:
        return Invariant(key, severity, human, expression, None)
    return Invariant(key, severity, human, expression, NATIVE.get(key) or _fhirpath(expression))
