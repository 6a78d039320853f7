"""The one way this code base evaluates FHIRPath: fhirpathpy on the R4 model, compiled once, serialised.

Why serialised: fhirpathpy keeps per-evaluation state in module globals (``engine.invocations.constants``: the
instant ``now()``, ``today()`` and ``timeOfDay()`` return, reset at the start of *every* evaluation). Two
evaluations at once see each other's reset, so ``now() = now()`` can be false in one of them. Its parser is the
ANTLR Python runtime, whose prediction cache is shared by every parser and documented as not thread-safe. So every
compile and every evaluation runs under one lock; evaluation is pure Python that holds the GIL anyway, so the lock
costs no parallelism. Search extraction, invariants and FHIRPath Patch all call this module; nothing else imports
fhirpathpy (``tests/test_layering.py``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

__all__ = ["FHIRPathError", "Node", "check_compiles", "element_types", "evaluate", "evaluate_nodes"]

_R4 = models["r4"]
_LOCK = threading.Lock()


class FHIRPathError(ValueError):
    """An expression fhirpathpy cannot parse, or could not evaluate on the given data."""


@dataclass(frozen=True, slots=True)
class Node:
    """One result with where it came from: ``type`` is fhirpathpy's type path (``HumanName``, ``Patient.name``,
    ``System.String``), ``location`` the concrete element (``Patient.name[1].given[0]``; None for a computed
    value), ``data`` the JSON value itself (the resource's own object, not a copy)."""

    type: str | None
    location: str | None
    data: Any


@lru_cache(maxsize=4096)
def _compiled(expression: str, raw: bool) -> Any:
    try:
        with _LOCK:
            return fhirpathpy.compile(expression, _R4, {"returnRawData": True} if raw else None)
    except Exception as exc:  # fhirpathpy raises plain exceptions for syntax errors
        raise FHIRPathError(f"{exc}") from exc


def _run(expression: str, raw: bool, data: Any, variables: Mapping[str, Any] | None) -> list[Any]:
    fn = _compiled(expression, raw)
    try:
        with _LOCK:
            return list(fn(data, dict(variables) if variables else None))
    except Exception as exc:  # fhirpathpy gaps (functions, type resolution) and data it cannot read
        raise FHIRPathError(f"{exc}") from exc


def check_compiles(expression: str) -> None:
    """Raise :class:`FHIRPathError` now if ``expression`` is not FHIRPath fhirpathpy can parse."""
    _compiled(expression, False)


def evaluate(expression: str, data: Any, variables: Mapping[str, Any] | None = None) -> list[Any]:
    """The plain JSON values ``expression`` yields on ``data`` (``variables``: ``%name`` values)."""
    return _run(expression, False, data, variables)


def evaluate_nodes(expression: str, data: Any) -> list[Node]:
    """The results of ``expression`` on ``data`` with their type and location (search extraction, FHIRPath
    Patch)."""
    out: list[Node] = []
    for node in _run(expression, True, data, None):
        path = getattr(node, "path", None)
        location = getattr(node, "propName", None)
        out.append(Node(path if isinstance(path, str) else None, location if isinstance(location, str) else None,
                        getattr(node, "data", node)))
    return out


_WHERE = re.compile(r"\.where\((?:[^()']|'[^']*'|\([^()]*\))*\)")
_NAVIGATION = re.compile(r"[A-Z][A-Za-z]*(\.[a-z][A-Za-z0-9]*)+")


@lru_cache(maxsize=1024)
def element_types(expression: str) -> frozenset[str] | None:
    """The R4 types of what a navigation path (``Patient.telecom.where(system='email')``) yields, from the
    model alone (no data); None when that cannot be told statically (functions, ``value[x]`` of an extension,
    a backbone element). Lets a search parameter say which modifiers apply to it (an ``Identifier`` has a type)."""
    path = _WHERE.sub("", expression.strip())
    if not _NAVIGATION.fullmatch(path):
        return None
    types: dict[str, str] = _R4["path2Type"]
    elsewhere: dict[str, str] = _R4["pathsDefinedElsewhere"]
    segments = path.split(".")
    current, found = segments[0], None
    for segment in segments[1:]:
        full = elsewhere.get(f"{current}.{segment}", f"{current}.{segment}")
        found = types.get(full)
        if found is None:
            if full in _R4["choiceTypePaths"] or not _has_children(full):
                return None
            current = full  # a backbone element: its children are keyed by its path
        else:
            current = full if found in ("BackboneElement", "Element") else found
    if found is None or found in ("BackboneElement", "Element"):
        return None
    return frozenset({found})


@lru_cache(maxsize=1024)
def _has_children(path: str) -> bool:
    prefix = path + "."
    return any(key.startswith(prefix) for key in _R4["path2Type"])
