"""The CapabilityStatement, generated from what the registries actually hold."""

from __future__ import annotations

from typing import Any

from fhir_server import __version__
from fhir_server.context import ServerContext
from fhir_server.registry import RESOURCE_TYPES, store_of
from fhir_server.security.authn import capability_security
from fhir_server.storage import format_instant, now_us
from profiles import known_profiles
from search import capabilities as search_capabilities

from .result import Result


def _search_params(ctx: ServerContext, type_: str) -> list[dict[str, Any]]:
    """Exactly the parameters that work (unsupported ones such as ``_query`` are left out)."""
    return search_capabilities.search_params(ctx.search_parameters, type_)


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
            # conditional criteria: any supported search (identifier/_id in the store, the rest in ES; conditional.py)
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
        }
        if rt.searchable:
            resource["searchParam"] = _search_params(ctx, rt.name)
            resource["searchInclude"] = search_capabilities.search_includes(ctx.search_parameters, rt.name)
            resource["searchRevInclude"] = search_capabilities.search_revincludes(
                ctx.search_parameters, rt.name, ctx.indices.searchable_types())
        supported = [url for url, _version, type_ in known_profiles() if type_ == rt.name]
        if supported:
            resource["supportedProfile"] = supported
        resource["operation"] = [{"name": "validate",
                                  "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]
        own = store_of(rt.name)
        if own is not None:  # e.g. AuditEvent: read-only, one version, searched in SQL (fhir_server/audit/search.py)
            resource.update(own.capability())
        if rt.documentation:
            resource["documentation"] = rt.documentation
        resources.append(resource)
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        "operation": [{"name": "versions",
                       "definition": "http://hl7.org/fhir/OperationDefinition/CapabilityStatement-versions"}],
    }
    security = capability_security(ctx.settings)
    if security is not None:
        rest["security"] = security
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
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "rest": [rest],
    }


def metadata(ctx: ServerContext) -> Result:
    return Result(200, capability_statement(ctx))
