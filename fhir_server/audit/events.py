"""The AuditEvent resources (IHE BALP "RESTful" events) of one audited request.

Built in the writer thread from an :class:`AuditRecord`, which the request path fills cheaply.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fhir_server.security.policy import PATIENT_COMPARTMENT
from fhir_server.security.tokens import Principal
from fhir_server.storage.sql import format_instant

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
              "display": "RESTful Operation"}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

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
    bundle: tuple[dict[str, Any], dict[str, Any]] | None = None  # (request, response) Bundles


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


def patients_of(resource: dict[str, Any]) -> set[str]:
    """``Patient/x`` references placing a resource in a patient compartment (policy's one element)."""
    type_ = resource.get("resourceType")
    if type_ == "Patient":
        return {f"Patient/{resource['id']}"} if isinstance(resource.get("id"), str) else set()
    entry = PATIENT_COMPARTMENT.get(str(type_))
    if entry is None or type_ == "AuditEvent":
        return set()
    values: list[Any] = [resource]
    for step in entry[1].split("."):
        nxt: list[Any] = []
        for v in values:
            item = v.get(step) if isinstance(v, dict) else None
            nxt += item if isinstance(item, list) else [item] if item is not None else []
        values = nxt
    out = set()
    for v in values:
        ref = v.get("reference") if isinstance(v, dict) else None
        if isinstance(ref, str) and "Patient/" in ref:
            out.add("Patient/" + ref.rsplit("Patient/", 1)[1].split("/")[0])
    return out


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


def _load(content: Any) -> dict[str, Any] | None:
    if isinstance(content, bytes | bytearray):
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None
    return content if isinstance(content, dict) else None


def _agent(rec: AuditRecord) -> dict[str, Any]:
    agent: dict[str, Any] = {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                             "requestor": True}
    p = rec.principal
    if p is None:
        agent["who"] = {"display": "anonymous"}
    else:
        iss = dict(p.claims).get("iss")
        who: dict[str, Any] = {"identifier": {"system": str(iss), "value": p.subject} if iss else
                               {"value": p.subject}}
        # a Patient agent is an identifier only: `patient=` must not match what a patient did to others
        if p.fhir_user and not p.fhir_user.startswith("Patient/"):
            who["reference"] = p.fhir_user
        elif p.fhir_user:
            who["display"] = p.fhir_user
        agent["who"] = who
        if p.client_id:
            agent["altId"] = p.client_id
    if rec.address:
        agent["network"] = {"address": rec.address, "type": "2"}
    return agent


def _event(rec: AuditRecord, code: str, status: int, entities: list[dict[str, Any]],
           detail: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": EVENT_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": code}],
        "action": ACTIONS.get(code, "E"),
        "recorded": format_instant(rec.recorded_us),
        "outcome": outcome(status),
        "outcomeDesc": f"HTTP {status} {detail}".strip(),
        "agent": [_agent(rec)],
        "source": {"observer": {"display": "fhir-server"},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
    }
    if entities:
        event["entity"] = entities
    return event


def _resource_entity(ref: str) -> dict[str, Any]:
    return {"what": {"reference": ref}, "type": {"system": ENTITY_TYPE, "code": "2"},
            "role": {"system": OBJECT_ROLE, "code": "4"}}


def _patient_entity(ref: str) -> dict[str, Any]:
    return {"what": {"reference": ref}, "type": {"system": ENTITY_TYPE, "code": "1"},
            "role": {"system": OBJECT_ROLE, "code": "1"}}


def _entities(target: str | None, patients: set[str], query: str | None) -> list[dict[str, Any]]:
    out = [_resource_entity(target)] if target and target not in patients else []
    out += [_patient_entity(p) for p in sorted(patients)]
    if query is not None:
        out.append({"type": {"system": ENTITY_TYPE, "code": "2"}, "role": {"system": OBJECT_ROLE, "code": "24"},
                    "query": base64.b64encode(query.encode()).decode("ascii")})
    return out


def build(rec: AuditRecord, lookup: Any = None) -> list[dict[str, Any]]:
    """The AuditEvents of one request: one for the request, plus one per Bundle entry.

    ``lookup(type, id)`` gives the stored resource when the request did not carry it (denied or failed
    reads), so the patient whose data was probed finds the attempt in their own listing.
    """
    code = interaction(rec.method, rec.path, rec.path_params)
    type_, id_ = rec.path_params.get("type"), rec.path_params.get("id")
    target = f"{type_}/{id_}" if type_ and id_ else None
    patients: set[str] = set()
    content = _load(rec.content) if rec.status < 400 else None
    if content is not None:
        patients |= patients_of(content)
        if target is None and isinstance(content.get("id"), str) and content.get("resourceType") == type_:
            target = f"{type_}/{content['id']}"
    elif target is not None and lookup is not None and type_ in PATIENT_COMPARTMENT:
        stored = lookup(type_, id_)
        if stored is not None:
            patients |= patients_of(stored)
    query: str | None = None
    if code in ("search-type", "history-type", "history-system", "history-instance", "operation") or (
            rec.query and code in ("update", "delete", "patch")):
        query = rec.query
        patients |= patients_of_query(type_, rec.query)
    if code == "search-type" and rec.principal is not None and rec.principal.patient:
        patients.add(f"Patient/{rec.principal.patient}")  # the compartment filter named it
    if code == "transaction" and rec.bundle is not None:
        code = str(rec.bundle[0].get("type") or "transaction")
        code = code if code in ("transaction", "batch") else "transaction"
    events = [_event(rec, code, rec.status, _entities(target, patients, query), "")]
    if rec.bundle is not None and rec.status < 400:
        events += _entry_events(rec)
    return events


def _entry_events(rec: AuditRecord) -> list[dict[str, Any]]:
    request, response = rec.bundle or ({}, {})
    out = []
    for req_entry, resp_entry in zip(request.get("entry") or [], response.get("entry") or [], strict=False):
        if not isinstance(req_entry, dict) or not isinstance(resp_entry, dict):
            continue
        req = req_entry.get("request") or {}
        resp = resp_entry.get("response") or {}
        method = str(req.get("method", "")).upper()
        url = str(req.get("url", ""))
        path, _, query = url.partition("?")
        parts = [p for p in path.split("/") if p]
        params = {"type": parts[0]} if parts else {}
        if len(parts) > 1:
            params["id"] = parts[1]
        code = interaction(method, "/" + path, params)
        location = str(resp.get("location") or "")
        loc = [p for p in location.split("/") if p]
        if "_history" in loc:
            loc = loc[:loc.index("_history")]
        target = "/".join(loc[-2:]) if len(loc) >= 2 else ("/".join(parts[:2]) if len(parts) > 1 else None)
        patients = set()
        for res in (req_entry.get("resource"), resp_entry.get("resource")):
            if isinstance(res, dict):
                patients |= patients_of(res)
        if query:
            patients |= patients_of_query(params.get("type"), query)
        try:
            status = int(str(resp.get("status", "0")).split()[0])
        except ValueError:
            status = 0
        out.append(_event(rec, code, status, _entities(target, patients, query if method == "GET" else None),
                          f"{method} {url}"))
    return out
