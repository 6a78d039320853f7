"""What the search implementation supports, for ``CapabilityStatement.rest.resource`` (no I/O).

Only parameters that are actually indexed are listed, each with the modifiers and prefixes
that work on it; ``searchInclude`` / ``searchRevInclude`` list the reference parameters the
includes can follow among the ``served`` types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search.params import date, reference, string, token, uri
from search.registry import FULLTEXT_CODES, SearchParameterRegistry

_MODIFIERS: dict[str, str] = {
    "string": ", ".join(f":{m}" for m in sorted(string.MODIFIERS)),
    "token": ", ".join(f":{m}" for m in sorted(token.MODIFIERS - {"in", "not-in", "below", "above"}))
    + ", :in/:not-in (R4 core value sets and ANS JDVs), :below/:above (subsumption in the R4 code systems)",
    "reference": ":[type], " + ", ".join(f":{m}" for m in sorted(reference.MODIFIERS)) + ", chaining",
    "date": "prefixes " + " ".join(date.PREFIXES),
    "uri": ", ".join(f":{m}" for m in sorted(uri.MODIFIERS)),
    "composite": "components separated by $",  # composite.MODIFIERS is empty
}


def search_params(registry: SearchParameterRegistry, resource_type: str) -> list[dict[str, Any]]:
    """``searchParam`` entries: supported parameters plus ``_has`` and ``_list``."""
    out: list[dict[str, Any]] = []
    for code, sp in registry.for_type(resource_type).items():
        if not sp.supported:
            continue
        if code in FULLTEXT_CODES:
            doc = "full text (all words), :missing"
        elif code == "_id":  # the top-level id keyword (search.query): only :not and :missing
            doc = ":not, :missing, _sort"
        else:
            doc = f"{_MODIFIERS.get(sp.type, '')}, :missing, _sort".lstrip(", ")
        out.append({"name": code, "definition": sp.url, "type": sp.type, "documentation": doc})
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
