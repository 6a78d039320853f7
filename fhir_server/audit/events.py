"""The AuditEvent resources (IHE BALP "RESTful" events) of one audited request.

Three steps: on the request path :func:`facts` reduces an :class:`AuditRecord` to the few JSON values
the events need (the answered resource is read only for the patients it names, a Bundle only for its
entries' summaries), cheap enough to run before every answer, and the journal keeps them; off the
request path :func:`event_facts` splits them into one set of facts per AuditEvent (with a store look-up
for a refused read, so the probed patient finds the attempt in their own listing), which the audit
table stores; on read, :func:`render` turns stored facts into the FHIR AuditEvent.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fhir_common.types import Resource
from fhir_server.security.policy import PATIENT_COMPARTMENT, compartment_patients
from fhir_server.security.tokens import Principal
from fhir_server.storage import format_instant
from fhir_server.storage.audit import AGENT, ENTITY

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
              "display": "RESTful Operation"}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

# restful-interaction → AuditEvent.action (BALP: queries and operations are "E"xecute)
ACTIONS = {"read": "R", "vread": "R", "history-instance": "R", "history-type": "R", "history-system": "R",
           "capabilities": "R", "search-type": "E", "operation": "E", "transaction": "E", "batch": "E",
           "create": "C", "update": "U", "patch": "U", "delete": "D"}
PATIENT_PARAMS = frozenset({"patient", "subject"})


@dataclass
class AuditRecord:
    """What the request path captures; everything else is derived off the request path."""

    recorded_us: int
    method: str
    path: str
    query: str
    status: int
    path_params: dict[str, str]
    principal: Principal | None
    address: str | None
    content: Any = None  # the resource answered or written (bytes or dict), when the route set it
    bundle: tuple[Resource, Resource] | None = None  # (request, response) Bundles
    location: str | None = None  # the answer's Location header (the id a create gave)
    request_id: str | None = None  # X-Request-ID (the client's or generated): joins the trail to the logs
    acted: bool = False  # the answer came from a stored version (read or written), not a no-op on an absent id


def params_from_path(path: str) -> dict[str, str]:
    """Route parameters of a request that never reached the router (e.g. a 401 from authentication)."""
    parts = [p for p in path.removeprefix("/fhir").split("/") if p]
    params = dict(zip(("type", "id"), [p for p in parts[:2] if not p.startswith(("_", "$"))], strict=False))
    if len(parts) == 4 and parts[2] == "_history":
        params["vid"] = parts[3]
    return params


def interaction(method: str, path: str, params: dict[str, str]) -> str:
    """The restful-interaction code of a request, from its route."""
    if path.endswith("/metadata"):
        return "capabilities"
    if "$" in path:
        return "operation"
    type_, id_ = params.get("type"), params.get("id")
    if "vid" in params:
        return "vread"
    if path.endswith("/_history"):
        return "history-instance" if id_ else "history-type" if type_ else "history-system"
    if path.endswith("/_search"):
        return "search-type"
    if not type_:
        return "transaction" if method == "POST" else "unknown"
    by_method = {"GET": "read" if id_ else "search-type", "POST": "create", "PUT": "update",
                 "DELETE": "delete", "PATCH": "patch"}
    return by_method.get(method, "unknown")


def outcome(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (client error, denial), 8 serious failure."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def patients_of(resource: Resource) -> set[str]:
    """``Patient/x`` of the patients whose compartment holds a resource (the access policy's own reading);
    none for an AuditEvent, which is about what it records, not in whose compartment it is stored."""
    if resource.get("resourceType") == "AuditEvent":
        return set()
    return {f"Patient/{p}" for p in compartment_patients(resource)}


def patients_of_query(type_: str | None, query: str) -> set[str]:
    """Patients a search names (``patient=``, ``subject=``, ``Patient?_id=``)."""
    out = set()
    for name, value in parse_qsl(query, keep_blank_values=False):
        base = name.split(":", 1)[0]
        if base in PATIENT_PARAMS or (type_ == "Patient" and base == "_id"):
            for v in value.split(","):
                v = v.strip()
                if v.startswith("Patient/") or (v and "/" not in v and (base == "patient" or type_ == "Patient")):
                    out.add(v if v.startswith("Patient/") else f"Patient/{v}")
    return out


def _load(content: Any) -> Resource | None:
    if isinstance(content, bytes | bytearray):
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None
    return content if isinstance(content, dict) else None


_RESOURCE_CODES = frozenset({"read", "vread", "create", "update", "patch", "delete"})


def _who(p: Principal | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"sub": p.subject, "iss": next((v for k, v in p.claims if k == "iss"), None), "user": p.fhir_user,
            "client": p.client_id, "patient": p.patient}


def _target_of_location(location: str | None) -> str | None:
    parts = [p for p in (location or "").split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def facts(rec: AuditRecord) -> dict[str, Any]:
    """What the journal keeps of a request: JSON values only, everything :func:`event_facts` needs."""
    code = interaction(rec.method, rec.path, rec.path_params)
    type_, id_ = rec.path_params.get("type"), rec.path_params.get("id")
    target = f"{type_}/{id_}" if type_ and id_ else None
    if target is None and rec.status < 400 and code == "create":
        target = _target_of_location(rec.location)
    patients: set[str] = set()
    answered = False  # whose record it is was read from the answer
    if rec.status < 400 and code in ("read", "vread") and type_ == "Patient" and id_ and rec.content is not None:
        patients.add(f"Patient/{id_}")  # what patients_of would find, without parsing the answer
        answered = True
    elif rec.status < 400 and code in _RESOURCE_CODES and type_ in PATIENT_COMPARTMENT:
        content = _load(rec.content)  # a Binary or a searchset is never parsed here
        if content is not None and content.get("resourceType") == type_:
            patients |= patients_of(content)
            answered = True
            if target is None and isinstance(content.get("id"), str):
                target = f"{type_}/{content['id']}"
    out: dict[str, Any] = {"t": rec.recorded_us, "code": code, "s": rec.status, "w": _who(rec.principal),
                           "ip": rec.address, "tgt": target, "pts": sorted(patients)}
    if rec.request_id:
        out["rid"] = rec.request_id
    if not answered and target is not None and type_ in PATIENT_COMPARTMENT and (rec.status >= 400 or rec.acted):
        # refused, failed or bodiless: the writer reads whose record it is from the store. Not after a 2xx
        # no-op (DELETE or $validate of an unknown or hidden id): that answer says nothing of a stored
        # resource, and its trace must not either (it would name a hidden document's patient)
        out["look"] = True
    if type_:
        out["type"] = type_
    if code in ("search-type", "history-type", "history-system", "history-instance", "operation") or (
            rec.query and code in ("update", "delete", "patch")):
        out["q"] = rec.query
    if code == "transaction" and rec.bundle is not None:
        request, response = rec.bundle
        kind = str(request.get("type") or "transaction")
        out["code"] = kind if kind in ("transaction", "batch") else "transaction"
        if rec.status < 400:
            out["entries"] = _entry_facts(request, response)
    return out


def plain_facts(rec: AuditRecord) -> dict[str, Any]:
    """The facts of a request without anything read from its bodies (when :func:`facts` failed)."""
    out = {"t": rec.recorded_us, "code": "unknown", "s": rec.status, "w": _who(rec.principal), "ip": rec.address,
           "tgt": None, "pts": [], "d": f"{rec.method} {rec.path}"}
    if rec.request_id:
        out["rid"] = rec.request_id
    return out


def _entry_facts(request: Resource, response: Resource) -> list[list[Any]]:
    """[method, url, location, status, patients] of each Bundle entry."""
    out: list[list[Any]] = []
    for req_entry, resp_entry in zip(request.get("entry") or [], response.get("entry") or [], strict=False):
        if not isinstance(req_entry, dict) or not isinstance(resp_entry, dict):
            continue
        req, resp = req_entry.get("request"), resp_entry.get("response")
        req, resp = (req if isinstance(req, dict) else {}), (resp if isinstance(resp, dict) else {})
        patients: set[str] = set()
        for res in (req_entry.get("resource"), resp_entry.get("resource")):
            if isinstance(res, dict):
                patients |= patients_of(res)
        out.append([str(req.get("method", "")).upper(), str(req.get("url", "")), str(resp.get("location") or ""),
                    str(resp.get("status", "0")), sorted(patients)])
    return out


def _agent(ef: dict[str, Any]) -> dict[str, Any]:
    agent: dict[str, Any] = {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                             "requestor": True}
    p = ef.get("w")
    if p is None:
        agent["who"] = {"display": "anonymous"}
    else:
        iss, user = p.get("iss"), p.get("user")
        who: dict[str, Any] = {"identifier": {"system": str(iss), "value": p["sub"]} if iss else
                               {"value": p["sub"]}}
        # a Patient agent is an identifier only: `patient=` must not match what a patient did to others
        if user and not user.startswith("Patient/"):
            who["reference"] = user
        elif user:
            who["display"] = user
        agent["who"] = who
        if p.get("client"):
            agent["altId"] = p["client"]
    if ef.get("ip"):
        agent["network"] = {"address": ef["ip"], "type": "2"}
    return agent


SOURCE = {"observer": {"display": "fhir-server"},
          "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]}


def _resource_entity(ref: str) -> dict[str, Any]:
    return {"what": {"reference": ref}, "type": {"system": ENTITY_TYPE, "code": "2"},
            "role": {"system": OBJECT_ROLE, "code": "4"}}


def _patient_entity(ref: str) -> dict[str, Any]:
    return {"what": {"reference": ref}, "type": {"system": ENTITY_TYPE, "code": "1"},
            "role": {"system": OBJECT_ROLE, "code": "1"}}


def _entities(target: str | None, patients: list[str], query: str | None) -> list[dict[str, Any]]:
    out = [_resource_entity(target)] if target and target not in patients else []
    out += [_patient_entity(p) for p in patients]
    if query is not None:
        out.append({"type": {"system": ENTITY_TYPE, "code": "2"}, "role": {"system": OBJECT_ROLE, "code": "24"},
                    "query": base64.b64encode(query.encode()).decode("ascii")})
    return out


# -- one AuditEvent's facts: what the audit table stores, and what it is rendered from ------------------
#
# {"v": 1, "t": recorded µs, "code": restful-interaction, "s": HTTP status, "w": who (or None), "ip": address,
#  "tgt": "Type/id" (or None), "pts": ["Patient/x", ...] sorted, "q": query (optional), "d": detail (optional),
#  "rid": the request's X-Request-ID (optional; one value for the events of one request)}
#
# Why facts and not the AuditEvent JSON: every request writes a record and almost none is ever read, so
# the FHIR rendering (about 1.1 kB and 10 µs per record) is done on read; the stored facts are about a
# quarter of the size, which at billions of records a year is most of the trail's disk and I/O.
FACTS_VERSION = 1


def event_facts(f: dict[str, Any], lookup: Any = None) -> list[dict[str, Any]]:
    """The AuditEvents of one request's :func:`facts`: one for the request, plus one per Bundle entry.

    ``lookup(type, id)`` gives the stored resource when the answer did not carry it (denied or failed
    reads), so the patient whose data was probed finds the attempt in their own listing.
    """
    code, status, type_ = str(f["code"]), int(f["s"]), f.get("type")
    target: str | None = f.get("tgt")
    patients: set[str] = set(f.get("pts") or ())
    if f.get("look") and target is not None and lookup is not None:
        stored = lookup(type_, target.partition("/")[2])
        if stored is not None:
            patients |= patients_of(stored)
    query: str | None = f.get("q")
    if query is not None:
        patients |= patients_of_query(type_, query)
    who = f.get("w")
    if code == "search-type" and who and who.get("patient"):
        patients.add(f"Patient/{who['patient']}")  # the compartment filter named it
    shared = {"v": FACTS_VERSION, "t": f["t"], "w": who, "ip": f.get("ip")}
    if f.get("rid"):
        shared["rid"] = f["rid"]
    first = {**shared, "code": code, "s": status, "tgt": target, "pts": sorted(patients)}
    if query is not None:
        first["q"] = query
    if f.get("d"):
        first["d"] = f["d"]
    out = [first]
    for method, url, location, status_line, entry_patients in f.get("entries") or ():
        out.append(_entry_facts_of(shared, method, url, location, status_line, set(entry_patients)))
    return out


def _entry_facts_of(shared: dict[str, Any], method: str, url: str, location: str, status_line: str,
                    patients: set[str]) -> dict[str, Any]:
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    params = {"type": parts[0]} if parts else {}
    if len(parts) > 1:
        params["id"] = parts[1]
    code = interaction(method, "/" + path, params)
    target = _target_of_location(location) or ("/".join(parts[:2]) if len(parts) > 1 else None)
    if query:
        patients |= patients_of_query(params.get("type"), query)
    try:
        status = int(status_line.split()[0])
    except (ValueError, IndexError):
        status = 0
    out = {**shared, "code": code, "s": status, "tgt": target, "pts": sorted(patients), "d": f"{method} {url}"}
    if query and method == "GET":
        out["q"] = query
    return out


def columns(ef: dict[str, Any]) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """(action, outcome, subtype, (kind, reference) pairs) of an AuditEvent's facts: what the table indexes.
    The references are exactly the ``entity.what`` and ``agent.who`` references :func:`render` writes."""
    code, target, patients = str(ef["code"]), ef.get("tgt"), ef.get("pts") or []
    refs = [(ENTITY, target)] if target and target not in patients else []
    refs += [(ENTITY, p) for p in patients]
    user = (ef.get("w") or {}).get("user")
    if user and not user.startswith("Patient/"):
        refs.append((AGENT, user))
    return (ACTIONS.get(code, "E"), outcome(int(ef["s"])), code[:32],
            tuple((k, r) for k, r in refs if isinstance(r, str) and len(r) <= 255))


def render(ef: dict[str, Any], id_: str) -> Resource:
    """The AuditEvent (IHE BALP RESTful event) of stored facts."""
    code, status, recorded = str(ef["code"]), int(ef["s"]), format_instant(int(ef["t"]))
    event: Resource = {
        "resourceType": "AuditEvent",
        "id": id_,
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": EVENT_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": code}],
        "action": ACTIONS.get(code, "E"),
        "recorded": recorded,
        "outcome": outcome(status),
        "outcomeDesc": f"HTTP {status} {ef.get('d') or ''}".strip(),
        "agent": [_agent(ef)],
        "source": SOURCE,
    }
    entities = _entities(ef.get("tgt"), list(ef.get("pts") or ()), ef.get("q"))
    if ef.get("rid"):  # IHE BALP: the transport's request id is an entity of type XrequestId
        entities.append({"what": {"identifier": {"value": str(ef["rid"])}},
                         "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"}})
    if entities:
        event["entity"] = entities
    return event


def stored_event(content: bytes, id_: str) -> Resource:
    """The AuditEvent of a stored row (rows written before facts were stored hold the AuditEvent itself)."""
    data: Resource = orjson.loads(content)
    return data if "resourceType" in data else render(data, id_)
