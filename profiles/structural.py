"""Structural validation (element names, datatypes, primitive formats, cardinality of lists).

This is the first layer of validation, delegated to the pydantic models of
``fhir.resources`` (R4B models, which match R4 4.0.1 for the types served
here). The StructureDefinition-driven engine (bindings, invariants, slicing,
French profiles) builds on top of it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import ValidationError

from fhir_common.outcome import Issue
from fhir_common.types import Resource

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# pydantic error type -> FHIR IssueType
_ISSUE_CODES = {
    "extra_forbidden": "structure",
    "missing": "required",
    "value_error": "value",
}


@cache
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def fhirpath_of(resource_type: str, loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into a FHIRPath (``Patient.name[0].family``)."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            path += "." + part.removesuffix("__ext")
    return path


def validate_structure(resource: Resource) -> list[Issue]:
    """Issues (all of severity error) that make ``resource`` structurally invalid."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return [Issue("error", "required", "resourceType is missing", ("resourceType",))]
    issues: list[Issue] = []
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not _ID_RE.match(rid)):
        issues.append(Issue("error", "value", f"Invalid id {rid!r}: 1-64 of [A-Za-z0-9-.]",
                            (f"{resource_type}.id",)))
    try:
        _model(resource_type).model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err.get("loc", ()))
            if loc == ("id",) and issues:
                continue  # already reported above, with the length rule too
            msg = str(err.get("msg", "invalid"))
            if err.get("type") == "extra_forbidden":
                msg = f"Unknown element '{loc[-1] if loc else '?'}'"
            issues.append(Issue("error", _ISSUE_CODES.get(str(err.get("type")), "structure"), msg,
                                (fhirpath_of(resource_type, loc),)))
    except (ValueError, TypeError, KeyError) as exc:  # model construction refused the payload itself
        issues.append(Issue("error", "structure", str(exc), (resource_type,)))
    return issues
