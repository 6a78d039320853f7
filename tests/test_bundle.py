"""Transaction and batch Bundles (http.html#transaction) against the running server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def patient(system: str, value: str, family: str = "Martin") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}],
            "name": [{"family": family}], "gender": "female"}


def immunization(patient_ref: str) -> dict[str, Any]:
    return {"resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": patient_ref}, "occurrenceDateTime": "2024-10-01"}


def post_bundle(client: httpx.Client, entries: list[dict[str, Any]], kind: str = "transaction",
                **headers: str) -> httpx.Response:
    return client.post("/", json={"resourceType": "Bundle", "type": kind, "entry": entries},
                       headers={**FHIR_JSON, **headers})


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None,
          **request: str) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
    if full_url:
        out["fullUrl"] = full_url
    return out


def outcome(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def test_transaction_creates_all_and_rewrites_urn_references(client: httpx.Client) -> None:
    p_urn, sys = urn(), f"urn:test:{uuid.uuid4().hex}"
    resp = post_bundle(client, [entry("POST", "Immunization", immunization(p_urn)),
                                entry("POST", "Patient", patient(sys, "1"), p_urn)])
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["type"] == "transaction-response"
    imm_resp, pat_resp = (e["response"] for e in bundle["entry"])  # request order, not processing order
    assert imm_resp["status"].startswith("201") and pat_resp["status"].startswith("201")
    for r in (imm_resp, pat_resp):
        assert r["etag"] == 'W/"1"' and r["lastModified"].endswith("+00:00")
        assert r["location"].endswith("/_history/1")
    assert imm_resp["location"].startswith("Immunization/") and pat_resp["location"].startswith("Patient/")
    pid = pat_resp["location"].split("/")[1]
    imm = client.get("/" + imm_resp["location"].rsplit("/_history", 1)[0]).json()
    assert imm["patient"]["reference"] == f"Patient/{pid}"
    found = client.get("/Immunization", params={"patient": f"Patient/{pid}"}).json()
    assert found["total"] == 1


def test_transaction_is_all_or_nothing(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    bad = {"resourceType": "Patient", "gender": "not-a-gender"}
    resp = post_bundle(client, [entry("POST", "Patient", patient(sys, "1")), entry("POST", "Patient", bad)])
    assert resp.status_code == 422, resp.text
    issue = outcome(resp)["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert issue["expression"][0].startswith("Bundle.entry[1].resource")
    assert client.get("/Patient", params={"identifier": f"{sys}|1"}).json()["total"] == 0


def test_order_delete_post_put_get_and_get_sees_the_writes(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    old = client.post("/Patient", json=patient(sys, "old"), headers=FHIR_JSON).json()
    pid = f"p-{uuid.uuid4().hex[:12]}"
    resp = post_bundle(client, [
        entry("GET", f"Patient/{pid}"),
        entry("PUT", f"Patient/{pid}", {**patient(sys, "put"), "id": pid}),
        entry("DELETE", f"Patient/{old['id']}"),
        entry("GET", f"Patient?identifier={sys}|put"),
    ])
    assert resp.status_code == 200, resp.text
    get_entry, put_entry, del_entry, search_entry = resp.json()["entry"]
    assert put_entry["response"]["status"].startswith("201")
    assert del_entry["response"]["status"].startswith("204")
    assert get_entry["response"]["status"] == "200 OK" and get_entry["resource"]["id"] == pid
    assert search_entry["resource"]["total"] == 1
    assert client.get(f"/Patient/{old['id']}").status_code == 410


def test_conditional_reference_resolves_to_exactly_one(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    pid = client.post("/Patient", json=patient(sys, "42"), headers=FHIR_JSON).json()["id"]
    resp = post_bundle(client, [entry("POST", "Immunization", immunization(f"Patient?identifier={sys}|42"))])
    assert resp.status_code == 200, resp.text
    assert resp.json()["entry"][0]["resource"]["patient"]["reference"] == f"Patient/{pid}"
    # no match: the whole bundle fails
    resp = post_bundle(client, [entry("POST", "Patient", patient(sys, "43")),
                                entry("POST", "Immunization", immunization(f"Patient?identifier={sys}|nope"))])
    assert resp.status_code == 404
    assert "Bundle.entry[1]" in outcome(resp)["issue"][0]["diagnostics"]
    assert client.get("/Patient", params={"identifier": f"{sys}|43"}).json()["total"] == 0
    # several matches
    client.post("/Patient", json=patient(sys, "42"), headers=FHIR_JSON)
    resp = post_bundle(client, [entry("POST", "Immunization", immunization(f"Patient?identifier={sys}|42"))])
    assert resp.status_code == 412


def test_conditional_reference_sees_the_bundles_own_resources(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    resp = post_bundle(client, [entry("POST", "Immunization", immunization(f"Patient?identifier={sys}|7")),
                                entry("POST", "Patient", patient(sys, "7"))])
    assert resp.status_code == 200, resp.text
    imm, pat = resp.json()["entry"]
    assert imm["resource"]["patient"]["reference"] == f"Patient/{pat['resource']['id']}"


def test_if_none_exist_inside_bundle_matches_an_earlier_entry(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    resp = post_bundle(client, [entry("POST", "Patient", patient(sys, "1")),
                                entry("POST", "Patient", patient(sys, "1"), ifNoneExist=f"identifier={sys}|1")])
    assert resp.status_code == 200, resp.text
    first, second = resp.json()["entry"]
    assert first["response"]["status"].startswith("201") and second["response"]["status"].startswith("200")
    assert first["resource"]["id"] == second["resource"]["id"]
    assert client.get("/Patient", params={"identifier": f"{sys}|1"}).json()["total"] == 1


def test_full_url_in_attachment_url_is_rewritten(client: httpx.Client) -> None:
    bin_url = urn()
    doc = {"resourceType": "DocumentReference", "status": "current",
           "content": [{"attachment": {"contentType": "text/plain", "url": bin_url, "size": 2,
                                       "hash": "witfkXg0JglCjW9RssWvTAveakI="}}]}
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="}
    resp = post_bundle(client, [entry("POST", "DocumentReference", doc), entry("POST", "Binary", binary, bin_url)])
    assert resp.status_code == 200, resp.text
    d, b = resp.json()["entry"]
    assert d["resource"]["content"][0]["attachment"]["url"] == f"Binary/{b['resource']['id']}"
    raw = client.get(f"/Binary/{b['resource']['id']}")
    assert raw.content == b"hi" and raw.headers["content-type"].startswith("text/plain")


def test_same_resource_twice_and_dangling_urn_are_400(client: httpx.Client) -> None:
    pid = f"p-{uuid.uuid4().hex[:12]}"
    p = {"resourceType": "Patient", "id": pid}
    resp = post_bundle(client, [entry("PUT", f"Patient/{pid}", p), entry("PUT", f"Patient/{pid}", p)])
    assert resp.status_code == 400
    resp = post_bundle(client, [entry("POST", "Immunization", immunization(urn()))])
    assert resp.status_code == 400
    assert "Bundle.entry[0]" in outcome(resp)["issue"][0]["diagnostics"]


def test_if_match_in_a_transaction(client: httpx.Client) -> None:
    pid = client.post("/Patient", json=patient("urn:x", "1"), headers=FHIR_JSON).json()["id"]
    resp = post_bundle(client, [entry("PUT", f"Patient/{pid}", {**patient("urn:x", "1"), "id": pid},
                                      ifMatch='W/"3"')])
    assert resp.status_code == 412
    assert outcome(resp)["issue"][0]["expression"] == ["Bundle.entry[0].request"]
    resp = post_bundle(client, [entry("PUT", f"Patient/{pid}", {**patient("urn:x", "1"), "id": pid},
                                      ifMatch='W/"1"')])
    assert resp.status_code == 200 and resp.json()["entry"][0]["response"]["etag"] == 'W/"2"'


def test_unknown_type_and_bad_bundles(client: httpx.Client) -> None:
    assert post_bundle(client, [entry("POST", "Observation", {"resourceType": "Observation"})]).status_code == 404
    assert client.post("/", json={"resourceType": "Bundle", "type": "collection"},
                       headers=FHIR_JSON).status_code == 400
    assert client.post("/", json={"resourceType": "Patient"}, headers=FHIR_JSON).status_code == 400
    assert post_bundle(client, [{"resource": {"resourceType": "Patient"}}]).status_code == 400


def test_prefer_minimal_omits_resources(client: httpx.Client) -> None:
    resp = post_bundle(client, [entry("POST", "Patient", patient("urn:x", "m"))], Prefer="return=minimal")
    assert resp.status_code == 200
    e = resp.json()["entry"][0]
    assert "resource" not in e and e["response"]["status"].startswith("201")


def test_batch_entries_succeed_or_fail_alone(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    resp = post_bundle(client, [entry("POST", "Patient", patient(sys, "1")),
                                entry("POST", "Patient", {"resourceType": "Patient", "gender": "x"}),
                                entry("GET", "Patient/does-not-exist"),
                                {"nothing": True}], kind="batch")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0].startswith("201") and statuses[1] == "422" and statuses[2] == "404" and statuses[3] == "400"
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert client.get("/Patient", params={"identifier": f"{sys}|1"}).json()["total"] == 1


def test_identifier_equal_to_a_full_url_is_data_not_a_reference(client: httpx.Client) -> None:
    """MHD entryUUID identifiers often repeat the entry's own urn:uuid fullUrl: they must stay as sent."""
    full = urn()
    pat = {**patient("urn:ietf:rfc:3986", full), "link": [{"other": {"reference": full}, "type": "seealso"}]}
    resp = post_bundle(client, [entry("POST", "Patient", pat, full)])
    assert resp.status_code == 200, resp.text
    created = resp.json()["entry"][0]["resource"]
    assert created["identifier"][0]["value"] == full
    assert created["link"][0]["other"]["reference"] == f"Patient/{created['id']}"


def test_get_entries_run_chains_and_has_and_reject_malformed_ones(client: httpx.Client) -> None:
    sys = f"urn:test:{uuid.uuid4().hex}"
    p_urn = urn()
    resp = post_bundle(client, [entry("POST", "Patient", patient(sys, "chain"), p_urn),
                                entry("POST", "Immunization", immunization(p_urn))])
    assert resp.status_code == 200, resp.text
    pid = resp.json()["entry"][0]["response"]["location"].split("/")[1]
    queries = [f"Immunization?patient.identifier={sys}|chain", f"Patient?_has:Immunization:patient:status=completed"
               f"&identifier={sys}|chain"]
    for kind in ("transaction", "batch"):
        resp = post_bundle(client, [entry("GET", q) for q in queries], kind)
        assert resp.status_code == 200, resp.text
        chain, has = (e["resource"] for e in resp.json()["entry"])
        assert chain["total"] == 1 and chain["entry"][0]["resource"]["patient"]["reference"] == f"Patient/{pid}"
        assert has["total"] == 1 and has["entry"][0]["resource"]["id"] == pid
    # a chain through an unknown parameter is refused before anything runs (transaction) or per entry (batch)
    bad = "Immunization?patient.no-such-param=x"
    resp = post_bundle(client, [entry("POST", "Patient", patient(sys, "not-written")), entry("GET", bad)])
    assert resp.status_code == 400, resp.text
    assert "no-such-param" in str(outcome(resp))
    assert client.get("/Patient", params={"identifier": f"{sys}|not-written"}).json()["total"] == 0
    resp = post_bundle(client, [entry("GET", bad)], "batch")
    assert resp.json()["entry"][0]["response"]["status"].startswith("400")


def test_a_post_entry_with_search_parameters_is_refused_not_ignored(client: httpx.Client) -> None:
    """As for ``POST /fhir/Patient?identifier=...``: a create URL carries no criteria (they go in ifNoneExist);
    ignoring them made every retry a new resource."""
    value = uuid.uuid4().hex
    for kind in ("transaction", "batch"):
        resp = post_bundle(client, [entry("POST", f"Patient?identifier=urn:x|{value}&_format=json",
                                          patient("urn:x", value))], kind=kind)
        body = resp.json() if kind == "transaction" else resp.json()["entry"][0]["response"]["outcome"]
        status = resp.status_code if kind == "transaction" else int(resp.json()["entry"][0]["response"]["status"][:3])
        assert status == 400, resp.text
        assert body["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
        assert "identifier" in body["issue"][0]["diagnostics"]
    assert client.get("/Patient", params={"identifier": f"urn:x|{value}", "_summary": "count"}).json()["total"] == 0
    ok = post_bundle(client, [entry("POST", "Patient?_format=json", patient("urn:x", value))])
    assert ok.status_code == 200, ok.text  # _format and _pretty only say how to answer


def test_audit_event_entries_are_unknown_when_the_trail_is_off(client: httpx.Client) -> None:
    """AuditEvent is served only with audit on (the routes, the CapabilityStatement): Bundle entries agree."""
    resp = post_bundle(client, [entry("GET", "AuditEvent?_count=1"), entry("GET", "AuditEvent/x")], kind="batch")
    assert [e["response"]["status"][:3] for e in resp.json()["entry"]] == ["404", "404"], resp.text
