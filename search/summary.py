"""``_summary`` and ``_elements``: which top-level elements of a resource a search returns.

The summary flags (``ElementDefinition.isSummary``) come from the ``fhir.resources`` models
(generated from the R4 StructureDefinitions, R4B being identical for the served types), so
they are not copied by hand.  Mandatory elements (min >= 1) are a small table instead: the
models enforce several of them in validators rather than in the field definitions.

Filtering is top-level only (the spec's "summary" view keeps whole summary elements), and a
primitive's ``_element`` extension sibling follows its element.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

#: Always returned: the spec requires id and meta (which carries SUBSETTED) in every view.
ALWAYS = frozenset({"resourceType", "id", "meta"})

#: Top-level elements with min >= 1 (R4 StructureDefinitions); choice types by their stem.
MANDATORY: dict[str, frozenset[str]] = {
    "Patient": frozenset(),
    "DocumentReference": frozenset({"status", "content"}),
    "Immunization": frozenset({"status", "vaccineCode", "patient", "occurrence"}),
    "List": frozenset({"status", "mode"}),
    "Binary": frozenset({"contentType"}),
    "Consent": frozenset({"status", "scope", "category"}),
}

_MODULES = {"DocumentReference": "documentreference"}


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level element names flagged isSummary for ``resource_type`` (empty if unknown)."""
    module = _MODULES.get(resource_type, resource_type.lower())
    try:
        model = getattr(importlib.import_module(f"fhir.resources.R4B.{module}"), resource_type)
    except (ImportError, AttributeError):
        return frozenset()
    return frozenset(
        name
        for name, f in model.model_fields.items()
        if (f.json_schema_extra or {}).get("summary_element_property")
    )


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
    mandatory = MANDATORY.get(rtype, frozenset())
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
