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
from typing import Any

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

    def __init__(self, registry: SearchParameterRegistry, *, base_url: str | None = None) -> None:
        """``base_url``: this server's public base; absolute references under it are made relative."""
        self.registry = registry
        self.base_url = base_url

    def build(self, resource: dict[str, Any]) -> dict[str, Any]:
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

    def values(self, param: SearchParameter, resource: dict[str, Any]) -> list[FhirValue]:
        """The typed values of ``param`` in ``resource`` (``resolve() is X`` filters applied)."""
        out: list[FhirValue] = []
        for path in param.paths:
            found = evaluate(path.expression, resource)
            if path.resolve_types:
                found = [v for v in found if target_type(v.data, resource) in path.resolve_types]
            out.extend(found)
        return out

    def _index_param(self, param: SearchParameter, resource: dict[str, Any], ctx: IndexContext) -> dict[str, Any]:
        handler = handler_for(param.type)
        if handler is None:
            return {}
        try:
            fields = handler.index(param, self.values(param, resource), ctx)
        except Exception:  # never fail a write because of indexing
            log.exception("indexing %s/%s: parameter %s failed", ctx.resource_type, ctx.resource_id, param.code)
            return {}
        return {k: v for k, v in fields.items() if v}


def _meta(resource: dict[str, Any]) -> dict[str, Any]:
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
