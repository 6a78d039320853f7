"""The REST interactions of http.html against the running server: statuses, headers, bodies."""

from __future__ import annotations

import uuid
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(family: str = "Durand", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Hélène"]}], "gender": "female",
            **extra}


def outcome_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    return body


def create(client: httpx.Client, resource: dict[str, Any]) -> httpx.Response:
    resp = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return resp


# -- create / read -------------------------------------------------------------------------------

def test_create_assigns_id_version_and_headers(client: httpx.Client) -> None:
    resp = client.post("/Patient", json=patient(id="client-chosen"), headers=FHIR_JSON)
    assert resp.status_code == 201
    body = resp.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("+00:00")
    assert resp.headers["ETag"] == 'W/"1"'
    assert resp.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert resp.headers["Location"].startswith("http://")
    assert parsedate_to_datetime(resp.headers["Last-Modified"])
    assert resp.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_what_create_returned(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    resp = client.get(f"/Patient/{created['id']}")
    assert resp.status_code == 200
    assert resp.json() == created
    assert resp.headers["ETag"] == 'W/"1"'


def test_plain_json_media_type_is_accepted(client: httpx.Client) -> None:
    resp = client.post("/Patient", content=httpx.Request("POST", "/", json=patient()).content,
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 201


@pytest.mark.parametrize("fmt", ["json", "application/fhir+json", "application/json"])
def test_format_parameter_json(client: httpx.Client, fmt: str) -> None:
    created = create(client, patient()).json()
    resp = client.get(f"/Patient/{created['id']}", params={"_format": fmt})
    assert resp.status_code == 200
    assert resp.json()["id"] == created["id"]


def test_pretty_output(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    resp = client.get(f"/Patient/{created['id']}", params={"_pretty": "true"})
    assert "\n  " in resp.text
    assert resp.json() == created


# -- prefer --------------------------------------------------------------------------------------

def test_prefer_minimal(client: httpx.Client) -> None:
    resp = client.post("/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert resp.status_code == 201
    assert resp.content == b""
    assert resp.headers["Location"]


def test_prefer_operation_outcome(client: httpx.Client) -> None:
    resp = client.post("/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201
    assert outcome_of(resp)["issue"][0]["severity"] == "information"


# -- update / vread / delete ---------------------------------------------------------------------

def test_update_increments_version_and_vread_keeps_old(client: httpx.Client) -> None:
    created = create(client, patient("Martin")).json()
    pid = created["id"]
    changed = {**created, "name": [{"family": "Martinez"}]}
    resp = client.put(f"/Patient/{pid}", json=changed, headers=FHIR_JSON)
    assert resp.status_code == 200
    assert resp.json()["meta"]["versionId"] == "2"
    assert resp.headers["ETag"] == 'W/"2"'
    v1 = client.get(f"/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["name"][0]["family"] == "Martin"
    v2 = client.get(f"/Patient/{pid}/_history/2")
    assert v2.json()["name"][0]["family"] == "Martinez"
    assert client.get(f"/Patient/{pid}/_history/3").status_code == 404
    assert client.get(f"/Patient/{pid}/_history/x").status_code == 404


def test_update_as_create_with_client_id(client: httpx.Client) -> None:
    pid = f"p-{uuid.uuid4().hex[:12]}"
    resp = client.put(f"/Patient/{pid}", json=patient(id=pid), headers=FHIR_JSON)
    assert resp.status_code == 201
    assert resp.json()["id"] == pid
    assert resp.headers["Location"].endswith(f"/Patient/{pid}/_history/1")


def test_update_id_mismatch_is_400(client: httpx.Client) -> None:
    resp = client.put("/Patient/abc", json=patient(id="xyz"), headers=FHIR_JSON)
    assert resp.status_code == 400
    assert outcome_of(resp)["issue"][0]["expression"] == ["Patient.id"]


def test_if_match(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    pid = created["id"]
    stale = client.put(f"/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert outcome_of(stale)
    ok = client.put(f"/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert client.put(f"/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": "nonsense"}).status_code == 400


def test_delete_then_read_is_410_and_history_keeps_versions(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    resp = client.delete(f"/Patient/{pid}")
    assert resp.status_code == 204
    gone = client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert outcome_of(gone)["issue"][0]["code"] == "deleted"
    assert client.get(f"/Patient/{pid}/_history/1").status_code == 200
    hist = client.get(f"/Patient/{pid}/_history").json()
    assert hist["type"] == "history" and hist["total"] == 2
    assert hist["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in hist["entry"][0]
    # deleting again is idempotent
    assert client.delete(f"/Patient/{pid}").status_code == 204
    # an update brings it back as a new version
    back = client.put(f"/Patient/{pid}", json=patient(id=pid), headers=FHIR_JSON)
    assert back.status_code == 200 and back.json()["meta"]["versionId"] == "3"


def test_delete_with_wrong_if_match(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    assert client.delete(f"/Patient/{pid}", headers={"If-Match": 'W/"9"'}).status_code == 412
    assert client.get(f"/Patient/{pid}").status_code == 200


def test_delete_unknown_succeeds(client: httpx.Client) -> None:
    assert client.delete("/Patient/never-existed").status_code == 204


# -- history -------------------------------------------------------------------------------------

def test_type_and_system_history_paging(client: httpx.Client) -> None:
    ids = {create(client, {"resourceType": "Immunization", "status": "completed",
                           "vaccineCode": {"text": "BCG"}, "patient": {"reference": "Patient/x"},
                           "occurrenceDateTime": "2021-01-01"}).json()["id"] for _ in range(5)}
    seen: list[str] = []
    url: str | None = "/Immunization/_history?_count=2"
    while url:
        page = client.get(url).json()
        assert page["type"] == "history"
        assert len(page["entry"]) <= 2
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0] if nxt else None
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))
    system = client.get("/_history", params={"_count": 3}).json()
    assert len(system["entry"]) == 3
    assert any(link["relation"] == "next" for link in system["link"])


def test_history_since(client: httpx.Client) -> None:
    created = create(client, patient()).json()
    since = created["meta"]["lastUpdated"]
    hist = client.get("/Patient/_history", params={"_since": since}).json()
    assert created["id"] in {e["resource"]["id"] for e in hist["entry"]}
    assert client.get("/Patient/_history", params={"_since": "yesterday"}).status_code == 400


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/Patient", {"content": b"{not json", "headers": FHIR_JSON}, 400),
        ("POST", "/Patient", {"content": b"[1,2]", "headers": FHIR_JSON}, 400),
        ("POST", "/Patient", {"content": b"", "headers": FHIR_JSON}, 400),
        ("POST", "/Patient", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ("POST", "/Patient", {"content": b"<Patient/>", "headers": {"Content-Type": "application/fhir+xml",
                                                                    "Accept": "application/fhir+json"}}, 400),
        ("POST", "/Observation", {"json": {"resourceType": "Observation"}}, 404),
        ("GET", "/Foo/1", {}, 404),
        ("GET", "/Patient/does-not-exist", {}, 404),
        ("PATCH", "/Binary/1", {"content": b"[]"}, 405),
        ("DELETE", "/Patient", {}, 400),
        ("GET", "/nothing/here/at/all/really", {}, 404),
        ("GET", "/Patient/1", {"params": {"_format": "yaml"}}, 406),
    ],
)
def test_client_errors_are_operation_outcomes(client: httpx.Client, method: str, path: str,
                                              kwargs: dict[str, Any], status: int) -> None:
    resp = client.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    outcome_of(resp)


def test_type_mismatch_is_400(client: httpx.Client) -> None:
    resp = client.post("/Patient", json={"resourceType": "Immunization"}, headers=FHIR_JSON)
    assert resp.status_code == 400
    assert outcome_of(resp)["issue"][0]["expression"] == ["resourceType"]


def test_invalid_resource_is_422_with_fhirpath(client: httpx.Client) -> None:
    resp = client.post("/Patient", json={"resourceType": "Patient", "birthDate": "2020-13-45",
                                         "name": [{"family": 12}], "unknownThing": True}, headers=FHIR_JSON)
    assert resp.status_code == 422
    expressions = {e for issue in outcome_of(resp)["issue"] for e in issue.get("expression", [])}
    assert {"Patient.birthDate", "Patient.name[0].family", "Patient.unknownThing"} <= expressions


def test_body_too_large_is_413(client: httpx.Client, server: Any) -> None:
    big = b'{"resourceType":"Patient","text":"' + b"x" * (server.settings.max_body_bytes + 10) + b'"}'
    resp = client.post("/Patient", content=big, headers=FHIR_JSON)
    assert resp.status_code == 413
    outcome_of(resp)


def test_deeply_nested_json_is_400(client: httpx.Client) -> None:
    body = b'{"resourceType":"Patient","extension":' + b"[" * 2000 + b"]" * 2000 + b"}"
    resp = client.post("/Patient", content=body, headers=FHIR_JSON)
    assert resp.status_code == 400
    outcome_of(resp)


def test_empty_transaction_answers_an_empty_response(client: httpx.Client) -> None:
    resp = client.post("/", json={"resourceType": "Bundle", "type": "transaction"}, headers=FHIR_JSON)
    assert resp.status_code == 200
    assert resp.json()["type"] == "transaction-response" and resp.json()["entry"] == []


# -- metadata ------------------------------------------------------------------------------------

def test_capability_statement(client: httpx.Client) -> None:
    resp = client.get("/metadata")
    assert resp.status_code == 200
    cs = resp.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in cs["rest"][0]["resource"] if r.get("interaction")}
    # AuditEvent only with the audit trail on (off here); types validated but not stored have no interaction
    assert set(types) == {"Patient", "DocumentReference", "Immunization", "List", "Binary", "Consent"}
    codes = {i["code"] for i in types["Patient"]["interaction"]}
    assert {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
            "search-type"} == codes
    patient_params = {p["name"] for p in types["Patient"]["searchParam"]}
    assert {"identifier", "family", "name", "_id", "_lastUpdated"} <= patient_params


def test_conditional_read(client: httpx.Client) -> None:
    created = create(client, patient())
    pid = created.json()["id"]
    same = client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["ETag"] == 'W/"1"'
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    later = client.get(f"/Patient/{pid}", headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert later.status_code == 304
    earlier = client.get(f"/Patient/{pid}", headers={"If-Modified-Since": "Fri, 01 Jan 2010 00:00:00 GMT"})
    assert earlier.status_code == 200 and earlier.json()["id"] == pid


def test_request_shape_limits(client: httpx.Client) -> None:
    too_many = client.get("/Patient", params=[("_id", str(i)) for i in range(150)])
    assert too_many.status_code == 400
    outcome_of(too_many)
    too_long = client.get("/Patient", params={"name": "x" * 9000})
    assert too_long.status_code == 414
    outcome_of(too_long)
