"""The CapabilityStatement, generated from what the registries actually hold.

The resource types and their interactions are those the routes serve (:func:`fhir_server.registry.served_types`),
the search parameters and their modifiers those the search compiler accepts (:mod:`search.capabilities`), the
types ``$validate`` takes without storing them those the route accepts (:func:`.validate.validate_only_types`).
"""

from __future__ import annotations

from typing import Any

from fhir_common.types import Resource
from fhir_server import __version__
from fhir_server.context import ServerContext
from fhir_server.registry import ResourceType, served_types, store_of
from fhir_server.security.authn import capability_security
from fhir_server.settings import Settings
from fhir_server.storage import format_instant, now_us
from profiles import known_profiles
from search import capabilities as search_capabilities

from .patch import JSON_PATCH_TYPES
from .result import Result
from .validate import validate_only_types

FORMATS = ["application/fhir+json", "json", "application/fhir+xml", "xml"]
#: PATCH bodies (interactions/patch.py, api/routes.py ``_patch_body``): JSON Patch, FHIRPath Patch in JSON and XML
PATCH_FORMATS = [*sorted(JSON_PATCH_TYPES), "application/fhir+json", "application/fhir+xml"]
VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
EVERYTHING = {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
VERSIONS = {"name": "versions", "definition": "http://hl7.org/fhir/OperationDefinition/CapabilityStatement-versions"}
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


def _search_params(ctx: ServerContext, type_: str) -> list[dict[str, Any]]:
    """Exactly the parameters that work (unsupported ones such as ``_query`` are left out)."""
    return search_capabilities.search_params(ctx.search_parameters, type_)


def _update_create_note(settings: Settings) -> str:
    if settings.auth == "off":
        return ""
    return (" Update as create (PUT to an id not yet known) is for system-context tokens (system/ scopes) only: "
            "any other caller gets 404, as for an id it may not see; POST creates.")


def _resource(ctx: ServerContext, rt: ResourceType) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": rt.name,
        "profile": rt.profile,
        "interaction": [{"code": code} for code in rt.interactions],
        "versioning": "versioned-update",
        "readHistory": rt.supports("vread"),
        "updateCreate": rt.supports("update"),
        # conditional criteria: any supported search (identifier/_id in the store, the rest in ES; conditional.py)
        "conditionalCreate": rt.supports("create"),
        # If-None-Match and If-Modified-Since both answer 304 (api/routes.py _not_modified)
        "conditionalRead": "full-support" if rt.supports("read") else "not-supported",
        "conditionalUpdate": rt.supports("update"),
        "conditionalDelete": "single" if rt.supports("delete") else "not-supported",
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
    resource["operation"] = [VALIDATE, EVERYTHING] if rt.name == "Patient" else [VALIDATE]
    store = store_of(rt.name)
    if store is not None:  # held outside the resource store (AuditEvent): it says what it offers
        resource.update(store.capability())
    documentation = rt.documentation + (_update_create_note(ctx.settings) if rt.supports("update") else "")
    if documentation:
        resource["documentation"] = documentation.strip()
    return resource


def _validate_only(type_: str) -> dict[str, Any]:
    """A type the server does not store but validates (``POST [type]/$validate``): an ITI-65 Bundle..."""
    return {"type": type_, "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}", "operation": [VALIDATE],
            "documentation": "Not stored: $validate only (the resource is checked, never kept)."}


def capability_statement(ctx: ServerContext) -> Resource:
    served = served_types(ctx.settings)
    resources = [_resource(ctx, rt) for rt in served]
    resources += [_validate_only(t) for t in validate_only_types({rt.name for rt in served})]
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        "operation": [VERSIONS],
    }
    security = capability_security(ctx.settings)
    if security is not None:
        rest["security"] = security
    statement: Resource = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(now_us()),
        "publisher": "fhir-server project",
        "kind": "instance",
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 server (SQL store of record, Elasticsearch search)",
                           "url": ctx.base_url},
        "fhirVersion": "4.0.1",
        "format": FORMATS,
    }
    if any(rt.supports("patch") for rt in served):
        statement["patchFormat"] = PATCH_FORMATS
    statement["rest"] = [rest]
    return statement


def metadata(ctx: ServerContext) -> Result:
    return Result(200, capability_statement(ctx))
