"""``_summary`` and ``_elements``: which top-level elements of a resource a search returns.

Nothing is copied by hand. The summary flags (``ElementDefinition.isSummary``) come from the
``fhir.resources`` models (generated from the R4 StructureDefinitions, R4B being identical for the
served types). Mandatory elements (min >= 1), which every view keeps, come from the R4
StructureDefinitions vendored for validation (``profiles/definitions/r4-core.json``): the models
enforce several of them in validators rather than in the field definitions, so they cannot tell.

Filtering is top-level only (the spec's "summary" view keeps whole summary elements), and a
primitive's ``_element`` extension sibling follows its element.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from importlib import resources
from typing import Any

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

#: Always returned: the spec requires id and meta (which carries SUBSETTED) in every view.
ALWAYS = frozenset({"resourceType", "id", "meta"})

_MODULES = {"DocumentReference": "documentreference"}


@cache
def _mandatory_by_type() -> dict[str, frozenset[str]]:
    """Top-level elements with min >= 1 of every resource type in the vendored R4 definitions, read once.

    Each type lists its elements as ``{"p": path, "n": min, ...}`` (inherited ones included), so the
    top-level ones are the paths one step below the type; choice types are named by their stem."""
    raw = json.loads(resources.files("profiles").joinpath("definitions/r4-core.json").read_bytes())["types"]
    out: dict[str, frozenset[str]] = {}
    for type_, definition in raw.items():
        if definition.get("k") != "resource":
            continue
        prefix = f"{type_}."
        out[type_] = frozenset(
            e["p"].removeprefix(prefix).removesuffix("[x]") for e in definition["e"]
            if e["p"].startswith(prefix) and "." not in e["p"].removeprefix(prefix) and e.get("n", 0) >= 1)
    return out


def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements ``resource_type`` requires (min >= 1), which no view may drop (empty if unknown)."""
    return _mandatory_by_type().get(resource_type, frozenset())


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
