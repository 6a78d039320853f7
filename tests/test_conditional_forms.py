"""Forms of conditional criteria clients really send (issue 12): ``If-None-Exist`` as ``[base]/Type?...``
(the HAPI generic client), ``Type?...`` or bare parameters; a create URL with search parameters; a
conditional write with no criteria answered without naming a Bundle that was never sent."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.errors import FHIRError
from fhir_server.interactions import conditional
from tests.harness import RunningServer

FHIR_JSON = {"Content-Type": "application/fhir+json"}
BASE = "http://fhir.example/fhir"


def patient(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}


def count(client: httpx.Client, system: str) -> int:
    total: int = client.get("/Patient", params={"identifier": f"{system}|", "_summary": "count"}).json()["total"]
    return total


def outcome(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


def test_if_none_exist_as_absolute_url_relative_url_or_parameters(server: RunningServer,
                                                                 client: httpx.Client) -> None:
    """The HAPI generic client's form (absolute, with _format) matches like the bare parameters do."""
    sys = f"urn:test:{uuid.uuid4().hex}"
    forms = [f"{server.base_url}/Patient?_format=json&identifier={sys}|1", f"Patient?identifier={sys}|1",
             f"identifier={sys}|1", f"/Patient?_pretty=true&identifier={sys}|1"]
    first = client.post("/Patient", json=patient(sys, "1"), headers={**FHIR_JSON, "If-None-Exist": forms[0]})
    assert first.status_code == 201, first.text
    for form in forms[1:]:
        again = client.post("/Patient", json=patient(sys, "1"), headers={**FHIR_JSON, "If-None-Exist": form})
        assert again.status_code == 200, (form, again.text)
        assert again.json()["id"] == first.json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(sys, "1"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": form}}
        for form in forms[:2]]}
    resp = client.post("", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert [e["response"]["status"] for e in resp.json()["entry"]] == ["200 OK", "200 OK"]
    assert count(client, sys) == 1


@pytest.mark.parametrize("form", ["http://elsewhere.example/fhir/Patient?identifier={sys}|1",
                                  "Observation?identifier={sys}|1", "Patient?"])
def test_if_none_exist_naming_another_base_or_type_is_refused(client: httpx.Client, form: str) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    criteria = form.format(sys=sys)
    resp = client.post("/Patient", json=patient(sys, "1"), headers={**FHIR_JSON, "If-None-Exist": criteria})
    assert resp.status_code == 400, resp.text
    assert outcome(resp)["expression"] == ["If-None-Exist"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(sys, "1"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria}}]}
    resp = client.post("", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 400, resp.text
    assert outcome(resp)["expression"] == ["Bundle.entry[0].request.ifNoneExist"]
    assert count(client, sys) == 0


def test_post_with_search_parameters_is_refused_not_ignored(client: httpx.Client) -> None:
    """fhirpy's get_or_create style (POST Type?criteria) would otherwise create a resource each time."""
    sys = f"urn:test:{uuid.uuid4().hex}"
    for _ in range(2):
        resp = client.post(f"/Patient?identifier={quote(sys)}|1&active=true", json=patient(sys, "1"),
                           headers=FHIR_JSON)
        assert resp.status_code == 400, resp.text
        issue = outcome(resp)
        assert issue["expression"] == ["active", "identifier"] and "If-None-Exist" in issue["diagnostics"]
    assert count(client, sys) == 0
    ok = client.post("/Patient?_format=json&_pretty=true", json=patient(sys, "1"), headers=FHIR_JSON)
    assert ok.status_code == 201, ok.text
    assert count(client, sys) == 1


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "PUT"])
@pytest.mark.parametrize("query", ["", "?_format=json", "?not-a-parameter=1"])
def test_conditional_write_errors_name_no_bundle(client: httpx.Client, method: str, query: str) -> None:
    body: Any = {"PUT": patient("urn:s", "1"), "PATCH": [], "DELETE": None}[method]
    headers = {"Content-Type": "application/json-patch+json" if method == "PATCH" else "application/fhir+json"}
    resp = client.request(method, f"/Patient{query}", json=body, headers=headers)
    assert resp.status_code == 400, resp.text
    issue = outcome(resp)
    assert issue["expression"] == ["url"]
    assert "Bundle" not in issue["diagnostics"]
    if not query:
        assert f"{method} Patient needs criteria" in issue["diagnostics"]


def test_put_without_id_in_the_body_says_what_is_missing(client: httpx.Client) -> None:
    resp = client.put("/Patient/1", json=patient("urn:s", "1"), headers=FHIR_JSON)
    assert resp.status_code == 400
    issue = outcome(resp)
    assert issue["diagnostics"] == "The resource has no id: PUT Patient/1 needs Patient.id = '1'"
    assert issue["expression"] == ["Patient.id"]


# -- the normaliser -------------------------------------------------------------------------------

_name = st.sampled_from(["identifier", "family", "birthdate", "_id", "name:exact", "patient.identifier"])
_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)


@given(st.lists(st.tuples(_name, _value), min_size=1, max_size=4),
       st.lists(st.sampled_from(["_format=json", "_pretty=true"]), max_size=2))
def test_every_form_gives_the_same_criteria(pairs: list[tuple[str, str]], transport: list[str]) -> None:
    query = "&".join([*transport, *(f"{n}={quote(v, safe='')}" for n, v in pairs)])
    key = conditional.analyse("Patient", query, "x").key
    for form in (query, f"Patient?{query}", f"{BASE}/Patient?{query}", f"  {BASE}/Patient?{query} "):
        normal = conditional.if_none_exist_query(form, "Patient", BASE, "If-None-Exist")
        assert conditional.analyse("Patient", normal, "x").key == key


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_any_header_is_a_query_or_a_400(raw: str) -> None:
    try:
        out = conditional.if_none_exist_query(raw, "Patient", BASE, "If-None-Exist")
    except FHIRError as err:
        assert err.status == 400 and err.expression == ("If-None-Exist",)
        return
    assert out == raw.strip() or raw.strip().endswith("?" + out)


def test_a_question_mark_inside_a_bare_value_is_not_a_url() -> None:
    raw = "identifier=http://s.example/x?y|1"
    assert conditional.if_none_exist_query(raw, "Patient", BASE, "If-None-Exist") == raw
