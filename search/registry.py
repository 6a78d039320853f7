"""Search-parameter registry: which parameters exist for a resource type and how to extract them.

The official R4 definitions (vendored by ``definitions/build.py``) share one SearchParameter
across many base types, with an expression such as ``Patient.name | Person.name``.  The
registry splits those expressions per base type, maps ``Resource``/``DomainResource``
parameters onto each concrete type, and rewrites ``.where(resolve() is Patient)`` (which
fhirpathpy cannot evaluate without a resolver) into a target-type filter applied to the
extracted references.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

#: Bump when extraction or the index layout changes in a way that requires a reindex
#: (the version is part of every fingerprint).
EXTRACTION_VERSION = "5"

COMMON_BASES = ("Resource", "DomainResource")
#: Resources that are not DomainResources (no narrative, so no ``_text``).
NON_DOMAIN_RESOURCES = frozenset({"Binary", "Bundle", "Parameters"})

#: Parameter types that have an index/query module under ``search.params``.
SUPPORTED_TYPES = frozenset({"string", "token", "reference", "date", "uri", "composite"})
#: Parameters without a FHIRPath that the index serves by dedicated top-level fields.
FULLTEXT_CODES = frozenset({"_text", "_content"})

#: Known parameters deliberately not indexed, with the reason given to clients.
UNSUPPORTED_CODES: Mapping[str, str] = MappingProxyType(
    {
        "_query": "_query (named queries) is not supported",
    }
)

_RESOLVE_IS = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+([A-Z][A-Za-z]+)\s*\)")
_LEADING_TYPE = re.compile(r"^\(*\s*([A-Z][A-Za-z]+)\b")


@dataclass(frozen=True)
class ExtractionPath:
    """One evaluable FHIRPath for a resource type, plus the reference target filter (if any)."""

    expression: str
    resolve_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchParameter:
    """A search parameter as it applies to one resource type.

    ``expression`` is the original part of the FHIRPath for that type (for display and
    CapabilityStatement); ``paths`` is what extraction evaluates.  ``target`` is narrowed by
    any ``resolve() is X`` filter.  ``reason_unsupported`` is set for parameters that are
    known (so they are not silently ignored) but cannot be searched.
    """

    code: str
    url: str
    type: str
    base: tuple[str, ...]
    expression: str | None
    target: tuple[str, ...] = ()
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()
    multiple_or: bool | None = None
    multiple_and: bool | None = None
    component: tuple[str, ...] = ()
    paths: tuple[ExtractionPath, ...] = ()
    reason_unsupported: str | None = None

    @property
    def supported(self) -> bool:
        return self.reason_unsupported is None


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath at top-level ``|`` (outside parentheses and string literals)."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    i = 0
    while i < len(expression):
        c = expression[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _leading_type(part: str) -> str | None:
    m = _LEADING_TYPE.match(part)
    return m.group(1) if m else None


def _paths_for(raw: dict[str, Any], resource_type: str) -> tuple[str | None, tuple[ExtractionPath, ...]]:
    """The original expression part(s) for ``resource_type`` and their evaluable rewrites."""
    expression = raw.get("expression")
    if not expression:
        return None, ()
    original: list[str] = []
    paths: list[ExtractionPath] = []
    for part in split_union(expression):
        lead = _leading_type(part)
        if lead in COMMON_BASES:
            evaluable = re.sub(rf"^(\(*\s*){lead}\b", rf"\g<1>{resource_type}", part)
        elif lead == resource_type:
            evaluable = part
        else:
            continue
        original.append(part)
        resolve_types = tuple(_RESOLVE_IS.findall(evaluable))
        paths.append(ExtractionPath(_RESOLVE_IS.sub("", evaluable), resolve_types))
    return (" | ".join(original) or None), tuple(paths)


def _make(raw: dict[str, Any], resource_type: str) -> SearchParameter | None:
    expression, paths = _paths_for(raw, resource_type)
    code = raw["code"]
    if raw.get("expression") and not paths:
        return None  # the parameter applies to other base types only
    target = tuple(raw.get("target", ()))
    filters = {t for p in paths for t in p.resolve_types}
    if filters and all(p.resolve_types for p in paths):
        target = tuple(t for t in target if t in filters) or tuple(sorted(filters))
    reason = UNSUPPORTED_CODES.get(code)
    if reason is None and raw["type"] not in SUPPORTED_TYPES:
        reason = f"search parameters of type {raw['type']} are not supported yet"
    if reason is None and not paths and code not in FULLTEXT_CODES:
        reason = f"{code} has no FHIRPath expression and is not supported"
    return SearchParameter(
        code=code,
        url=raw["url"],
        type=raw["type"],
        base=tuple(raw["base"]),
        expression=expression,
        target=target,
        modifier=tuple(raw.get("modifier", ())),
        comparator=tuple(raw.get("comparator", ())),
        chain=tuple(raw.get("chain", ())),
        multiple_or=raw.get("multipleOr"),
        multiple_and=raw.get("multipleAnd"),
        component=tuple(c["expression"] for c in raw.get("component", ())),
        paths=paths,
        reason_unsupported=reason,
    )


class SearchParameterRegistry:
    """All search parameters, resolved per resource type (results cached per type)."""

    def __init__(self, definitions: list[dict[str, Any]]) -> None:
        self._definitions = list(definitions)
        self._by_type: dict[str, Mapping[str, SearchParameter]] = {}
        self._references: dict[str, Mapping[str, SearchParameter]] = {}

    @classmethod
    def from_file(cls, path: Path) -> SearchParameterRegistry:
        return cls(json.loads(path.read_text(encoding="utf-8"))["parameters"])

    @staticmethod
    @cache
    def load_default() -> SearchParameterRegistry:
        """The registry of the vendored R4 subset (one shared instance per process)."""
        folder = resources.files("search").joinpath("definitions")
        params: list[dict[str, Any]] = []
        for name in ("search-parameters.json", "extra-parameters.json"):  # R4 core, then IHE MHD / ANS PDSm
            params += json.loads(folder.joinpath(name).read_text("utf-8"))["parameters"]
        return SearchParameterRegistry(params)

    def resource_types(self) -> list[str]:
        """Concrete resource types with type-specific parameters in this registry."""
        return sorted({b for d in self._definitions for b in d["base"] if b not in COMMON_BASES})

    def for_type(self, resource_type: str) -> Mapping[str, SearchParameter]:
        """Parameters applicable to ``resource_type``: its own plus the common ``_id``, ``_tag``..."""
        found = self._by_type.get(resource_type)
        if found is None:
            params: dict[str, SearchParameter] = {}
            for raw in self._definitions:
                bases = raw["base"]
                common = "Resource" in bases or (
                    "DomainResource" in bases and resource_type not in NON_DOMAIN_RESOURCES
                )
                if resource_type not in bases and not common:
                    continue
                sp = _make(raw, resource_type)
                if sp is not None and sp.code not in params:
                    params[sp.code] = sp
            found = MappingProxyType(dict(sorted(params.items())))
            self._by_type[resource_type] = found
        return found

    def get(self, resource_type: str, code: str) -> SearchParameter | None:
        return self.for_type(resource_type).get(code)

    def reference_params(self, resource_type: str) -> Mapping[str, SearchParameter]:
        """The supported reference parameters of ``resource_type``, by code (cached per type).

        What ``_include``/``_revinclude`` (``*`` included) can follow and ``/metadata`` lists as
        ``searchInclude``/``searchRevInclude``: one definition, so the two cannot disagree."""
        found = self._references.get(resource_type)
        if found is None:
            found = MappingProxyType({c: p for c, p in self.for_type(resource_type).items()
                                      if p.type == "reference" and p.supported})
            self._references[resource_type] = found
        return found

    def fingerprint(self, resource_type: str) -> str:
        """Hash of the indexed parameter set and extraction version, stored in the index ``_meta``.

        When it differs from the live index's, the index content is stale: reindex.
        """
        payload = [
            EXTRACTION_VERSION,
            resource_type,
            [
                [p.code, p.type, [[x.expression, list(x.resolve_types)] for x in p.paths], list(p.target)]
                for p in self.for_type(resource_type).values()
                if p.supported
            ],
        ]
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]
