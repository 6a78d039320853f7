"""``_summary`` and ``_elements``: which top-level elements of a resource a search returns.

Nothing is copied by hand: the summary flags (``ElementDefinition.isSummary``) and the mandatory elements
(min >= 1, which every view keeps) come from the R4 StructureDefinitions (``fhir_common.r4model``).

Filtering is top-level only (the spec's "summary" view keeps whole summary elements), and a
primitive's ``_element`` extension sibling follows its element.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_common import r4model

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

#: Always returned: the spec requires id and meta (which carries SUBSETTED) in every view.
ALWAYS = frozenset({"resourceType", "id", "meta"})


def _top_level(resource_type: str) -> tuple[r4model.ElementDef, ...]:
    """The elements one step below a resource type (inherited ones included); none for a non-resource."""
    if resource_type not in r4model.resource_types():
        return ()
    return r4model.children(resource_type) or ()


@cache
def _mandatory_by_type() -> dict[str, frozenset[str]]:
    """Top-level elements with min >= 1 of every R4 resource type; choice types named by their stem."""
    return {t: frozenset(el.name for el in _top_level(t) if el.min >= 1) for t in r4model.resource_types()}


def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements ``resource_type`` requires (min >= 1), which no view may drop (empty if unknown)."""
    return _mandatory_by_type().get(resource_type, frozenset())


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level element names flagged isSummary for ``resource_type`` (empty if unknown)."""
    return frozenset(el.name for el in _top_level(resource_type) if el.summary)


def _stem_matches(key: str, names: frozenset[str]) -> bool:
    """``occurrenceDateTime`` matches ``occurrence`` (choice stems), ``_birthDate`` matches ``birthDate``."""
    bare = key[1:] if key.startswith("_") else key
    if bare in names:
        return True
    return any(bare.startswith(n) and len(bare) > len(n) and bare[len(n)].isupper() for n in names)


def subset(resource: dict[str, Any], *, summary: str | None, elements: list[str] | None) -> dict[str, Any] | None:
    """The subsetted copy of ``resource`` tagged SUBSETTED, or ``None`` when nothing is removed.

    ``summary`` is ``true``/``text``/``data`` (``false``/``count`` are handled by the caller);
    ``elements`` wins over ``summary`` when both are given.
    """
    rtype = resource.get("resourceType", "")
    mandatory = mandatory_elements(rtype)
    if elements:
        keep = frozenset(elements) | ALWAYS | mandatory
        out = {k: v for k, v in resource.items() if _stem_matches(k, keep)}
    elif summary == "true":
        keep = summary_elements(rtype) | ALWAYS | mandatory
        out = {k: v for k, v in resource.items() if _stem_matches(k, keep)}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "text":
        keep = ALWAYS | mandatory | {"text"}
        out = {k: v for k, v in resource.items() if _stem_matches(k, keep)}
    else:
        return None
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    out["meta"] = meta
    return out
