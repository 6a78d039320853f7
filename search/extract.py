"""Resource -> Elasticsearch document (extraction only; queries live in ``search.query``).

Document layout (see ``search.mapping`` for the field types)::

    {
      "resource_type": "Patient",
      "id": "example",
      "meta": {"versionId": 3, "lastUpdated": "2020-01-01T10:00:00.000Z"},
      "fingerprint": "<registry fingerprint for the type>",
      "present": ["birthdate", "name", ...],        # codes with >= 1 indexed value (:missing)
      "sp": {"<code>": {"<field>": [values...]}}    # fields per parameter type module
    }

Indexing never fails a write: a value that cannot be indexed is logged and skipped, and an
expression that raises only loses that parameter.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from fhir_common.types import Resource
from search import fulltext
from search.fhirpath import evaluate
from search.params import handler_for
from search.params.base import FhirValue, IndexContext
from search.params.date import es_date, parse_date_range
from search.params.reference import target_type
from search.registry import FULLTEXT_CODES, SearchParameter, SearchParameterRegistry

log = logging.getLogger("search.index")

#: Parameters not stored under ``sp``: ``_id`` is the top-level ``id`` keyword.
TOP_LEVEL = frozenset({"_id"})


class IndexDocumentBuilder:
    """Builds the ES document of a resource from the registry's parameters for its type."""

    def __init__(self, registry: SearchParameterRegistry, *, base_url: str | None = None,
                 skip_absent: bool = True) -> None:
        """``base_url``: this server's public base; absolute references under it are made relative.

        ``skip_absent`` (default) skips the FHIRPath evaluation of paths whose first element the
        resource does not have: most parameters of a resource are absent, and fhirpathpy costs
        ~0.1 ms per evaluation (``tests/search/test_extract.py`` proves both modes agree).
        """
        self.registry = registry
        self.base_url = base_url
        self.skip_absent = skip_absent

    def build(self, resource: Resource) -> dict[str, Any]:
        """The ES document body (the caller sets ``_id`` = id and external version = versionId)."""
        rtype = resource["resourceType"]
        rid = resource.get("id")
        contained = {c["id"]: c for c in resource.get("contained") or [] if isinstance(c, dict) and c.get("id")}
        ctx = IndexContext(rtype, rid, self.base_url, contained)
        doc: dict[str, Any] = {
            "resource_type": rtype,
            "id": rid,
            "meta": _meta(resource),
            "fingerprint": self.registry.fingerprint(rtype),
        }
        present: list[str] = []
        sp: dict[str, Any] = {}
        known = self.registry.for_type(rtype)
        if FULLTEXT_CODES & known.keys():
            text = fulltext.fields(resource)
            for code in sorted(FULLTEXT_CODES & known.keys()):
                if text.get(fulltext.FIELDS[code]):
                    doc[fulltext.FIELDS[code]] = text[fulltext.FIELDS[code]]
                    present.append(code)
        for param in known.values():
            if not param.supported or param.code in TOP_LEVEL or param.code in FULLTEXT_CODES:
                continue
            fields = self._index_param(param, resource, ctx)
            if fields:
                sp[param.code] = fields
                present.append(param.code)
        doc["present"] = present
        doc["sp"] = sp
        return doc

    def values(self, param: SearchParameter, resource: Resource) -> list[FhirValue]:
        """The typed values of ``param`` in ``resource`` (``resolve() is X`` filters applied)."""
        out: list[FhirValue] = []
        for path in param.paths:
            if self.skip_absent and _top_element_absent(path.expression, resource):
                continue  # exact shortcut: FHIRPath yields nothing when the first element is missing
            found = evaluate(path.expression, resource)
            if path.resolve_types:
                found = [v for v in found if target_type(v.data, resource) in path.resolve_types]
            out.extend(found)
        return out

    def _index_param(self, param: SearchParameter, resource: Resource, ctx: IndexContext) -> dict[str, Any]:
        handler = handler_for(param.type)
        if handler is None:
            return {}
        try:
            fields = handler.index(param, self.values(param, resource), ctx)
        except Exception:  # never fail a write because of indexing
            log.exception("indexing %s/%s: parameter %s failed", ctx.resource_type, ctx.resource_id, param.code)
            return {}
        return {k: v for k, v in fields.items() if v}


_PURE_PATH = re.compile(r"^[A-Z][A-Za-z]+(\.([a-z][A-Za-z0-9]*|(where|as|ofType|resolve|first)\(\)))+$")
_NESTED = re.compile(r"\([^()]*\)")


@lru_cache(maxsize=4096)
def _first_element(expression: str) -> str | None:
    """``Patient.name.family`` -> ``name``; ``None`` unless the expression is a pure navigation path.

    Only paths made of element names and filters (``where``, ``as``, ``ofType``, ``resolve``,
    ``first``) qualify: they yield nothing when the first element is missing, whereas
    ``exists()``, ``empty()``, comparisons or boolean operators compute values from nothing.
    """
    stripped = expression
    for _ in range(10):  # drop function arguments, innermost first
        reduced = _NESTED.sub("()", stripped)
        if reduced == stripped:
            break
        stripped = reduced
    if not _PURE_PATH.match(stripped):
        return None
    return stripped.split(".")[1]


def _top_element_absent(expression: str, resource: Resource) -> bool:
    first = _first_element(expression)
    if first is None:
        return False
    if first in resource:
        return False
    # choice types: ``deceased`` is stored as ``deceasedBoolean``...
    n = len(first)
    return not any(k.startswith(first) and len(k) > n and k[n].isupper() for k in resource)


def _meta(resource: Resource) -> dict[str, Any]:
    meta = resource.get("meta") or {}
    out: dict[str, Any] = {}
    version = meta.get("versionId")
    if version is not None:
        try:
            out["versionId"] = int(version)
        except (TypeError, ValueError):
            log.warning(
                "%s/%s: non-numeric versionId %r not indexed", resource.get("resourceType"), resource.get("id"), version
            )
    last = meta.get("lastUpdated")
    if isinstance(last, str):
        try:
            lo = parse_date_range(last).lo
        except ValueError:
            lo = None
        if lo is None:
            log.warning("%s/%s: bad lastUpdated %r not indexed", resource.get("resourceType"), resource.get("id"), last)
        else:
            out["lastUpdated"] = es_date(lo)
    return out
