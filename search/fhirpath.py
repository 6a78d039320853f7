"""FHIRPath evaluation for extraction: each expression compiled once, results typed.

fhirpathpy's ``returnRawData`` mode keeps the FHIR type of each result node (``HumanName``,
``dateTime``...), which the per-type modules need to tell a Coding from an Identifier, or a
dateTime from an ``occurrenceString``.  Primitive elements that only carry an extension are
dropped by fhirpathpy, so they count as missing, as the spec wants for ``:missing``.

fhirpathpy keeps some evaluation state in module globals, so evaluation is serialised by a
lock: the indexer and a concurrent reindex in the same process stay correct.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from search.params.base import FhirValue

_R4 = models["r4"]
_EVAL_LOCK = threading.Lock()


@lru_cache(maxsize=4096)
def compiled(expression: str) -> Callable[..., list[Any]]:
    """The compiled form of ``expression`` against the R4 model (parsed once per process)."""
    return fhirpathpy.compile(expression, _R4, {"returnRawData": True})


def evaluate(expression: str, resource: dict[str, Any]) -> list[FhirValue]:
    """Evaluate ``expression`` on ``resource``, returning values with their FHIR type names."""
    out: list[FhirValue] = []
    fn = compiled(expression)
    with _EVAL_LOCK:
        nodes = fn(resource)
    for node in nodes:
        data = getattr(node, "data", node)
        path = getattr(node, "path", None)
        if data is None:
            continue
        type_name = path if isinstance(path, str) and "." not in path else None
        if isinstance(path, str) and path.startswith("System."):
            type_name = path
        out.append(FhirValue(type_name, _plain(data)))
    return out


def _plain(data: Any) -> Any:
    """Strip fhirpathpy wrappers that may sit inside returned structures."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    inner = getattr(data, "data", None)
    return data if inner is None else _plain(inner)
