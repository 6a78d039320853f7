"""R4 search semantics against the real server and Elasticsearch (search-semantics.md section 5).

Each test creates its own data with a unique marker so tests stay independent within the module's server.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.harness import RunningServer
from tests.test_search_first import create, ids, search

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SUBSETTED = "SUBSETTED"


def uid() -> str:
    return uuid.uuid4().hex[:10]


def get(client: httpx.Client, url: str, **params: Any) -> httpx.Response:
    return client.get(url, params=params)


def test_token_codes_case_sensitive_identifiers_exact(client: httpx.Client) -> None:
    m = uid()
    p = create(client, {"resourceType": "Patient", "gender": "female",
                        "identifier": [{"system": "urn:x", "value": f"AbC-{m}"}],
                        "maritalStatus": {"coding": [{"system": "urn:ms", "code": "M"}]}})
    assert ids(search(client, "/Patient", identifier=f"AbC-{m}")) == [p["id"]]
    assert ids(search(client, "/Patient", identifier=f"abc-{m}")) == []  # identifiers: exact
    assert ids(search(client, "/Patient", identifier=f"urn:x|ABC-{m}")) == []
    assert ids(search(client, "/Patient", _id=p["id"], gender="female")) == [p["id"]]
    assert ids(search(client, "/Patient", _id=p["id"], gender="male")) == []


SNOMED = "http://snomed.info/sct"
GENDER = "http://hl7.org/fhir/administrative-gender"


def _document(client: httpx.Client, doc_type: dict[str, Any]) -> dict[str, Any]:
    return create(client, {"resourceType": "DocumentReference", "status": "current", "type": doc_type,
                           "content": [{"attachment": {"url": "http://example.org/doc"}}]})


def test_token_case_follows_the_code_system(client: httpx.Client) -> None:
    """administrative-gender says caseSensitive = true: ``gender=FEMALE`` finds nobody (HAPI agrees);
    SNOMED CT says false: its codes match in any case, with or without the system."""
    p = create(client, {"resourceType": "Patient", "gender": "female"})
    for value in ("FEMALE", "Female", f"{GENDER}|FEMALE"):
        assert ids(search(client, "/Patient", _id=p["id"], gender=value)) == [], value
    assert ids(search(client, "/Patient", _id=p["id"], gender=f"{GENDER}|female")) == [p["id"]]
    m = uid()
    code = f"Ab{m}"
    d = _document(client, {"coding": [{"system": SNOMED, "code": code}, {"system": "urn:local", "code": f"Cd{m}"}]})
    for value in (code, code.upper(), code.lower(), f"{SNOMED}|{code.upper()}", f"{SNOMED}|{code.lower()}"):
        assert ids(search(client, "/DocumentReference", _id=d["id"], type=value)) == [d["id"]], value
    # a system that does not say it is case-insensitive is compared exactly, with or without the system
    for value in (f"cd{m}", f"CD{m}", f"urn:local|cd{m}"):
        assert ids(search(client, "/DocumentReference", _id=d["id"], type=value)) == [], value
    assert ids(search(client, "/DocumentReference", _id=d["id"], type=f"urn:local|Cd{m}")) == [d["id"]]
    # the case-insensitive copy of one coding never pairs with the system of another
    assert ids(search(client, "/DocumentReference", _id=d["id"], type=f"urn:local|{code.lower()}")) == []


def test_token_text_is_a_string_search_on_the_whole_text(client: httpx.Client) -> None:
    """R4 search.html#token: ``:text`` applies string search semantics to the text (CodeableConcept.text,
    Coding.display): starts-with after case/accent folding, not a match at the start of any word."""
    d = _document(client, {"coding": [{"system": "http://loinc.org", "code": "18842-5",
                                       "display": "Discharge summary"}], "text": "Résumé de sortie"})
    found = {"discharge", "DISCHARGE SUM", "discharge summary", "resume", "RÉSUMÉ DE S"}
    missed = {"summary", "sortie", "de sortie", "ischarge", "discharge summary note"}
    for value in found:
        assert ids(search(client, "/DocumentReference", _id=d["id"], **{"type:text": value})) == [d["id"]], value
    for value in missed:
        assert ids(search(client, "/DocumentReference", _id=d["id"], **{"type:text": value})) == [], value
    assert get(client, "/DocumentReference", **{"type:text": "a" * 1001}).status_code == 400


def test_reference_text_is_a_string_search_on_the_display(client: httpx.Client) -> None:
    """``:text`` on a reference (R5; R4 defines it for tokens only) has the same string semantics on
    Reference.display as token ``:text``."""
    p = create(client, {"resourceType": "Patient",
                        "generalPractitioner": [{"reference": "Practitioner/gp1", "display": "Dr Émile Zola"}]})
    for value in ("dr", "DR EMILE", "dr émile zola"):
        assert ids(search(client, "/Patient", _id=p["id"], **{"general-practitioner:text": value})) == [p["id"]]
    for value in ("zola", "emile", "dr zola"):
        assert ids(search(client, "/Patient", _id=p["id"], **{"general-practitioner:text": value})) == [], value


def test_phonetic_and_id_not(client: httpx.Client) -> None:
    m = uid()
    p = create(client, {"resourceType": "Patient", "name": [{"family": "Lefèvre", "given": [f"Zz{m}"]}]})
    assert p["id"] in ids(search(client, "/Patient", phonetic="Lefebvre", given=f"zz{m}"))
    assert ids(search(client, "/Patient", phonetic="Martin", given=f"zz{m}")) == []
    assert ids(search(client, "/Patient", given=f"zz{m}", **{"_id:not": p["id"]})) == []


def test_not_and_missing(client: httpx.Client) -> None:
    m = uid()
    f = create(client, {"resourceType": "Patient", "gender": "female", "name": [{"family": m}]})
    n = create(client, {"resourceType": "Patient", "name": [{"family": m}]})
    mm = create(client, {"resourceType": "Patient", "gender": "male", "name": [{"family": m}]})
    assert sorted(ids(search(client, "/Patient", family=m, **{"gender:not": "male"}))) == sorted([f["id"], n["id"]])
    assert ids(search(client, "/Patient", family=m, **{"gender:missing": "true"})) == [n["id"]]
    assert sorted(ids(search(client, "/Patient", family=m, **{"gender:missing": "false"}))) == sorted(
        [f["id"], mm["id"]])
    assert get(client, "/Patient", **{"gender:missing": "maybe"}).status_code == 400


def test_sort_several_keys_missing_last_and_tie_break(client: httpx.Client) -> None:
    m = uid()
    a = create(client, {"resourceType": "Patient", "name": [{"family": m, "given": ["B"]}], "birthDate": "1990"})
    b = create(client, {"resourceType": "Patient", "name": [{"family": m, "given": ["A"]}], "birthDate": "1990"})
    c = create(client, {"resourceType": "Patient", "name": [{"family": m, "given": ["C"]}], "birthDate": "1980"})
    d = create(client, {"resourceType": "Patient", "name": [{"family": m, "given": ["D"]}]})
    assert ids(search(client, "/Patient", family=m, _sort="birthdate,given")) == [c["id"], b["id"], a["id"], d["id"]]
    assert ids(search(client, "/Patient", family=m, _sort="-birthdate,-given")) == [a["id"], b["id"], c["id"], d["id"]]
    assert get(client, "/Patient", _sort="nonsense").status_code == 400


def test_total_modes_and_summary_count(client: httpx.Client) -> None:
    m = uid()
    for _ in range(3):
        create(client, {"resourceType": "Patient", "name": [{"family": m}]})
    assert search(client, "/Patient", family=m)["total"] == 3
    assert search(client, "/Patient", family=m, _total="accurate")["total"] == 3
    assert "total" not in search(client, "/Patient", family=m, _total="none")
    assert search(client, "/Patient", family=m, _total="estimate")["total"] == 3
    counted = search(client, "/Patient", family=m, _summary="count")
    assert counted["total"] == 3 and "entry" not in counted


def test_summary_and_elements_are_subsetted(client: httpx.Client) -> None:
    m = uid()
    p = create(client, {"resourceType": "Patient", "name": [{"family": m}], "gender": "male",
                        "maritalStatus": {"text": "married"},
                        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}})
    full = search(client, "/Patient", _id=p["id"])["entry"][0]["resource"]
    assert "maritalStatus" in full and "text" in full and SUBSETTED not in str(full.get("meta"))
    summ = search(client, "/Patient", _id=p["id"], _summary="true")["entry"][0]["resource"]
    assert "maritalStatus" not in summ and "text" not in summ and summ["name"] and summ["gender"] == "male"
    assert any(t["code"] == SUBSETTED for t in summ["meta"]["tag"])
    text = search(client, "/Patient", _id=p["id"], _summary="text")["entry"][0]["resource"]
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = search(client, "/Patient", _id=p["id"], _summary="data")["entry"][0]["resource"]
    assert "text" not in data and "maritalStatus" in data
    el = search(client, "/Patient", _id=p["id"], _elements="gender")["entry"][0]["resource"]
    assert set(el) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == SUBSETTED for t in el["meta"]["tag"])
    assert search(client, "/Patient", _id=p["id"], _summary="false")["entry"][0]["resource"] == full


def test_prev_and_next_links_walk_both_ways(client: httpx.Client) -> None:
    m = uid()
    made = sorted(create(client, {"resourceType": "Patient", "name": [{"family": m}]})["id"] for _ in range(7))
    page = search(client, "/Patient", family=m, _count=3)
    pages = [ids(page)]
    assert not any(link["relation"] == "previous" for link in page["link"])
    while (nxt := next((link["url"] for link in page["link"] if link["relation"] == "next"), None)):
        assert nxt.startswith("http")
        page = client.get(nxt).json()
        pages.append(ids(page))
    assert [i for p in pages for i in p] == made and pages[-1] == made[6:]
    back = []
    while (prev := next((link["url"] for link in page["link"] if link["relation"] == "previous"), None)):
        page = client.get(prev).json()
        back.append(ids(page))
    assert back == [made[3:6], made[0:3]]
    assert any(link["relation"] == "next" for link in page["link"])


def test_strict_handling_and_unknown_parameters(client: httpx.Client) -> None:
    ok = client.get("/Patient", params={"foo": "bar", "family": "x"})
    assert ok.status_code == 200 and "foo" not in ok.json()["link"][0]["url"]
    strict = client.get("/Patient", params={"foo": "bar"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"
    assert client.get("/Patient", params={"family:sounds": "x"}).status_code == 400
    assert client.get("/Patient", params={"birthdate": "20x0"}).status_code == 400


def _patient(client: httpx.Client, family: str, ins: str) -> dict[str, Any]:
    return create(client, {"resourceType": "Patient", "name": [{"family": family, "given": ["Zoé"]}],
                           "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins}]})


def _docref(patient_id: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": f"Patient/{patient_id}"},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/x", "creation": "2024-03-01"},
                     "format": {"system": "urn:oid:1.3.6.1.4.1.19376.1.2.3",
                                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
    }
    doc.update(extra)
    return doc


def test_chains_forward_multi_type_and_contained(client: httpx.Client) -> None:
    m, ins = uid(), f"1{uuid.uuid4().int % 10**14:014d}"
    p = _patient(client, f"Chain{m}", ins)
    author = {"resourceType": "Practitioner", "id": "a1", "name": [{"family": f"Médecin{m}", "given": ["Hélène"]}]}
    d = create(client, _docref(p["id"], contained=[author], author=[{"reference": "#a1"}]))
    create(client, _docref(_patient(client, f"Other{m}", "0")["id"]))
    assert ids(search(client, "/DocumentReference", **{"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.8|{ins}",
                                                       "status": "current"})) == [d["id"]]
    assert ids(search(client, "/DocumentReference", **{"subject:Patient.name": f"chain{m}"})) == [d["id"]]
    assert ids(search(client, "/DocumentReference", **{"author.family": f"medecin{m}", "author.given": "helene"})) == [
        d["id"]]
    assert ids(search(client, "/DocumentReference", **{"author.family": "nobody" + m})) == []
    # chains nest: Immunization -> patient -> (reverse) documents
    assert client.get("/DocumentReference", params={"patient.nonsense": "x"}).status_code == 400
    assert client.get("/DocumentReference", params={"status.name": "x"}).status_code == 400


def test_has_and_nested_has(client: httpx.Client) -> None:
    m = uid()
    p = _patient(client, f"Has{m}", "1")
    q = _patient(client, f"Has{m}", "2")
    d = create(client, _docref(p["id"], description=f"note {m}"))
    dq = create(client, _docref(q["id"], description=f"note {m}"))
    create(client, {"resourceType": "Immunization", "status": "completed",
                    "patient": {"reference": f"Patient/{q['id']}"}, "occurrenceDateTime": "2024-01-01",
                    "vaccineCode": {"coding": [{"system": "urn:v", "code": "FLU"}]}})
    assert sorted(ids(search(client, "/Patient", family=f"has{m}",
                             **{"_has:DocumentReference:subject:status": "current"}))) == sorted([p["id"], q["id"]])
    assert ids(search(client, "/Patient", family=f"has{m}", **{"_has:DocumentReference:subject:_id": d["id"]})) == [
        p["id"]]
    assert ids(search(client, "/Patient", family=f"has{m}", **{"_has:Immunization:patient:vaccine-code": "FLU"})) == [
        q["id"]]
    # nested: documents whose patient has a FLU vaccination
    assert ids(search(client, "/DocumentReference", **{
        "patient._has:Immunization:patient:vaccine-code": "FLU", "description": f"note {m}"})) == [dq["id"]]
    assert sorted(ids(search(client, "/DocumentReference", **{"patient:Patient.family": f"has{m}"}))) == sorted(
        [d["id"], dq["id"]])
    assert client.get("/Patient", params={"_has:Nope:subject:status": "x"}).status_code == 400


def test_include_revinclude_iterate_and_wildcard(client: httpx.Client) -> None:
    m = uid()
    p = _patient(client, f"Inc{m}", "1")
    d1 = create(client, _docref(p["id"], description=f"inc {m}"))
    replaces = {"code": "replaces", "target": {"reference": f"DocumentReference/{d1['id']}"}}
    d2 = create(client, _docref(p["id"], description=f"inc {m}", relatesTo=[replaces]))
    b = search(client, "/DocumentReference", _id=d2["id"], _include="DocumentReference:subject")
    modes = {(e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"] for e in b["entry"]}
    assert modes == {("DocumentReference", d2["id"]): "match", ("Patient", p["id"]): "include"}
    assert b["total"] == 1
    star = search(client, "/DocumentReference", _id=d2["id"], _include="*")
    assert {e["resource"]["id"] for e in star["entry"]} == {d2["id"], p["id"], d1["id"]}
    rev = search(client, "/Patient", _id=p["id"], _revinclude="DocumentReference:subject")
    assert {e["resource"]["id"] for e in rev["entry"] if e["search"]["mode"] == "include"} == {d1["id"], d2["id"]}
    it = search(client, "/DocumentReference", _id=d2["id"], _include="DocumentReference:relatesto",
                **{"_include:iterate": "DocumentReference:subject"})
    assert {e["resource"]["id"] for e in it["entry"]} == {d2["id"], d1["id"], p["id"]}
    assert client.get("/Patient", params={"_include": "Patient:nope"}).status_code == 400


def test_mhd_iti67_parameters(client: httpx.Client) -> None:
    m = uid()
    p = _patient(client, f"Mhd{m}", "1")
    doc = _docref(
        p["id"], date="2024-03-02T10:00:00+01:00",
        securityLabel=[{"coding": [{"system": "urn:c", "code": "N"}]}],
        category=[{"coding": [{"system": "urn:cat", "code": "REPORTS"}]}],
        context={"event": [{"coding": [{"system": "urn:ev", "code": "E1"}]}],
                 "facilityType": {"coding": [{"system": "urn:fac", "code": "SA01"}]},
                 "practiceSetting": {"coding": [{"system": "urn:set", "code": "ONC"}]},
                 "period": {"start": "2024-02-01", "end": "2024-02-10"},
                 "related": [{"reference": f"Patient/{p['id']}"}]},
        extension=[{"url": "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived",
                    "valueBoolean": False}])
    d = create(client, doc)
    base = {"patient": f"Patient/{p['id']}", "status": "current"}
    hits = [
        {"creation": "2024-03-01"}, {"creation": "ge2024-02"}, {"date": "2024-03-02"}, {"event": "E1"},
        {"facility": "urn:fac|SA01"}, {"setting": "ONC"}, {"period": "2024-02"}, {"period": "ge2024-02-05"},
        {"period-start": "2024-02-01"},
        {"period-end": "le2024-02-10"}, {"format": "urn:ihe:iti:xds:2017:mimeTypeSufficient"},
        {"security-label": "N"}, {"category": "REPORTS"}, {"type": "http://loinc.org|11488-4"},
        {"related": f"Patient/{p['id']}"}, {"isArchived": "false"},
    ]
    for extra in hits:
        assert ids(search(client, "/DocumentReference", **base, **extra)) == [d["id"]], extra
    misses = [{"creation": "2024-03-02"}, {"period": "2024-03"}, {"period": "2024-02-05"}, {"event": "E2"},
              {"isArchived": "true"}, {"period-start": "gt2024-02-01"}]
    for extra in misses:
        assert ids(search(client, "/DocumentReference", **base, **extra)) == [], extra
    post = client.post("/DocumentReference/_search", data={**base, "setting": "ONC"})
    assert post.status_code == 200 and ids(post.json()) == [d["id"]]


def test_composite_relationship(client: httpx.Client) -> None:
    p = _patient(client, f"Comp{uid()}", "1")
    d1 = create(client, _docref(p["id"]))
    d2 = create(client, _docref(p["id"], relatesTo=[
        {"code": "replaces", "target": {"reference": f"DocumentReference/{d1['id']}"}},
        {"code": "appends", "target": {"reference": f"DocumentReference/{p['id']}x"}}]))
    found = search(client, "/DocumentReference", relationship=f"replaces$DocumentReference/{d1['id']}")
    assert ids(found) == [d2["id"]]
    # components must match inside the same relatesTo
    assert ids(search(client, "/DocumentReference", relationship=f"appends$DocumentReference/{d1['id']}")) == []
    assert client.get("/DocumentReference", params={"relationship": "replaces"}).status_code == 400


def test_list_parameters_and_underscore_list(client: httpx.Client) -> None:
    m = uid()
    p = _patient(client, f"Lst{m}", "1")
    d = create(client, _docref(p["id"]))
    lst = create(client, {
        "resourceType": "List", "status": "current", "mode": "working", "subject": {"reference": f"Patient/{p['id']}"},
        "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                             "code": "submissionset"}]},
        "extension": [
            {"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
             "valueIdentifier": {"value": f"urn:oid:1.2.3.{m[:4]}"}},
            {"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType",
             "valueCodeableConcept": {"coding": [{"system": "urn:dt", "code": "DT1"}]}}],
        "entry": [{"item": {"reference": f"DocumentReference/{d['id']}"}}]})
    assert ids(search(client, "/List", patient=p["id"], designationType="urn:dt|DT1")) == [lst["id"]]
    assert ids(search(client, "/List", sourceId=f"urn:oid:1.2.3.{m[:4]}")) == [lst["id"]]
    assert ids(search(client, "/List", item=f"DocumentReference/{d['id']}", code="submissionset")) == [lst["id"]]
    assert ids(search(client, "/DocumentReference", _list=lst["id"])) == [d["id"]]
    assert ids(search(client, "/Patient", _list=lst["id"])) == []


def test_text_and_content(client: httpx.Client) -> None:
    m = uid()
    p = create(client, {"resourceType": "Patient", "name": [{"family": f"Txt{m}"}], "text": {
        "status": "generated",
        "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">Allergie à la pénicilline {m}</div>"}})
    assert ids(search(client, "/Patient", _text=f"penicilline {m}")) == [p["id"]]
    assert ids(search(client, "/Patient", _content=f"txt{m}")) == [p["id"]]
    assert ids(search(client, "/Patient", _text=f"txt{m}")) == []  # the name is not in the narrative


@pytest.mark.parametrize("value", ["2024-03-31T23:30:00-01:00", "2024-04-01T00:30:00Z"])
def test_time_zone_rule_near_midnight(client: httpx.Client, value: str) -> None:
    """Values without a zone are UTC: 23:30 at -01:00 is 00:30Z on April 1st."""
    m = uid()
    i = create(client, {"resourceType": "Immunization", "status": "completed", "occurrenceDateTime": value,
                        "patient": {"reference": f"Patient/tz{m}"},
                        "vaccineCode": {"coding": [{"system": "urn:v", "code": "X"}]}})
    assert ids(search(client, "/Immunization", patient=f"tz{m}", date="2024-04-01")) == [i["id"]]
    assert ids(search(client, "/Immunization", patient=f"tz{m}", date="2024-03-31")) == []
    # DST change in Europe/Paris (2024-03-31 02:00 -> 03:00): offsets are applied as given
    assert ids(search(client, "/Immunization", patient=f"tz{m}", date="2024-04-01T02:30:00+02:00")) == [i["id"]]
    assert ids(search(client, "/Immunization", patient=f"tz{m}", date="lt2024-04-01T02:00:00+02:00")) == []


def test_capability_statement_lists_what_works(client: httpx.Client) -> None:
    cs = client.get("/metadata").json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    doc = by_type["DocumentReference"]
    names = {p["name"] for p in doc["searchParam"]}
    assert {"creation", "period-start", "patient", "relationship", "_text", "_has", "_list"} <= names
    assert "_query" not in {p["name"] for p in by_type["Patient"]["searchParam"]}
    assert "DocumentReference:subject" in doc["searchInclude"]
    assert "DocumentReference:subject" in by_type["Patient"]["searchRevInclude"]
    assert {"designationType", "sourceId", "isArchived"} <= {p["name"] for p in by_type["List"]["searchParam"]}
    assert "searchParam" not in by_type.get("Binary", {})


def test_token_in_and_not_in_known_value_sets(client: httpx.Client) -> None:
    p = _patient(client, f"Vs{uid()}", "1")
    j07 = "https://mos.esante.gouv.fr/NOS/JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS"
    inside = create(client, _docref(p["id"]))  # LOINC 11488-4 is in JDV_J07
    outside = create(client, _docref(p["id"], type={"coding": [{"system": "urn:other", "code": "11488-4"}]}))
    assert ids(search(client, "/DocumentReference", patient=p["id"], **{"type:in": j07})) == [inside["id"]]
    assert ids(search(client, "/DocumentReference", patient=p["id"], **{"type:in": "urn:oid:1.2.250.1.213.1.1.5.471"})
               ) == [inside["id"]]
    assert ids(search(client, "/DocumentReference", patient=p["id"], **{"type:not-in": j07})) == [outside["id"]]
    assert client.get("/DocumentReference", params={"type:in": "http://unknown/vs"}).status_code == 400
    assert client.get("/DocumentReference", params={"type:below": "http://loinc.org|11488-4"}).status_code == 400


def test_caps_are_reported_never_silent(client: httpx.Client, server: RunningServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The server runs in this process: lower the caps to exercise them with a handful of resources."""
    from fhir_server.interactions import search_exec

    p = _patient(client, f"Cap{uid()}", "1")
    docs = {create(client, _docref(p["id"]))["id"] for _ in range(3)}
    monkeypatch.setattr(server.ctx.settings, "max_included", 2)  # FHIR_MAX_INCLUDED
    b = search(client, "/Patient", _id=p["id"], _revinclude="DocumentReference:subject")
    included = [e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] == "include"]
    outcome = [e["resource"] for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert len(included) == 2 and set(included) <= docs and b["total"] == 1
    assert outcome and outcome[0]["issue"][0]["severity"] == "warning"
    monkeypatch.setattr(search_exec, "MAX_IDS", 2)
    monkeypatch.setattr(search_exec, "FIRST_TRY", 1)
    resp = client.get("/Patient", params={"_has:DocumentReference:subject:status": "current"})
    assert resp.status_code == 400 and resp.json()["issue"][0]["code"] == "too-costly"
    resp = client.get("/DocumentReference", params={"patient.gender:missing": "true"})
    assert resp.status_code == 400 and resp.json()["issue"][0]["code"] == "too-costly"


def test_iti67_on_published_pdsm_examples(client: httpx.Client, shared_data: Any) -> None:
    """The ANS PDSm examples: ITI-67 by patient.identifier + status, with the patient included."""
    import json

    src = shared_data / "fr" / "pdsm-published-json"
    for name in ("Patient-fr-patient-123.json", "DocumentReference-exemple-pdsm-documentreference.json"):
        res = json.loads((src / name).read_text(encoding="utf-8"))
        if res["resourceType"] == "DocumentReference":
            # the published example breaks dom-3/dom-4 and the Comprehensive "contained" rule: make its author the
            # contained Practitioner (as Comprehensive requires) and drop the profile claim it does not meet
            res.pop("meta", None)
            for c in res["contained"]:
                c.pop("meta", None)
            res["author"] = [{"reference": "#practitioner-example"}]
        resp = client.put(f"/{res['resourceType']}/{res['id']}", json=res, headers=FHIR_JSON)
        assert resp.status_code in (200, 201), resp.text
    b = search(client, "/DocumentReference", **{
        "patient.identifier": "urn:oid:1.2.250.1.213.1.4.8|180017505600103", "status": "current",
        "_include": "DocumentReference:subject"})
    modes = {(e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"] for e in b["entry"]}
    assert modes == {("DocumentReference", "exemple-pdsm-documentreference"): "match",
                     ("Patient", "fr-patient-123"): "include"}
    assert ids(search(client, "/DocumentReference", patient="fr-patient-123", status="superseded")) == []
    assert ids(search(client, "/DocumentReference", patient="fr-patient-123", status="current",
                      **{"author.family": "leclerc", "author.given": "Sophie"})) == ["exemple-pdsm-documentreference"]
