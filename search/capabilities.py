"""What the search implementation supports, for ``CapabilityStatement.rest.resource`` (no I/O).

Only parameters that are actually indexed are listed, each with the modifiers and prefixes
that work on it; ``searchInclude`` / ``searchRevInclude`` list the reference parameters the
includes can follow among the ``served`` types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search.params import date, handler_for
from search.registry import FULLTEXT_CODES, SearchParameter, SearchParameterRegistry

#: What each type's values look like, beside its modifiers
_SYNTAX: dict[str, str] = {
    "date": "prefixes " + " ".join(date.PREFIXES),
    "composite": "components separated by $",
}


def modifiers(param: SearchParameter) -> list[str]:
    """The modifiers the search compiler accepts and can match on ``param``: its type module's own list
    (``search.params.*.modifiers``), plus ``:missing`` which every parameter takes (search.query)."""
    if param.code == "_id":  # the top-level id keyword (search.query)
        return ["not", "missing"]
    handler = handler_for(param.type)
    own = [] if param.code in FULLTEXT_CODES or handler is None else list(handler.modifiers(param))
    return [*own, "missing"]


#: Past this many target types, a reference parameter's type modifiers are summed up as ``:[type]``
_MAX_TYPE_MODIFIERS = 12


def _documentation(param: SearchParameter) -> str:
    listed = [f":{m}" for m in modifiers(param)]
    if param.type == "reference" and (not param.target or len(param.target) > _MAX_TYPE_MODIFIERS):
        listed = [m for m in listed if m[1:] not in param.target]
        listed.insert(0, ":[type]")
    parts = ["modifiers " + ", ".join(listed)]
    if param.code in FULLTEXT_CODES:
        parts.insert(0, "full text (all words)")
    elif param.type in _SYNTAX:
        parts.append(_SYNTAX[param.type])
    if param.type == "reference":
        parts.append("chaining")
    if param.code not in FULLTEXT_CODES:
        parts.append("_sort")
    return "; ".join(parts)


def search_params(registry: SearchParameterRegistry, resource_type: str) -> list[dict[str, Any]]:
    """``searchParam`` entries: supported parameters plus ``_has`` and ``_list``."""
    out: list[dict[str, Any]] = []
    for code, sp in registry.for_type(resource_type).items():
        if sp.supported:
            out.append({"name": code, "definition": sp.url, "type": sp.type, "documentation": _documentation(sp)})
    out.append({"name": "_has", "type": "special", "definition": "http://hl7.org/fhir/search.html#has",
                "documentation": "reverse chaining, nestable: _has:Type:reference:parameter=value"})
    out.append({"name": "_list", "type": "special", "definition": "http://hl7.org/fhir/search.html#list",
                "documentation": "members of List/[id] (entry.item)"})
    return sorted(out, key=lambda e: str(e["name"]))


def search_includes(registry: SearchParameterRegistry, resource_type: str) -> list[str]:
    return ["*", *(f"{resource_type}:{c}" for c in registry.reference_params(resource_type))]


def search_revincludes(registry: SearchParameterRegistry, resource_type: str, served: Sequence[str]) -> list[str]:
    out = [f"{source}:{c}" for source in served for c, p in registry.reference_params(source).items()
           if not p.target or resource_type in p.target]
    return ["*", *sorted(out)]
