"""The OpenAPI 3 description of the REST API (``GET /openapi.json``), generated from the registries.

Like the CapabilityStatement it is derived, never hand-written: one path per resource type of
:data:`fhir_server.registry.RESOURCE_TYPES` and interaction it supports, the supported search
parameters of :class:`search.registry.SearchParameterRegistry` as query parameters. Bodies are FHIR JSON
objects with a fixed ``resourceType`` (the full resource structure is the R4 specification's, not repeated
here); every error answer is an ``OperationOutcome``. It serves generic tooling and the schemathesis
robustness run (``tests/robustness/``), which is why ids and query values carry their FHIR syntax.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from fhir_server import __version__
from fhir_server.audit import search as audit_search
from fhir_server.registry import RESOURCE_TYPES, ResourceType
from search.capabilities import search_params
from search.registry import SearchParameterRegistry

FHIR_JSON = "application/fhir+json"
ID_PATTERN = "^[A-Za-z0-9\\-.]{1,64}$"  # datatypes.html#id
#: Result and control parameters every search accepts (search.html#return), beside the type's own.
RESULT_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    ("_count", {"type": "integer", "minimum": 0}, "page size (capped by FHIR_MAX_COUNT)"),
    ("_sort", {"type": "string"}, "comma-separated parameters, - for descending"),
    ("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}, "total in the Bundle"),
    ("_summary", {"type": "string", "enum": ["true", "false", "text", "data", "count"]}, "subset"),
    ("_elements", {"type": "string"}, "comma-separated top-level elements"),
    ("_include", {"type": "string"}, "Type:param[:Target] or *; :iterate allowed"),
    ("_revinclude", {"type": "string"}, "Type:param[:Target] or *; :iterate allowed"),
    ("_format", {"type": "string", "enum": ["json", "xml", "application/fhir+json", "application/fhir+xml"]},
     "response format"),
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resource_schema(name: str, documentation: str = "") -> dict[str, Any]:
    return {
        "type": "object",
        "description": documentation or f"A FHIR R4 {name} (structure: https://hl7.org/fhir/R4/{name.lower()}.html)",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": [name]},
                       "id": {"type": "string", "pattern": ID_PATTERN},
                       "meta": {"type": "object"}},
        "additionalProperties": True,
    }


def _components(types: list[ResourceType]) -> dict[str, Any]:
    schemas: dict[str, Any] = {rt.name: _resource_schema(rt.name, rt.documentation) for rt in types}
    schemas["OperationOutcome"] = _resource_schema("OperationOutcome")
    schemas["OperationOutcome"]["required"] = ["resourceType", "issue"]
    schemas["OperationOutcome"]["properties"]["issue"] = {"type": "array", "items": {"type": "object"}}
    schemas["Bundle"] = _resource_schema("Bundle")
    schemas["Bundle"]["properties"]["type"] = {"type": "string"}
    schemas["Bundle"]["properties"]["entry"] = {"type": "array", "items": {"type": "object"}}
    schemas["TransactionBundle"] = {
        **_resource_schema("Bundle", "A transaction or batch Bundle (Bundle.entry.request says what to do)"),
        "required": ["resourceType", "type"]}
    schemas["TransactionBundle"]["properties"]["type"] = {"type": "string", "enum": ["transaction", "batch"]}
    schemas["TransactionBundle"]["properties"]["entry"] = {"type": "array", "items": {"type": "object"}}
    schemas["Parameters"] = _resource_schema("Parameters", "FHIRPath Patch (fhirpatch.html) or operation input")
    schemas["JSONPatch"] = {"type": "array", "description": "RFC 6902 JSON Patch",
                            "items": {"type": "object", "required": ["op", "path"],
                                      "properties": {"op": {"type": "string"}, "path": {"type": "string"}}}}
    return {"schemas": schemas,
            "responses": {"Error": {"description": "An OperationOutcome saying what is wrong (4xx) or unavailable",
                                    "content": {FHIR_JSON: {"schema": _ref("OperationOutcome")}}}}}


def _answer(status: str, description: str, schema: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {FHIR_JSON: {"schema": _ref(schema)}}
    return {status: out, "4XX": {"$ref": "#/components/responses/Error"}}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {FHIR_JSON: {"schema": _ref(schema)}}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": ID_PATTERN}}


def _query_params(registry: SearchParameterRegistry, type_: str) -> list[dict[str, Any]]:
    if type_ == "AuditEvent":  # served from the audit table, with its own parameters
        out = [{"name": name, "in": "query", "required": False, "schema": {"type": "string"},
                "description": f"{kind}: {doc}".rstrip(": ")} for name, (kind, _, doc) in audit_search.PARAMS.items()]
    else:
        out = [{"name": sp["name"], "in": "query", "required": False, "schema": {"type": "string"},
                "description": f"{sp['type']}: {sp.get('documentation', '')}".rstrip(": ")}
               for sp in search_params(registry, type_)]
    out += [{"name": name, "in": "query", "required": False, "schema": schema, "description": doc}
            for name, schema, doc in RESULT_PARAMETERS]
    return out


_CONDITION = [{"name": "identifier", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "system|value; any other search parameter of the type is accepted too"},
              {"name": "_id", "in": "query", "required": False, "schema": {"type": "string"}}]


def _type_paths(rt: ResourceType, registry: SearchParameterRegistry) -> dict[str, dict[str, Any]]:
    t = rt.name
    tag = [t]
    paths: dict[str, dict[str, Any]] = {}
    type_ops: dict[str, Any] = {}
    if rt.supports("search-type"):
        type_ops["get"] = {"operationId": f"search{t}", "tags": tag, "summary": f"search {t}",
                           "parameters": _query_params(registry, t), "responses": _answer("200", "searchset",
                                                                                          "Bundle")}
        form = {"type": "object", "additionalProperties": {"type": "string"},
                "properties": {p["name"]: p["schema"] for p in _query_params(registry, t)}}
        paths[f"/{t}/_search"] = {"post": {
            "operationId": f"searchPost{t}", "tags": tag, "summary": f"search {t} with a form body",
            "requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
            "responses": _answer("200", "searchset", "Bundle")}}
    if rt.supports("create"):
        type_ops["post"] = {"operationId": f"create{t}", "tags": tag, "summary": f"create a {t}",
                            "parameters": [{"name": "If-None-Exist", "in": "header", "required": False,
                                            "schema": {"type": "string"}}],
                            "requestBody": _body(t), "responses": _answer("201", "created", t)}
    if rt.supports("update"):
        type_ops["put"] = {"operationId": f"conditionalUpdate{t}", "tags": tag, "parameters": _CONDITION,
                           "summary": f"conditional update of a {t}", "requestBody": _body(t),
                           "responses": _answer("200", "updated", t)}
    if rt.supports("delete"):
        type_ops["delete"] = {"operationId": f"conditionalDelete{t}", "tags": tag, "parameters": _CONDITION,
                              "summary": f"conditional delete of a {t}", "responses": _answer("204", "deleted",
                                                                                              None)}
    if rt.supports("patch"):
        type_ops["patch"] = {"operationId": f"conditionalPatch{t}", "tags": tag, "parameters": _CONDITION,
                             "summary": f"conditional patch of a {t}", "requestBody": _patch_body(),
                             "responses": _answer("200", "patched", t)}
    if type_ops:
        paths[f"/{t}"] = type_ops
    if rt.supports("history-type"):
        paths[f"/{t}/_history"] = {"get": {"operationId": f"historyType{t}", "tags": tag,
                                           "parameters": _history_params(),
                                           "responses": _answer("200", "history Bundle", "Bundle")}}
    paths[f"/{t}/$validate"] = {"post": {"operationId": f"validate{t}", "tags": tag,
                                         "requestBody": _body(t), "summary": f"$validate a {t}",
                                         "parameters": [{"name": "mode", "in": "query", "required": False,
                                                         "schema": {"type": "string"}},
                                                        {"name": "profile", "in": "query", "required": False,
                                                         "schema": {"type": "string"}}],
                                         "responses": _answer("200", "verdict", "OperationOutcome")}}
    id_param = _path_param("id", f"logical id of the {t}")
    instance: dict[str, Any] = {"parameters": [id_param]}
    if rt.supports("read"):
        instance["get"] = {"operationId": f"read{t}", "tags": tag, "responses": _answer("200", "current version", t)}
    if rt.supports("update"):
        instance["put"] = {"operationId": f"update{t}", "tags": tag, "requestBody": _body(t),
                           "parameters": [{"name": "If-Match", "in": "header", "required": False,
                                           "schema": {"type": "string"}}],
                           "responses": _answer("200", "updated (201 when created)", t)}
    if rt.supports("patch"):
        instance["patch"] = {"operationId": f"patch{t}", "tags": tag, "requestBody": _patch_body(),
                             "responses": _answer("200", "patched", t)}
    if rt.supports("delete"):
        instance["delete"] = {"operationId": f"delete{t}", "tags": tag, "responses": _answer("204", "deleted", None)}
    paths[f"/{t}/{{id}}"] = instance
    if rt.supports("history-instance"):
        paths[f"/{t}/{{id}}/_history"] = {"parameters": [id_param], "get": {
            "operationId": f"historyInstance{t}", "tags": tag, "parameters": _history_params(),
            "responses": _answer("200", "history Bundle", "Bundle")}}
    if rt.supports("vread"):
        paths[f"/{t}/{{id}}/_history/{{vid}}"] = {
            "parameters": [id_param, _path_param("vid", "version id")],
            "get": {"operationId": f"vread{t}", "tags": tag, "responses": _answer("200", "that version", t)}}
    paths[f"/{t}/{{id}}/$validate"] = {"parameters": [id_param], "post": {
        "operationId": f"validateInstance{t}", "tags": tag, "requestBody": {**_body(t), "required": False},
        "responses": _answer("200", "verdict", "OperationOutcome")}}
    return paths


def _patch_body() -> dict[str, Any]:
    return {"required": True, "content": {"application/json-patch+json": {"schema": _ref("JSONPatch")},
                                          FHIR_JSON: {"schema": _ref("Parameters")}}}


def _history_params() -> list[dict[str, Any]]:
    return [{"name": "_count", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            {"name": "_since", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"}}]


@lru_cache(maxsize=8)
def openapi_json(registry: SearchParameterRegistry, base_url: str) -> bytes:
    """The serialised description, what ``GET /openapi.json`` answers: built once per registry and base URL
    (it depends on nothing else: the resource types and audit parameters are fixed at import)."""
    return orjson.dumps(openapi_document(registry, base_url))


@lru_cache(maxsize=8)
def openapi_document(registry: SearchParameterRegistry, base_url: str) -> dict[str, Any]:
    """The whole description; ``base_url`` is the public FHIR base (``FHIR_BASE_URL``).

    Built once per registry and base URL and shared between callers: read it, never modify it
    (copy it first)."""
    types = list(RESOURCE_TYPES.values())
    paths: dict[str, Any] = {
        "/metadata": {"get": {"operationId": "capabilities", "tags": ["system"],
                              "responses": _answer("200", "CapabilityStatement", None)}},
        "/": {"post": {"operationId": "transaction", "tags": ["system"], "summary": "transaction or batch",
                       "requestBody": _body("TransactionBundle"),
                       "responses": _answer("200", "transaction-response or batch-response", "Bundle")}},
        "/_history": {"get": {"operationId": "historySystem", "tags": ["system"], "parameters": _history_params(),
                              "responses": _answer("200", "history Bundle", "Bundle")}},
    }
    for rt in types:
        paths.update(_type_paths(rt, registry))
    return {
        "openapi": "3.0.3",
        "info": {"title": "fhir-server FHIR R4 API", "version": __version__,
                 "description": "FHIR R4 (4.0.1) REST API; the CapabilityStatement at /metadata is authoritative. "
                                "Every 4xx answer is an OperationOutcome."},
        "servers": [{"url": base_url}],
        "tags": [{"name": "system"}, *({"name": rt.name, "description": rt.documentation} for rt in types)],
        "paths": paths,
        "components": _components(types),
    }
