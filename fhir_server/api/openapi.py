"""The OpenAPI 3 description of the REST API (``GET /openapi.json``), generated from the registries.

Like the CapabilityStatement it is derived, never hand-written: one path per resource type of
:data:`fhir_server.registry.RESOURCE_TYPES` and interaction it supports, the supported search
parameters of :class:`search.registry.SearchParameterRegistry` as query parameters. Bodies are FHIR JSON
objects with a fixed ``resourceType`` (the full resource structure is the R4 specification's, not repeated
here); every error answer is an ``OperationOutcome``. Bodies and answers are described in JSON and XML; a Binary
is also read and created as raw bytes of any media type (ITI-68); the conditional and ``Prefer`` headers are
listed where they act; with authentication on, every operation but the public ones needs a bearer JWT. It serves
generic tooling and the schemathesis robustness run (``tests/robustness/``), which is why ids and query values
carry their FHIR syntax.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from fhir_server import __version__
from fhir_server.audit import search as audit_search
from fhir_server.interactions.capabilities import PATCH_FORMATS
from fhir_server.interactions.validate import validate_only_types
from fhir_server.registry import ResourceType, types_served
from search.capabilities import search_params
from search.registry import SearchParameterRegistry

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
#: A resource in XML: the R4 XML format (the JSON schema's structure, in FHIR's XML representation)
XML_SCHEMA: dict[str, Any] = {"type": "string", "description": "the resource in FHIR XML (xml.html)"}
RAW_BYTES: dict[str, Any] = {"type": "string", "format": "binary"}
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
                                    "content": _content("OperationOutcome")}}}


def _content(schema: str) -> dict[str, Any]:
    """A FHIR resource in either format (``Accept`` / ``Content-Type`` / ``_format`` choose)."""
    return {FHIR_JSON: {"schema": _ref(schema)}, FHIR_XML: {"schema": XML_SCHEMA}}


def _answer(status: str, description: str, schema: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = _content(schema)
    return {status: out, "4XX": {"$ref": "#/components/responses/Error"}}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _content(schema)}


def _header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


IF_MATCH = _header("If-Match", 'version-aware write (http.html#concurrency): W/"<versionId>", else 412')
IF_NONE_EXIST = _header("If-None-Exist", "conditional create: search criteria (type-less query string)")
IF_NONE_MATCH = _header("If-None-Match", 'conditional read: W/"<versionId>" (or *) answers 304 when current')
IF_MODIFIED_SINCE = _header("If-Modified-Since", "conditional read: an HTTP date; 304 when not modified since")
PREFER_RETURN = _header("Prefer", "return=minimal | representation | OperationOutcome")
PREFER_HANDLING = _header("Prefer", "handling=strict (unknown parameters are a 400) | lenient")


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
                           "parameters": [*_query_params(registry, t), PREFER_HANDLING],
                           "responses": _answer("200", "searchset", "Bundle")}
        form = {"type": "object", "additionalProperties": {"type": "string"},
                "properties": {p["name"]: p["schema"] for p in _query_params(registry, t)}}
        paths[f"/{t}/_search"] = {"post": {
            "operationId": f"searchPost{t}", "tags": tag, "summary": f"search {t} with a form body",
            "requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
            "parameters": [PREFER_HANDLING], "responses": _answer("200", "searchset", "Bundle")}}
    if rt.supports("create"):
        body = _body(t)
        if t == "Binary":  # ITI-68: the content itself, stored as-is in a new Binary (never conditional)
            body["content"]["*/*"] = {"schema": RAW_BYTES}
        type_ops["post"] = {"operationId": f"create{t}", "tags": tag, "summary": f"create a {t}",
                            "parameters": [IF_NONE_EXIST, PREFER_RETURN],
                            "requestBody": body, "responses": _answer("201", "created", t)}
    if rt.supports("update"):
        type_ops["put"] = {"operationId": f"conditionalUpdate{t}", "tags": tag,
                           "parameters": [*_CONDITION, IF_MATCH, PREFER_RETURN],
                           "summary": f"conditional update of a {t}", "requestBody": _body(t),
                           "responses": _answer("200", "updated", t)}
    if rt.supports("delete"):
        type_ops["delete"] = {"operationId": f"conditionalDelete{t}", "tags": tag,
                              "parameters": [*_CONDITION, IF_MATCH],
                              "summary": f"conditional delete of a {t}", "responses": _answer("204", "deleted",
                                                                                              None)}
    if rt.supports("patch"):
        type_ops["patch"] = {"operationId": f"conditionalPatch{t}", "tags": tag,
                             "parameters": [*_CONDITION, IF_MATCH, PREFER_RETURN],
                             "summary": f"conditional patch of a {t}", "requestBody": _patch_body(),
                             "responses": _answer("200", "patched", t)}
    if type_ops:
        paths[f"/{t}"] = type_ops
    if rt.supports("history-type"):
        paths[f"/{t}/_history"] = {"get": {"operationId": f"historyType{t}", "tags": tag,
                                           "parameters": _history_params(),
                                           "responses": _answer("200", "history Bundle", "Bundle")}}
    paths.update(_validate_type_path(t))
    id_param = _path_param("id", f"logical id of the {t}")
    instance: dict[str, Any] = {"parameters": [id_param]}
    if rt.supports("read"):
        read = _answer("200", "current version (304 when the conditional read headers match)", t)
        if t == "Binary":  # ITI-68: the raw bytes, in their own media type, unless a FHIR format is asked
            read["200"]["content"]["*/*"] = {"schema": RAW_BYTES}
        instance["get"] = {"operationId": f"read{t}", "tags": tag, "parameters": [IF_NONE_MATCH, IF_MODIFIED_SINCE],
                           "responses": {**read, "304": {"description": "not modified"}}}
    if rt.supports("update"):
        instance["put"] = {"operationId": f"update{t}", "tags": tag, "requestBody": _body(t),
                           "parameters": [IF_MATCH, PREFER_RETURN],
                           "responses": _answer("200", "updated (201 when created)", t)}
    if rt.supports("patch"):
        instance["patch"] = {"operationId": f"patch{t}", "tags": tag, "requestBody": _patch_body(),
                             "parameters": [IF_MATCH, PREFER_RETURN], "responses": _answer("200", "patched", t)}
    if rt.supports("delete"):
        instance["delete"] = {"operationId": f"delete{t}", "tags": tag, "parameters": [IF_MATCH],
                              "responses": _answer("204", "deleted", None)}
    paths[f"/{t}/{{id}}"] = instance
    if rt.supports("history-instance"):
        paths[f"/{t}/{{id}}/_history"] = {"parameters": [id_param], "get": {
            "operationId": f"historyInstance{t}", "tags": tag, "parameters": _history_params(),
            "responses": _answer("200", "history Bundle", "Bundle")}}
    if rt.supports("vread"):
        paths[f"/{t}/{{id}}/_history/{{vid}}"] = {
            "parameters": [id_param, _path_param("vid", "version id")],
            "get": {"operationId": f"vread{t}", "tags": tag, "responses": _answer("200", "that version", t)}}
    paths[f"/{t}/{{id}}/$validate"] = {"parameters": [id_param, *_VALIDATE_QUERY], "get": {
        "operationId": f"validateStored{t}", "tags": tag, "summary": f"$validate the stored {t}",
        "responses": _answer("200", "verdict", "OperationOutcome")}, "post": {
        "operationId": f"validateInstance{t}", "tags": tag, "requestBody": {**_body(t), "required": False},
        "responses": _answer("200", "verdict", "OperationOutcome")}}
    if t == "Patient":
        query = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                 for n in ("start", "end", "_since", "_type", "_count")]
        paths["/Patient/{id}/$everything"] = {"parameters": [id_param], "get": {
            "operationId": "everythingPatient", "tags": tag, "parameters": query,
            "summary": "$everything: the patient's compartment and what it references (paged)",
            "responses": _answer("200", "searchset", "Bundle")}, "post": {
            "operationId": "everythingPatientPost", "tags": tag, "requestBody": _body("Parameters"),
            "responses": _answer("200", "searchset", "Bundle")}}
    return paths


_VALIDATE_QUERY = [{"name": "mode", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": ["create", "update", "delete", "profile"]}},
                   {"name": "profile", "in": "query", "required": False, "schema": {"type": "string"}}]


def _validate_type_path(t: str) -> dict[str, Any]:
    return {f"/{t}/$validate": {"post": {
        "operationId": f"validate{t}", "tags": [t], "requestBody": _body(t), "summary": f"$validate a {t}",
        "parameters": _VALIDATE_QUERY, "responses": _answer("200", "verdict", "OperationOutcome")}}}


def _patch_body() -> dict[str, Any]:
    """JSON Patch, FHIRPath Patch (a Parameters resource) in JSON or XML: :data:`PATCH_FORMATS`."""
    schemas = {FHIR_JSON: {"schema": _ref("Parameters")}, FHIR_XML: {"schema": XML_SCHEMA}}
    return {"required": True, "content": {media: schemas.get(media, {"schema": _ref("JSONPatch")})
                                          for media in PATCH_FORMATS}}


def _history_params() -> list[dict[str, Any]]:
    return [{"name": "_count", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            {"name": "_since", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"}}]


@lru_cache(maxsize=8)
def openapi_json(registry: SearchParameterRegistry, base_url: str, *, auth: bool = False,
                 audit: bool = False) -> bytes:
    """The serialised description, what ``GET /openapi.json`` answers: built once per registry, base URL and
    configuration (it depends on nothing else: the resource types and audit parameters are fixed at import)."""
    return orjson.dumps(openapi_document(registry, base_url, auth=auth, audit=audit))


_PUBLIC: list[dict[str, Any]] = []  # an operation's ``security`` override: no token needed
BEARER = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
          "description": "SMART App Launch access token (see /.well-known/smart-configuration)"}


@lru_cache(maxsize=8)
def openapi_document(registry: SearchParameterRegistry, base_url: str, *, auth: bool = False,
                     audit: bool = False) -> dict[str, Any]:
    """The whole description; ``base_url`` is the public FHIR base (``FHIR_BASE_URL``); ``auth``: bearer
    tokens required (``FHIR_AUTH=jwt``); ``audit``: the audit trail is on, so AuditEvent is served.

    Built once per arguments and shared between callers: read it, never modify it (copy it first)."""
    types = types_served(audit=audit)
    validate_only = validate_only_types({rt.name for rt in types})
    paths: dict[str, Any] = {
        "/metadata": {"get": {"operationId": "capabilities", "tags": ["system"], "security": _PUBLIC,
                              "responses": _answer("200", "CapabilityStatement", None)}},
        "/$versions": {"get": {"operationId": "versions", "tags": ["system"], "security": _PUBLIC,
                               "summary": "FHIR versions served (CapabilityStatement-versions)",
                               "responses": _answer("200", "versions", "Parameters")}},
        "/": {"post": {"operationId": "transaction", "tags": ["system"], "summary": "transaction or batch",
                       "parameters": [PREFER_RETURN], "requestBody": _body("TransactionBundle"),
                       "responses": _answer("200", "transaction-response or batch-response", "Bundle")}},
        "/_history": {"get": {"operationId": "historySystem", "tags": ["system"], "parameters": _history_params(),
                              "responses": _answer("200", "history Bundle", "Bundle")}},
    }
    if auth:
        paths["/.well-known/smart-configuration"] = {"get": {
            "operationId": "smartConfiguration", "tags": ["system"], "security": _PUBLIC,
            "responses": {"200": {"description": "SMART App Launch v2 configuration",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    for rt in types:
        paths.update(_type_paths(rt, registry))
    for t in validate_only:
        paths.update(_validate_type_path(t))
    components = _components(types)
    for t in validate_only:
        components["schemas"].setdefault(t, _resource_schema(t, f"A FHIR R4 {t}: validated, never stored"))
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "fhir-server FHIR R4 API", "version": __version__,
                 "description": "FHIR R4 (4.0.1) REST API; the CapabilityStatement at /metadata is authoritative. "
                                "Every 4xx answer is an OperationOutcome."},
        "servers": [{"url": base_url}],
        "tags": [{"name": "system"}, *({"name": rt.name, "description": rt.documentation} for rt in types),
                 *({"name": t, "description": "$validate only"} for t in validate_only)],
        "paths": paths,
        "components": components,
    }
    if auth:
        components["securitySchemes"] = {"bearer": BEARER}
        document["security"] = [{"bearer": []}]
    return document
