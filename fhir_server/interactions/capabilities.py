"""The CapabilityStatement, generated from what the registries actually hold."""

from __future__ import annotations

from typing import Any

from fhir_server import __version__
from fhir_server.context import ServerContext
from fhir_server.registry import RESOURCE_TYPES
from fhir_server.storage import format_instant, now_us

from .result import Result


def _search_params(ctx: ServerContext, type_: str) -> list[dict[str, Any]]:
    out = []
    for code, sp in sorted(ctx.search_parameters.for_type(type_).items()):
        entry: dict[str, Any] = {"name": code, "type": sp.type}
        if getattr(sp, "url", None):
            entry["definition"] = sp.url
        out.append(entry)
    return out


def capability_statement(ctx: ServerContext) -> dict[str, Any]:
    resources = []
    for rt in RESOURCE_TYPES.values():
        resource: dict[str, Any] = {
            "type": rt.name,
            "profile": rt.profile,
            "interaction": [{"code": code} for code in rt.interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            # conditional criteria: identifier and _id, matched in the store (interactions/conditional.py)
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
        }
        if rt.searchable:
            resource["searchParam"] = _search_params(ctx, rt.name)
        if rt.documentation:
            resource["documentation"] = rt.documentation
        resources.append(resource)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(now_us()),
        "publisher": "fhir-server project",
        "kind": "instance",
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 server (SQL store of record, Elasticsearch search)",
                           "url": ctx.base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        }],
    }


def metadata(ctx: ServerContext) -> Result:
    return Result(200, capability_statement(ctx))
