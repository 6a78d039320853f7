"""Hypothesis strategies for FHIR-shaped hostile HTTP requests, and the one robustness oracle.

Shared by ``tests/robustness/test_fuzz.py`` (a small count in CI) and ``bench/fuzz.py`` (≥ 10,000).
Requests look enough like FHIR to get past the first checks and reach the deep code: resources of the
served types with real element names holding wrong types, deep nesting, huge or odd unicode strings and
numbers where strings go; Bundles with random entries; JSON Patch and FHIRPath Patch bodies; XML bodies;
search query strings built from the real parameters with modifiers, prefixes, chains and ``_has``.

The oracle (:func:`problem`): never a 5xx, and every 4xx carries an OperationOutcome.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from hypothesis import strategies as st

from fhir_server.formats import to_xml
from fhir_server.registry import RESOURCE_TYPES
from search.registry import SearchParameterRegistry

# the XML writer logs each element it cannot express; generated resources have many
logging.getLogger("fhir_server.formats").setLevel(logging.ERROR)
TYPES = sorted(RESOURCE_TYPES)
SEARCH_TYPES = [t for t, rt in RESOURCE_TYPES.items() if rt.searchable]
#: Resources created before fuzzing so reads, updates and patches also hit existing instances.
SEED_IDS = ("fz1", "fz2")
_REGISTRY = SearchParameterRegistry.load_default()

ELEMENTS: dict[str, list[str]] = {
    "Patient": ["identifier", "active", "name", "telecom", "gender", "birthDate", "deceasedBoolean",
                "deceasedDateTime", "address", "maritalStatus", "multipleBirthInteger", "contact",
                "generalPractitioner", "managingOrganization", "link", "communication"],
    "DocumentReference": ["masterIdentifier", "identifier", "status", "docStatus", "type", "category", "subject",
                          "date", "author", "authenticator", "custodian", "relatesTo", "description",
                          "securityLabel", "content", "context"],
    "Immunization": ["identifier", "status", "vaccineCode", "patient", "occurrenceDateTime", "occurrenceString",
                     "recorded", "primarySource", "lotNumber", "expirationDate", "site", "doseQuantity",
                     "performer", "note", "protocolApplied"],
    "List": ["identifier", "status", "mode", "title", "code", "subject", "date", "source", "entry", "emptyReason"],
    "Binary": ["contentType", "securityContext", "data"],
    "AuditEvent": ["type", "subtype", "action", "recorded", "outcome", "agent", "source", "entity"],
}
COMMON = ["id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"]

# Text: any unicode except lone surrogates (not encodable as UTF-8), plus the classics.
_CHARS = st.characters(exclude_categories=["Cs"])
texts = st.one_of(
    st.text(_CHARS, max_size=40),
    st.sampled_from(["", " ", "null", "true", "0", "-1", "1e309", "Patient/", "Patient/../x", "urn:uuid:",
                     "%00", "\u0000", "\u202e", "é\u0301",
                     "\U0001d518\U0001d52b\U0001d526", "<div>", "]]>", "${x}", "\\", "a|b|c", "a,b",
                     "2024-13-45", "2024-02-30T25:61:00Z", "--", "*", ":", "$", "|", "'\"", "\ufeff"]),
    st.integers(min_value=1000, max_value=200_000).map(lambda n: "x" * n),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(texts, inner, max_size=4)),
                           max_leaves=12)


def _nest(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"extension": leaf}
    return leaf


deep_values = st.builds(_nest, st.integers(min_value=30, max_value=400), scalars, st.booleans())

# Values shaped like the FHIR datatypes usually found in these elements
typed_values = st.one_of(
    st.builds(lambda s, v: [{"system": s, "value": v}], texts, texts),  # Identifier
    st.builds(lambda f, g: [{"family": f, "given": [g]}], texts, texts),  # HumanName
    st.builds(lambda r: {"reference": r}, st.one_of(texts, st.sampled_from(
        ["Patient/fz1", "Patient/nope", "#c1", "urn:uuid:00000000-0000-0000-0000-000000000000",
         "http://elsewhere/fhir/Patient/1", "Patient?identifier=a|b"]))),  # Reference
    st.builds(lambda s, c: {"coding": [{"system": s, "code": c}]}, texts, texts),  # CodeableConcept
    st.builds(lambda d: [{"attachment": {"contentType": "text/plain", "data": d, "size": 3, "hash": d}}],
              st.one_of(texts, st.just("aGVsbG8="))),  # content
    st.sampled_from(["current", "superseded", "entered-in-error", "male", "completed", "2024-01-01",
                     "2024-01-01T10:00:00+01:00", "--01"]),
)
element_values = st.one_of(typed_values, json_values, deep_values)


def _template(rtype: str, s1: str, s2: str, date: str) -> dict[str, Any]:
    """A resource that validates, carrying the drawn strings and date where strings and dates go."""
    attachment = {"contentType": "text/plain", "data": "aGVsbG8=", "title": s2}
    templates: dict[str, dict[str, Any]] = {
        "Patient": {"resourceType": "Patient", "name": [{"family": s1, "given": [s2]}], "gender": "female",
                    "birthDate": date, "identifier": [{"system": "urn:fz", "value": s2}]},
        "DocumentReference": {"resourceType": "DocumentReference", "status": "current", "description": s1,
                              "subject": {"reference": "Patient/fz1"}, "date": date + "T10:00:00Z",
                              "content": [{"attachment": attachment}]},
        "Immunization": {"resourceType": "Immunization", "status": "completed", "lotNumber": s1,
                         "vaccineCode": {"coding": [{"system": "urn:fz", "code": s2}], "text": s1},
                         "patient": {"reference": "Patient/fz1"}, "occurrenceDateTime": date},
        "List": {"resourceType": "List", "status": "current", "mode": "working", "title": s1,
                 "entry": [{"item": {"reference": "DocumentReference/fz1"}}]},
        "Binary": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
    }
    return templates.get(rtype, {"resourceType": rtype, "text": {"status": "generated", "div": s1}})


dates = st.one_of(st.dates().map(str), st.sampled_from(["2024", "2024-02", "0001-01-01", "9999-12-31"]))


@st.composite
def resources(draw: st.DrawFn, type_: str | None = None) -> dict[str, Any]:
    """A resource of a served type (or, sometimes, of no or an unknown type) with hostile element values.

    Half of them start from a valid template, so hostile strings and dates also reach storage and indexing.
    """
    rtype = type_ or draw(st.one_of(st.sampled_from(TYPES), st.sampled_from(["Observation", "", "patient"]),
                                    texts))
    if draw(st.booleans()):
        return _template(rtype, draw(texts), draw(texts), draw(dates))
    names = ELEMENTS.get(rtype, []) + COMMON
    body: dict[str, Any] = {} if draw(st.integers(0, 30)) == 0 else {"resourceType": rtype}
    for name in draw(st.lists(st.sampled_from(names) | texts, max_size=6, unique=True)):
        body[name] = draw(element_values)
    if draw(st.booleans()):
        body["resourceType"] = draw(st.one_of(st.just(rtype), scalars))
    return body


@st.composite
def bundles(draw: st.DrawFn) -> dict[str, Any]:
    entries = []
    for _ in range(draw(st.integers(0, 5))):
        entry: dict[str, Any] = {}
        if draw(st.booleans()):
            entry["fullUrl"] = draw(st.one_of(st.just("urn:uuid:11111111-1111-1111-1111-111111111111"), texts))
        if draw(st.integers(0, 3)):
            entry["resource"] = draw(resources())
        method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", ""]) | scalars)
        url = draw(st.one_of(queries().map(lambda q: f"{q[0]}?{q[1]}"), st.sampled_from(
            ["Patient", "Patient/fz1", "Patient/fz1/_history/1", "Patient/fz1/_history/x", "Patient?identifier=a|b",
             "DocumentReference/fz1", "Binary/fz1", "metadata", "", "/", "Patient/"]), texts))
        entry["request"] = draw(st.one_of(st.just({"method": method, "url": url}), json_values,
                                          st.just({"method": method, "url": url, "ifMatch": "W/\"1\"",
                                                   "ifNoneExist": "identifier=a|b"})))
        entries.append(draw(st.one_of(st.just(entry), json_values)))
    return {"resourceType": "Bundle", "type": draw(st.sampled_from(["transaction", "batch", "collection", "x"])),
            "entry": draw(st.one_of(st.just(entries), json_values))}


_MODIFIERS = ["", ":exact", ":contains", ":missing", ":not", ":text", ":above", ":below", ":in", ":not-in",
              ":of-type", ":identifier", ":Patient", ":iterate", ":recurse", ":bogus", ":"]
_PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz"]


@st.composite
def query_values(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(_PREFIXES))
    body = draw(st.one_of(texts, st.sampled_from(
        ["2024", "2024-01", "2024-01-01", "2024-01-01T10:00", "2024-01-01T10:00:00Z", "1e5", "-3.2", "true",
         "http://loinc.org|1234-5", "|x", "x|", "a\\,b", "a$b", "Patient/fz1", "fz1", "99999999999999999999",
         "ge2024-01-01T00:00:00+99:00"])))
    parts = [head + body, *draw(st.lists(texts, max_size=2))]
    return ",".join(parts)


@st.composite
def query_names(draw: st.DrawFn, type_: str) -> str:
    codes = list(_REGISTRY.for_type(type_)) or ["_id"]
    code = draw(st.sampled_from([*codes, "_id", "_lastUpdated", "_text", "_content", "_list", "_count", "_sort",
                                         "_total", "_summary", "_elements", "_include", "_revinclude", "_has",
                                         "_filter", "_format", "_cursor"]) | texts)
    name = code + draw(st.sampled_from(_MODIFIERS))
    kind = draw(st.integers(0, 5))
    if kind == 1:  # chain
        name += "." + ".".join(draw(st.lists(st.sampled_from(["name", "identifier", "subject", "family", "x"]),
                                             min_size=1, max_size=5)))
    elif kind == 2:  # reverse chain, maybe nested
        name = ":".join(["_has", draw(st.sampled_from(SEARCH_TYPES) | texts),
                         draw(st.sampled_from(["subject", "patient", "item", "x"])),
                         draw(st.sampled_from(["status", "code", "_has:List:item:code", "name"]) | texts)])
    return name


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, str]:
    """(type, urlencoded query) for a search."""
    type_ = draw(st.sampled_from(SEARCH_TYPES))
    pairs = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(query_names(type_))
        value = draw(st.one_of(query_values(), st.sampled_from(["*", "Patient:subject", "DocumentReference:subject",
                                                                "-date,_id", "0", "-1", "count", "accurate"])))
        pairs.append(f"{quote(name, safe=':.$')}={quote(value, safe=',|:$')}")
    if draw(st.integers(0, 10)) == 0:  # raw, unencoded junk
        pairs.append(draw(st.text(string.printable, max_size=30)))
    return type_, "&".join(pairs)


@dataclass
class FuzzRequest:
    method: str
    path: str  # relative to the FHIR base, with its query string
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def describe(self) -> str:
        body = "" if self.body is None else f" body={self.body[:600]!r}{'...' if len(self.body) > 600 else ''}"
        return f"{self.method} {self.path[:600]} headers={self.headers}{body}"


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # nested deeper than orjson writes (255): the standard library does
        return json.dumps(value, ensure_ascii=False).encode()


def _xml(resource: dict[str, Any]) -> bytes:
    """The resource as FHIR XML when the writer can express it, else hostile raw XML."""
    try:
        return to_xml(resource)
    except Exception:  # the writer only takes well-formed resources: fall back to a hand-made document
        rtype = resource.get("resourceType")
        name = rtype if isinstance(rtype, str) and rtype.isidentifier() else "Patient"
        return (f'<{name} xmlns="http://hl7.org/fhir"><id value="x"/><foo value="{len(resource)}"/>'
                f"</{name}>").encode()


_HOSTILE_XML = [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Patient xmlns="http://hl7.org/fhir"/>',
    b'<Patient xmlns="http://hl7.org/fhir">' + b"<name>" * 300 + b"</name>" * 300 + b"</Patient>",
    b"<Patient><name><family value='x'/></name></Patient>",
    b'<Patient xmlns="http://hl7.org/fhir"><birthDate value="not-a-date"/></Patient>',
    b'<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/><entry><resource/></entry></Bundle>',
    b'<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="http://hl7.org/fhir"/>',
    b"<", b"\xff\xfe<\x00", b"",
]

_CTYPES = ["application/fhir+json", "application/json", "application/fhir+xml", "application/xml", "text/plain",
           "application/json-patch+json", "application/x-www-form-urlencoded", "",
           "application/fhir+json; charset=latin1"]


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, values in (("Accept", ["application/fhir+xml", "application/fhir+json;q=0.1, */*", "text/html",
                                    "image/png", "application/fhir+xml;q=abc"]),
                        ("Prefer", ["return=minimal", "return=OperationOutcome", "handling=strict", "respond-async",
                                    "return="]),
                        ("If-Match", ['W/"1"', "1", "*", "W/\"x\"", '"99999999999999999999"']),
                        ("If-None-Exist", ["identifier=a|b", "name=x", "_id=fz1", "&&", "identifier="]),
                        ("If-None-Match", ['W/"1"', "*"]),
                        ("If-Modified-Since", ["Mon, 01 Jan 2024 00:00:00 GMT", "garbage"])):
        if draw(st.integers(0, 5)) == 0:
            out[key] = draw(st.sampled_from(values) | st.text(string.printable.strip(), max_size=20))
    return out


def _pick_id(draw: st.DrawFn) -> str:
    return draw(st.one_of(st.sampled_from(SEED_IDS), st.sampled_from(SEED_IDS),
                          st.from_regex(r"\A[A-Za-z0-9\-.]{1,64}\Z"),
                          st.text(string.ascii_letters + "%$_:~", min_size=1, max_size=80).map(quote)))


@st.composite
def requests(draw: st.DrawFn) -> FuzzRequest:
    """One hostile request to any endpoint."""
    kind = draw(st.sampled_from(["create", "update", "patch-json", "patch-fhirpath", "validate", "bundle",
                                 "search-get", "search-post", "read", "conditional", "history", "xml"]))
    type_ = draw(st.sampled_from(TYPES * 6 + ["Observation", "metadata", "_history"]))
    h = draw(headers())
    id_ = _pick_id(draw)
    fmt = draw(st.sampled_from(["", "", "", "?_format=xml", "?_format=json&_pretty=true", "?_format=bogus"]))
    if kind == "create":
        h["Content-Type"] = draw(st.sampled_from(_CTYPES[:2]) | st.sampled_from(_CTYPES))
        return FuzzRequest("POST", f"/{type_}{fmt}", h, _json(draw(resources(type_) | resources())))
    if kind == "update":
        h["Content-Type"] = "application/fhir+json"
        resource = draw(resources(type_))
        if draw(st.booleans()):
            resource["id"] = id_
        return FuzzRequest("PUT", f"/{type_}/{id_}{fmt}", h, _json(resource))
    if kind == "patch-json":
        ops = draw(st.lists(st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
             "path": st.sampled_from(["/status", "/name/0/family", "/id", "/resourceType", "/meta", "/-", "",
                                      "/content/0/attachment/url", "/securityLabel/-", "/a~1b"]) | texts},
            optional={"value": element_values, "from": st.sampled_from(["/name", "/x"])}), max_size=4))
        body = draw(st.one_of(st.just(ops), json_values))
        h["Content-Type"] = "application/json-patch+json"
        return FuzzRequest("PATCH", f"/{type_}/{id_}", h, _json(body))
    if kind == "patch-fhirpath":
        part = st.fixed_dictionaries({"name": st.sampled_from(["type", "path", "name", "value", "index", "source",
                                                               "destination", "x"])},
                                     optional={"valueCode": st.sampled_from(["add", "insert", "delete", "replace",
                                                                             "move", "x"]) | texts,
                                               "valueString": st.sampled_from(
                                                   ["Patient.name", "Patient.name[0]", "Patient.name.where(use='x')",
                                                    "DocumentReference.status", "Patient", "first()", ")("]) | texts,
                                               "valueInteger": st.integers(-3, 3), "valueBoolean": st.booleans()})
        params = {"resourceType": "Parameters",
                  "parameter": draw(st.lists(st.fixed_dictionaries({"name": st.just("operation")},
                                                                   optional={"part": st.lists(part, max_size=5)}),
                                             max_size=3) | json_values)}
        h["Content-Type"] = "application/fhir+json"
        path = f"/{type_}/{id_}" if draw(st.booleans()) else f"/{type_}?identifier={quote(draw(texts))}"
        return FuzzRequest("PATCH", path, h, _json(params))
    if kind == "validate":
        h["Content-Type"] = "application/fhir+json"
        mode = draw(st.sampled_from(["", "?mode=create", "?mode=update", "?mode=delete", "?mode=x",
                                     "?profile=http://x", "?profile=" + quote(draw(texts))]))
        path = f"/{type_}/$validate{mode}" if draw(st.booleans()) else f"/{type_}/{id_}/$validate{mode}"
        return FuzzRequest("POST", path, h, _json(draw(resources(type_) | bundles())))
    if kind == "bundle":
        h["Content-Type"] = "application/fhir+json"
        return FuzzRequest("POST", "/", h, _json(draw(bundles())))
    if kind == "search-get":
        t, q = draw(queries())
        return FuzzRequest("GET", f"/{t}?{q}", h)
    if kind == "search-post":
        t, q = draw(queries())
        h["Content-Type"] = draw(st.sampled_from(["application/x-www-form-urlencoded", "application/json"]))
        return FuzzRequest("POST", f"/{t}/_search", h, q.encode())
    if kind == "read":
        suffix = draw(st.sampled_from(["", "/_history", "/_history/1", "/_history/0", "/_history/x",
                                       "/_history/99999999999999999999", "/_history?_count=-1",
                                       "/_history?_since=garbage", "/$validate"]))
        method = draw(st.sampled_from(["GET", "GET", "DELETE", "HEAD", "OPTIONS", "POST"]))
        return FuzzRequest(method, f"/{type_}/{id_}{suffix}", h)
    if kind == "conditional":
        _, q = draw(queries())
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH"]))
        h["Content-Type"] = "application/fhir+json"
        body = None if method == "DELETE" else _json(draw(resources(type_)))
        return FuzzRequest(method, f"/{type_}?{q}", h, body)
    if kind == "history":
        q = draw(st.sampled_from(["", "_count=0", "_count=-5", "_count=abc", "_since=2024", "_since=x",
                                  "_cursor=" + quote(draw(texts)), "_at=2024"]))
        path = draw(st.sampled_from(["/_history", f"/{type_}/_history"]))
        return FuzzRequest("GET", f"{path}?{q}", h)
    # XML bodies on create, update, validate and transaction
    h["Content-Type"] = draw(st.sampled_from(["application/fhir+xml", "application/xml", "text/xml"]))
    body = draw(st.one_of(resources(type_).map(_xml), bundles().map(_xml), st.sampled_from(_HOSTILE_XML)))
    path, method = draw(st.sampled_from([(f"/{type_}", "POST"), (f"/{type_}/{id_}", "PUT"), ("/", "POST"),
                                         (f"/{type_}/$validate", "POST"), (f"/{type_}/{id_}", "PATCH")]))
    return FuzzRequest(method, path, h, body)


def send(client: httpx.Client, req: FuzzRequest) -> httpx.Response | None:
    """The answer, or None when the request cannot even be put on the wire (httpx refuses the URL or a header)."""
    try:
        return client.request(req.method, req.path, headers=req.headers, content=req.body)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return None


def problem(status: int, content_type: str, content: bytes, method: str = "GET") -> str | None:
    """What is wrong with this answer, or None: a 5xx, or a 4xx without an OperationOutcome (HEAD: no body)."""
    text = content[:500].decode("utf-8", "replace")
    if status >= 500:
        return f"{status}: {text}"
    if 400 <= status < 500 and method.upper() != "HEAD":
        if "xml" in content_type:
            return None if b"<OperationOutcome" in content else f"{status} without an OperationOutcome: {text}"
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            return f"{status} not JSON ({content_type}): {text}"
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome" or not body.get("issue"):
            return f"{status} without an OperationOutcome: {text}"
    return None


def problem_of(resp: httpx.Response) -> str | None:
    return problem(resp.status_code, resp.headers.get("content-type", ""), resp.content, resp.request.method)


def seed(client: httpx.Client) -> None:
    """Existing instances for reads, updates, patches and $validate to work on."""
    ct = {"Content-Type": "application/fhir+json"}
    for id_ in SEED_IDS:
        client.put(f"Patient/{id_}", headers=ct,
                   content=_json({"resourceType": "Patient", "id": id_, "name": [{"family": "Fuzz"}],
                                  "identifier": [{"system": "urn:fz", "value": id_}]}))
        client.put(f"DocumentReference/{id_}", headers=ct, content=_json({
            "resourceType": "DocumentReference", "id": id_, "status": "current",
            "subject": {"reference": f"Patient/{id_}"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}))
        client.put(f"Binary/{id_}", headers=ct,
                   content=_json({"resourceType": "Binary", "id": id_, "contentType": "text/plain",
                                  "data": "aGVsbG8="}))
