"""Patient/[id]/$everything over HTTP (patient-operation-everything.html): the compartment, what it references,
``start``/``end``, ``_since``, ``_type``, paging, POST with Parameters."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    resp = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def record(client: httpx.Client) -> dict[str, str]:
    """A patient with a document (and its Binary), two dated Immunizations, an undated one and a List."""
    pid = create(client, {"resourceType": "Patient", "name": [{"family": f"Every{uuid.uuid4().hex[:6]}"}]})
    ref = {"reference": f"Patient/{pid}"}
    binary = create(client, {"resourceType": "Binary", "contentType": "text/plain",
                             "data": base64.b64encode(b"hello").decode()})
    doc = create(client, {"resourceType": "DocumentReference", "status": "current", "subject": ref,
                          "date": "2024-03-01T10:00:00Z",
                          "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{binary}"}}]})
    old = create(client, {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "a"},
                          "patient": ref, "occurrenceDateTime": "2020-01-01"})
    new = create(client, {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "b"},
                          "patient": ref, "occurrenceDateTime": "2024-01-01"})
    undated = create(client, {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "c"},
                              "patient": ref, "occurrenceString": "childhood"})
    lst = create(client, {"resourceType": "List", "status": "current", "mode": "working", "subject": ref,
                          "entry": [{"item": {"reference": f"DocumentReference/{doc}"}}]})
    return {"patient": pid, "binary": binary, "doc": doc, "old": old, "new": new, "undated": undated, "list": lst}


def keys(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] == mode}


def everything(client: httpx.Client, pid: str, **params: str) -> dict[str, Any]:
    resp = client.get(f"/Patient/{pid}/$everything", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def test_everything_returns_the_compartment_and_the_documents_binary(client: httpx.Client) -> None:
    mine, other = record(client), record(client)
    body = everything(client, mine["patient"])
    assert keys(body) == {f"Patient/{mine['patient']}", f"DocumentReference/{mine['doc']}",
                          f"Immunization/{mine['old']}", f"Immunization/{mine['new']}",
                          f"Immunization/{mine['undated']}", f"List/{mine['list']}"}
    assert keys(body, "include") == {f"Binary/{mine['binary']}"}
    assert other["doc"] not in str(body) and other["binary"] not in str(body)


def test_start_and_end_filter_dated_resources_and_keep_undated_ones(client: httpx.Client) -> None:
    r = record(client)
    body = everything(client, r["patient"], start="2023-01-01", end="2024-12-31")
    assert f"Immunization/{r['new']}" in keys(body) and f"Immunization/{r['undated']}" in keys(body)
    assert f"DocumentReference/{r['doc']}" in keys(body) and f"List/{r['list']}" in keys(body)
    assert f"Immunization/{r['old']}" not in keys(body)
    body = everything(client, r["patient"], end="2021-01-01")
    assert f"Immunization/{r['old']}" in keys(body) and f"DocumentReference/{r['doc']}" not in keys(body)


def test_type_and_since_restrict_the_result(client: httpx.Client) -> None:
    r = record(client)
    assert keys(everything(client, r["patient"], _type="Immunization")) == {
        f"Immunization/{r[k]}" for k in ("old", "new", "undated")}
    assert keys(everything(client, r["patient"], _since="2100-01-01T00:00:00Z")) == set()
    resp = client.get(f"/Patient/{r['patient']}/$everything", params={"_type": "Observation"})
    assert resp.status_code == 400


def test_paging_visits_every_resource_once(client: httpx.Client) -> None:
    r = record(client)
    expected = keys(everything(client, r["patient"]))
    seen: list[str] = []
    body = everything(client, r["patient"], _count="2")
    pages = 0
    while True:
        pages += 1
        page = keys(body)
        assert len(page) <= 2
        assert f"Patient/{r['patient']}" not in keys(body, "include")  # a match of the first page, only there
        seen += sorted(page)
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        if not nxt:
            break
        resp = client.get(nxt[0])
        assert resp.status_code == 200, resp.text
        body = resp.json()
    assert pages >= 3 and len(seen) == len(set(seen)) and set(seen) == expected


def test_a_forged_cursor_or_unknown_parameter_is_refused(client: httpx.Client) -> None:
    r = record(client)
    body = everything(client, r["patient"], _count="1")
    nxt = next(link["url"] for link in body["link"] if link["relation"] == "next")
    other = client.get(nxt.replace(r["patient"], record(client)["patient"]))
    assert other.status_code == 400
    assert client.get(f"/Patient/{r['patient']}/$everything", params={"_cursor": "abc.def"}).status_code == 400
    assert client.get(f"/Patient/{r['patient']}/$everything", params={"name": "x"}).status_code == 400


def test_unknown_patient_is_404(client: httpx.Client) -> None:
    pid = uuid.uuid4().hex
    resp = client.get(f"/Patient/{pid}/$everything")
    assert resp.status_code == 404
    assert resp.json()["issue"][0]["diagnostics"] == f"Patient/{pid} is not known"


def test_malformed_dates_are_400(client: httpx.Client) -> None:
    pid = record(client)["patient"]
    for params in ({"start": "yesterday"}, {"end": "2024-13-45"}, {"_since": "soon"}, {"_count": "-1"},
                   {"start": "2024", "start ": "x"},
                   {"start": "2020,2030"}, {"end": "gt2024"}, {"_since": "2024-01-01T00:00:00Z,2025"}):
        resp = client.get(f"/Patient/{pid}/$everything", params=params)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["resourceType"] == "OperationOutcome"


def test_post_with_parameters(client: httpx.Client) -> None:
    r = record(client)
    params = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "List,Patient"}]}
    resp = client.post(f"/Patient/{r['patient']}/$everything", json=params, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert keys(resp.json()) == {f"Patient/{r['patient']}", f"List/{r['list']}"}
    for bad in ({"resourceType": "Parameters", "parameter": True}, {"resourceType": "Patient"},
                {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueBoolean": True}]},
                {"resourceType": "Parameters", "parameter": [{"name": "start", "valueDate": "2020,2030"}]}):
        resp = client.post(f"/Patient/{r['patient']}/$everything", json=bad, headers=FHIR_JSON)
        assert resp.status_code == 400, (bad, resp.text)


def test_the_capability_statement_lists_the_operation(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"} \
        in patient["operation"]


def test_the_openapi_description_lists_the_operation(server: Any) -> None:
    doc = httpx.get(server.base_url.removesuffix("/fhir") + "/openapi.json", timeout=30).json()
    assert set(doc["paths"]["/Patient/{id}/$everything"]) >= {"get", "post"}


def test_everything_is_an_operation_on_patient_only(client: httpx.Client) -> None:
    imm = record(client)["new"]
    resp = client.get(f"/Immunization/{imm}/$everything")
    assert resp.status_code == 404 and resp.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Observation/{imm}/$everything").status_code == 404
