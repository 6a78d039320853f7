"""FHIRPath evaluation for extraction: results typed (through :mod:`fhir_common.fhirpath`, the one adapter).

The adapter's typed results keep the FHIR type of each node (``HumanName``, ``dateTime``...), which the per-type
modules need to tell a Coding from an Identifier, or a dateTime from an ``occurrenceString``. Primitive elements
that only carry an extension are dropped by fhirpathpy, so they count as missing, as the spec wants for
``:missing``. The adapter serialises evaluation, so the indexer and a concurrent reindex stay correct.
"""

from __future__ import annotations

from typing import Any

from fhir_common.fhirpath import evaluate_nodes
from fhir_common.types import Resource
from search.params.base import FhirValue


def evaluate(expression: str, resource: Resource) -> list[FhirValue]:
    """Evaluate ``expression`` on ``resource``, returning values with their FHIR type names."""
    out: list[FhirValue] = []
    for node in evaluate_nodes(expression, resource):
        if node.data is None:
            continue
        path = node.type
        type_name = path if path is not None and "." not in path else None
        if path is not None and path.startswith("System."):
            type_name = path
        out.append(FhirValue(type_name, _plain(node.data)))
    return out


def _plain(data: Any) -> Any:
    """Strip fhirpathpy wrappers that may sit inside returned structures."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    inner = getattr(data, "data", None)
    return data if inner is None else _plain(inner)
