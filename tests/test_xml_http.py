"""FHIR XML over HTTP (http.html#mime-type) against the running server: bodies in, resources, bundles and
OperationOutcomes out, and the hostile documents a parser must not act on."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.formats import from_xml, to_xml

XML = "application/fhir+xml"
SEND_XML = {"Content-Type": XML}
ACCEPT_XML = {"Accept": XML}


def patient_xml(family: str, pid: str | None = None) -> bytes:
    doc: dict[str, Any] = {"resourceType": "Patient", "active": True,
                           "name": [{"family": family, "given": ["Hélène", "Marie"]}], "gender": "female",
                           "birthDate": "1970-03-30",
                           "_birthDate": {"extension": [{"url": "http://example.org/fhir/StructureDefinition/text",
                                                         "valueString": "Pâques & <printemps>"}]},
                           "multipleBirthInteger": 2}
    if pid:
        doc["id"] = pid
    return to_xml(doc)


def xml_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.headers["content-type"].startswith(XML), (resp.headers.get("content-type"), resp.text[:300])
    return from_xml(resp.content)


def outcome(resp: httpx.Response) -> dict[str, Any]:
    body = xml_of(resp)
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


def test_create_with_xml_body_and_read_back_in_both_formats(client: httpx.Client) -> None:
    family = f"Xml{uuid.uuid4().hex[:8]}"
    resp = client.post("/Patient", content=patient_xml(family), headers=SEND_XML)
    assert resp.status_code == 201, resp.text
    created = xml_of(resp)  # no Accept: answered in the format of the request
    pid = created["id"]
    assert created["multipleBirthInteger"] == 2 and created["active"] is True
    assert created["_birthDate"]["extension"][0]["valueString"] == "Pâques & <printemps>"
    as_json = client.get(f"/Patient/{pid}", headers={"Accept": "application/fhir+json"})
    assert as_json.headers["content-type"].startswith("application/fhir+json")
    assert as_json.json() == created
    variants: list[tuple[dict[str, str], dict[str, str]]] = [
        (ACCEPT_XML, {}), ({}, {"_format": "xml"}), ({}, {"_format": "application/fhir+xml"}),
        ({"Accept": "application/xml"}, {}), ({"Accept": "application/fhir+json;q=0.5, application/fhir+xml"}, {})]
    for headers, params in variants:
        assert xml_of(client.get(f"/Patient/{pid}", headers=headers, params=params)) == created, (headers, params)
    assert b"<Patient xmlns=\"http://hl7.org/fhir\">" in client.get(f"/Patient/{pid}", headers=ACCEPT_XML).content
    pretty = client.get(f"/Patient/{pid}", params={"_format": "xml", "_pretty": "true"})
    assert b"\n  <name>" in pretty.content and from_xml(pretty.content) == created


def test_update_vread_and_prefer_with_xml(client: httpx.Client) -> None:
    pid = f"x-{uuid.uuid4().hex[:10]}"
    first = client.put(f"/Patient/{pid}", content=patient_xml("Un", pid), headers=SEND_XML)
    assert first.status_code == 201, first.text
    second = client.put(f"/Patient/{pid}", content=patient_xml("Deux", pid),
                        headers={**SEND_XML, "If-Match": 'W/"1"', "Prefer": "return=OperationOutcome"})
    assert second.status_code == 200
    assert outcome(second)["issue"][0]["severity"] == "information"
    old = xml_of(client.get(f"/Patient/{pid}/_history/1", headers=ACCEPT_XML))
    assert old["name"][0]["family"] == "Un" and old["meta"]["versionId"] == "1"
    stale = client.put(f"/Patient/{pid}", content=patient_xml("Trois", pid), headers={**SEND_XML, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    outcome(stale)


def test_search_and_history_bundles_as_xml(client: httpx.Client) -> None:
    family = f"Srch{uuid.uuid4().hex[:8]}"
    ids = {client.post("/Patient", content=patient_xml(family), headers=SEND_XML).headers["location"].split("/")[-3]
           for _ in range(3)}
    found = xml_of(client.get("/Patient", params={"family": family, "_format": "xml"}))
    assert found["resourceType"] == "Bundle" and found["type"] == "searchset" and found["total"] == 3
    assert {e["resource"]["id"] for e in found["entry"]} == ids
    assert all(e["resource"]["name"][0]["family"] == family for e in found["entry"])
    same = client.post("/Patient/_search", data={"family": family}, headers=ACCEPT_XML)
    assert {e["resource"]["id"] for e in xml_of(same)["entry"]} == ids
    pid = next(iter(ids))
    history = xml_of(client.get(f"/Patient/{pid}/_history", headers=ACCEPT_XML))
    assert history["type"] == "history" and history["entry"][0]["resource"]["id"] == pid
    assert history["entry"][0]["request"]["method"] in ("POST", "PUT")
    type_history = xml_of(client.get("/Patient/_history", params={"_count": 2, "_format": "xml"}))
    assert len(type_history["entry"]) == 2 and any(link["relation"] == "next" for link in type_history["link"])


def test_capability_statement_as_xml(client: httpx.Client) -> None:
    cap = xml_of(client.get("/metadata", params={"_format": "xml"}))
    assert cap["resourceType"] == "CapabilityStatement"
    assert "application/fhir+xml" in cap["format"]


def test_errors_are_xml_operation_outcomes_when_xml_was_asked(client: httpx.Client) -> None:
    missing = client.get("/Patient/does-not-exist", headers=ACCEPT_XML)
    assert missing.status_code == 404
    outcome(missing)
    invalid = client.post("/Patient", content=to_xml({"resourceType": "Patient", "birthDate": "2020-13-45"}),
                          headers=SEND_XML)
    assert invalid.status_code == 422, invalid.text
    assert any("Patient.birthDate" in i.get("expression", []) for i in outcome(invalid)["issue"])
    unknown = client.post("/Patient", content=b'<Patient xmlns="http://hl7.org/fhir"><shoeSize value="9"/></Patient>',
                          headers=SEND_XML)
    assert unknown.status_code == 400
    assert outcome(unknown)["issue"][0]["expression"] == ["Patient.shoeSize"]
    wrong_type = client.post("/Patient", content=to_xml({"resourceType": "Immunization"}), headers=SEND_XML)
    assert wrong_type.status_code == 400
    outcome(wrong_type)
    # an unsupported _format is answered in JSON: the one format every client reads
    assert client.get("/Patient/x", params={"_format": "yaml"}, headers=ACCEPT_XML).status_code == 406


@pytest.mark.parametrize("body", [
    b'<Patient xmlns="http://hl7.org/fhir"><name><family value="x"></name></Patient>',
    b"not xml at all",
    b'<Patient xmlns="http://hl7.org/fhir"><active value="maybe"/></Patient>',
    b'\xff\xfe<\x00P\x00',
], ids=["unclosed", "text", "bad-boolean", "utf16-garbage"])
def test_malformed_xml_is_400(client: httpx.Client, body: bytes) -> None:
    resp = client.post("/Patient", content=body, headers=SEND_XML)
    assert resp.status_code == 400, resp.text
    outcome(resp)


def test_xxe_is_refused_without_resolving_the_entity(client: httpx.Client, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    marker = f"SECRET-{uuid.uuid4().hex}"
    secret.write_text(marker)
    body = (f'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file://{secret}">]>'
            '<Patient xmlns="http://hl7.org/fhir"><name><family value="&xxe;"/></name></Patient>').encode()
    resp = client.post("/Patient", content=body, headers=SEND_XML)
    assert resp.status_code == 400
    assert marker not in resp.text
    assert "not allowed" in outcome(resp)["issue"][0]["diagnostics"]
    assert client.get("/Patient", params={"family": marker}).json()["total"] == 0  # nothing was stored


def test_billion_laughs_is_refused_at_once(client: httpx.Client) -> None:
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 12))
    body = (f'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY l0 "lol">{entities}]>'
            '<Patient xmlns="http://hl7.org/fhir"><name><family value="&l11;"/></name></Patient>').encode()
    started = time.perf_counter()
    resp = client.post("/Patient", content=body, headers=SEND_XML)
    assert resp.status_code == 400
    assert time.perf_counter() - started < 5  # refused, not expanded (10^11 characters)
    outcome(resp)


def test_transaction_bundle_in_xml(client: httpx.Client) -> None:
    family = f"Tx{uuid.uuid4().hex[:8]}"
    full_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": full_url, "resource": {"resourceType": "Patient", "name": [{"family": family}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Immunization", "status": "completed",
                      "vaccineCode": {"coding": [{"system": "urn:oid:1.2.250.1.213.2.3.1", "code": "X"}]},
                      "patient": {"reference": full_url}, "occurrenceDateTime": "2021-05-01"},
         "request": {"method": "POST", "url": "Immunization"}}]}
    resp = client.post("", content=to_xml(bundle), headers=SEND_XML)
    assert resp.status_code == 200, resp.text
    answer = xml_of(resp)
    assert answer["type"] == "transaction-response" and len(answer["entry"]) == 2
    assert all(e["response"]["status"].startswith("201") for e in answer["entry"])
    pid = answer["entry"][0]["response"]["location"].split("/")[1]
    imm = client.get("/Immunization", params={"patient": f"Patient/{pid}", "_format": "xml"})
    assert xml_of(imm)["total"] == 1


SHARED_FR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fr"


def _uniquify(node: Any, suffix: str) -> Any:
    """The same documents under fresh identifiers, so the JSON and XML submissions are not duplicates."""
    if isinstance(node, list):
        return [_uniquify(item, suffix) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _uniquify(value, suffix) for key, value in node.items()}
    for key in ("masterIdentifier", "identifier"):
        found = out.get(key)
        for ident in found if isinstance(found, list) else [found]:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                ident["value"] += suffix
    return out


def _corrected(node: Any) -> Any:
    """The examples' known defects (as in tests/test_mhd.py): DocumentReferences lack custodian and
    masterIdentifier.use."""
    if isinstance(node, list):
        return [_corrected(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _corrected(value) for key, value in node.items()}
    if out.get("resourceType") == "DocumentReference" and isinstance(out.get("masterIdentifier"), dict):
        out.setdefault("custodian", {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "10000001234"}})
        out["masterIdentifier"].setdefault("use", "usual")
    return out


@pytest.mark.parametrize(("name", "path"), [
    ("pdsm4dmp-json/Bundle-example-td2-iti65-lot-soumission.json", ""),
    ("pdsm4dmp-json/DocumentReference-example-td2-iti105-publication-simplifiee.json", "DocumentReference"),
], ids=["iti65-provide-bundle", "iti105-simplified-publish"])
def test_pdsm_submissions_get_the_same_answer_in_xml_and_json(client: httpx.Client, name: str, path: str) -> None:
    source = SHARED_FR / name
    if not source.exists():
        pytest.skip(f"{source} not found")
    text = source.read_text(encoding="utf-8")
    original = _corrected(json.loads(text))
    for system, value in set(re.findall(r'"Patient\?identifier=([^"|]+)\|([^"]+)"', text)):
        created = client.post("/Patient", json={"resourceType": "Patient", "identifier": [
            {"system": system, "value": value}], "name": [{"family": "Pdsm"}]},
                              headers={"If-None-Exist": f"identifier={system}|{value}"})
        assert created.status_code in (200, 201), created.text
        if path:  # a plain create resolves no conditional reference (only transactions do): name the Patient
            text = text.replace(f"Patient?identifier={system}|{value}", f"Patient/{created.json()['id']}")
            original = _corrected(json.loads(text))
    tag = uuid.uuid4().hex[:8]
    as_json = client.post(f"/{path}" if path else "", json=_uniquify(original, f".j{tag}"),
                          headers={"Content-Type": "application/fhir+json"})
    as_xml = client.post(f"/{path}" if path else "", content=to_xml(_uniquify(original, f".x{tag}")),
                         headers=SEND_XML)  # no Accept: answered in XML, like the request
    assert as_json.status_code in (200, 201), as_json.text[:500]
    assert as_xml.status_code == as_json.status_code, as_xml.text[:500]
    answer_json, answer_xml = as_json.json(), xml_of(as_xml)
    assert answer_xml["resourceType"] == answer_json["resourceType"]
    if answer_json["resourceType"] == "Bundle":
        assert [e["response"]["status"] for e in answer_xml["entry"]] == \
               [e["response"]["status"] for e in answer_json["entry"]] == ["201 Created"] * len(original["entry"])
        docs = [e["resource"] for e in answer_xml["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    else:
        docs = [answer_xml]
    for doc in docs:  # what was stored from XML reads the same in both formats
        stored_json = client.get(f"/DocumentReference/{doc['id']}", headers={"Accept": "application/fhir+json"})
        stored_xml = client.get(f"/DocumentReference/{doc['id']}", headers=ACCEPT_XML)
        assert xml_of(stored_xml) == stored_json.json() == doc
        assert doc["masterIdentifier"]["value"].endswith(f".x{tag}")


def test_fhirpath_patch_in_xml(client: httpx.Client) -> None:
    doc = client.post("/DocumentReference", json={
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/d"}}]},
        headers={"Content-Type": "application/fhir+json"}).json()
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "DocumentReference.status"},
        {"name": "value", "valueCode": "superseded"}]}]}
    resp = client.patch(f"/DocumentReference/{doc['id']}", content=to_xml(patch), headers=SEND_XML)
    assert resp.status_code == 200, resp.text
    patched = xml_of(resp)
    assert patched["status"] == "superseded" and patched["meta"]["versionId"] == "2"


def test_binary_as_fhir_xml(client: httpx.Client) -> None:
    created = client.post("/Binary", content=to_xml({"resourceType": "Binary", "contentType": "text/plain",
                                                     "data": "Ym9uam91cg=="}), headers=SEND_XML)
    assert created.status_code == 201, created.text
    bid = xml_of(created)["id"]
    raw = client.get(f"/Binary/{bid}")
    assert raw.content == b"bonjour" and raw.headers["content-type"].startswith("text/plain")
    for headers, params in ((ACCEPT_XML, {}), ({}, {"_format": "xml"})):
        resource = xml_of(client.get(f"/Binary/{bid}", headers=headers, params=params))
        assert resource["resourceType"] == "Binary" and resource["data"] == "Ym9uam91cg=="


def test_validate_operation_in_xml(client: httpx.Client) -> None:
    good = client.post("/Patient/$validate", content=patient_xml("Valide"), headers=SEND_XML)
    assert good.status_code == 200, good.text
    assert all(i["severity"] not in ("error", "fatal") for i in outcome(good)["issue"])
    bad = client.post("/Patient/$validate", content=to_xml({"resourceType": "Patient", "gender": "sometimes"}),
                      headers=SEND_XML)
    assert any(i["severity"] == "error" and "Patient.gender" in i.get("expression", []) for i in outcome(bad)["issue"])


def test_unknown_route_answers_in_the_requested_format(client: httpx.Client) -> None:
    resp = client.get("/no/such/endpoint/here", headers={"Accept": "application/fhir+xml"})
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/fhir+xml")
    assert b"<OperationOutcome" in resp.content


def test_xml_search_parses_each_stored_resource_once(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A searchset in XML: each stored resource is parsed once, by the writer (plain search) or by the search
    that needed it (``_include``), never twice."""
    from fhir_server.formats import numbers

    family = f"Once{uuid.uuid4().hex[:8]}"
    pid = client.post("/Patient", content=patient_xml(family), headers=SEND_XML).headers["location"].split("/")[-3]
    doc = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{pid}"},
           "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/doc.txt"}}]}
    dids = [client.post("/DocumentReference", json=doc).json()["id"] for _ in range(3)]
    client.get("/DocumentReference", params={"subject": f"Patient/{pid}"})  # indexed: the indexer parses no more
    parsed: list[bytes] = []
    loads = numbers.loads

    def counting(raw: Any) -> Any:
        parsed.append(bytes(raw) if not isinstance(raw, str) else raw.encode())
        return loads(raw)

    monkeypatch.setattr(numbers, "loads", counting)

    def times(rid: str) -> int:
        return sum(f'"id":"{rid}"'.encode() in raw for raw in parsed)

    plain = {"subject": f"Patient/{pid}"}
    for params in (plain, {**plain, "_include": "DocumentReference:subject"}):
        parsed.clear()
        found = xml_of(client.get("/DocumentReference", params={**params, "_format": "xml"}))
        assert {e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"} == set(dids)
        assert [times(d) for d in dids] == [1, 1, 1], params
        if "_include" in params:
            assert [e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "include"] == [pid]
            assert times(pid) == 1
