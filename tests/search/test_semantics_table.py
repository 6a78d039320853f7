"""Table-driven R4 search semantics against the real server and Elasticsearch, one row per rule.

One data set is created per module (every resource tagged ``urn:scope|<marker>``); each row is a
query (the scope tag is added to it) and the expected result as resource labels, or an HTTP status
for errors.  Rows are written from search.html and ``shared/docs/search-semantics.md`` section 5.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import RunningServer

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
GENDER = "http://hl7.org/fhir/administrative-gender"
SNOMED = "http://snomed.info/sct"  # the one R4 CodeSystem that says caseSensitive = false
DIV = '<div xmlns="http://www.w3.org/1999/xhtml">Hello <b>wörld</b></div>'


def _patients(m: str, base: str) -> dict[str, dict[str, Any]]:
    return {
        "bene": {"resourceType": "Patient", "name": [{"family": f"Bénédicte{m}", "given": ["Hélène"]}],
                 "gender": "female", "birthDate": "1980-05-04", "active": True,
                 "identifier": [{"system": "urn:sys", "value": f"V{m}",
                                 "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record"}}],
                 "telecom": [{"system": "email", "value": f"Jo{m}@X.org"}, {"system": "phone", "value": "+33 1 23"}],
                 "maritalStatus": {"coding": [{"system": "urn:ms", "code": "M", "display": "Married"}],
                                   "text": "Marié"},
                 "generalPractitioner": [{"reference": "Practitioner/gp1", "display": "Dr Émile Zola"}],
                 "text": {"status": "generated", "div": DIV},
                 "meta": {"security": [{"system": ACT_REASON, "code": "ETREAT"}],
                          "tag": [{"system": "urn:tags", "code": "t1", "display": "Tag Display"},
                                  {"system": SNOMED, "code": "CiTag"}],
                          "profile": [f"http://example.org/StructureDefinition/p{m}|1.0"],
                          "source": f"http://src.example/{m}#abc"}},
        "jp": {"resourceType": "Patient", "gender": "male", "birthDate": "1980", "active": False,
               "name": [{"family": f"benedicte{m}", "given": ["Jean-Pierre"], "text": "Jean Pierre X"}],
               "identifier": [{"value": f"V{m}"}],
               "generalPractitioner": [{"reference": f"{base}/Practitioner/gp2"}],
               "meta": {"security": [{"system": ACT_REASON, "code": "TREAT"}]}},
        "ext": {"resourceType": "Patient", "name": [{"family": f"Other{m}"}],
                "_gender": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                            "valueCode": "unknown"}]}},
        "comma": {"resourceType": "Patient", "name": [{"family": f"a,b{m}"}], "birthDate": "1999-12-31"},
    }


def _documents(m: str, ids: dict[str, str], base: str) -> dict[str, dict[str, Any]]:
    content = [{"attachment": {"url": "http://example.org/doc"}}]
    return {
        "d1": {"resourceType": "DocumentReference", "status": "current", "content": content,
               "subject": {"reference": f"Patient/{ids['bene']}/_history/1"},
               "author": [{"identifier": {"system": "urn:rpps", "value": f"A{m}"}}],
               "date": "2024-01-01T10:00:00+01:00", "context": {"period": {"start": "2023-01-01"}},
               "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                              "code": "N"}]}]},
        "d2": {"resourceType": "DocumentReference", "status": "superseded", "content": content,
               "subject": {"reference": f"{base}/Patient/{ids['jp']}"},
               "context": {"period": {"start": "2023-01-01", "end": "2023-06-30"}}},
        "d3": {"resourceType": "DocumentReference", "status": "current", "content": content,
               "date": "2024-01-01T23:30:00-02:00"},
    }


@pytest.fixture(scope="module")
def data(server: RunningServer) -> Iterator[tuple[str, dict[str, str]]]:
    """(scope marker, label -> id) of the module's data set."""
    m = uuid.uuid4().hex[:8]
    labels: dict[str, str] = {}
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        def make(label: str, res: dict[str, Any]) -> None:
            meta = res.setdefault("meta", {})
            meta["tag"] = [*meta.get("tag", []), {"system": "urn:scope", "code": m}]
            resp = c.post(f"/{res['resourceType']}", json=res, headers=FHIR_JSON)
            assert resp.status_code == 201, resp.text
            labels[label] = resp.json()["id"]

        for label, res in _patients(m, server.base_url).items():
            make(label, res)
        for label, res in _documents(m, labels, server.base_url).items():
            make(label, res)
        d2 = labels["d2"]
        relates = c.get(f"/DocumentReference/{d2}").json()
        relates["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{labels['d1']}"}}]
        assert c.put(f"/DocumentReference/{d2}", json=relates, headers=FHIR_JSON).status_code == 200
    yield m, labels


Row = tuple[str, list[tuple[str, str]], "set[str] | int"]

PATIENT_ROWS: list[Row] = [
    # string: starts-with after case/accent folding; :exact; :contains; :text (words)
    ("string default", [("family", "benedicte{m}")], {"bene", "jp"}),
    ("string prefix", [("family", "BENED")], {"bene", "jp"}),
    ("string not infix", [("family", "edicte{m}")], set()),
    ("string exact", [("family:exact", "Bénédicte{m}")], {"bene"}),
    ("string exact case", [("family:exact", "bénédicte{m}")], set()),
    ("string exact accent", [("family:exact", "Benedicte{m}")], set()),
    ("string contains", [("family:contains", "ÉDICTE{m}")], {"bene", "jp"}),
    ("string whole name text", [("name", "jean pierre x")], {"jp"}),
    ("string text words any order", [("given:text", "pierre jean")], {"jp"}),
    ("string text word start only", [("given:text", "ierre")], set()),
    ("string missing", [("given:missing", "true")], {"ext", "comma"}),
    ("string text word too long", [("given:text", "a" * 201)], 400),
    ("string value too long for a prefix query", [("family", "a" * 1001)], 400),
    ("string :contains value too long", [("family:contains", "a" * 257)], 400),
    ("uri :below too long", [("_profile:below", "http://" + "a" * 1000)], 400),
    ("string OR", [("family", "other{m},a\\,b{m}")], {"ext", "comma"}),
    ("string escaped comma", [("family", "a\\,b")], {"comma"}),
    # token
    ("token code any system", [("identifier", "V{m}")], {"bene", "jp"}),
    ("token system|code", [("identifier", "urn:sys|V{m}")], {"bene"}),
    ("token |code = no system", [("identifier", "|V{m}")], {"jp"}),
    ("token system|", [("identifier", "urn:sys|")], {"bene"}),
    ("token identifier case-sensitive", [("identifier", "v{m}")], set()),
    ("token escaped pipe is a code", [("identifier", "urn:sys\\|V{m}")], set()),
    ("token :not includes missing", [("identifier:not", "urn:sys|V{m}")], {"jp", "ext", "comma"}),
    ("token :of-type", [("identifier:of-type", f"{V2_0203}|MR|V{{m}}")], {"bene"}),
    ("token :of-type other type", [("identifier:of-type", f"{V2_0203}|DL|V{{m}}")], set()),
    ("token :text on Identifier.type.text", [("identifier:text", "medical rec")], {"bene"}),
    ("token :text is starts-with on the whole text", [("identifier:text", "record")], set()),
    ("token :text case and accent folded", [("identifier:text", "MÉDICAL")], {"bene"}),
    ("token :text not a later word of Coding.display", [("_tag:text", "display")], set()),
    ("token :text on CodeableConcept.text", [("_security:text", "nothing")], set()),
    ("token :missing", [("identifier:missing", "true")], {"ext", "comma"}),
    ("token code case-sensitive system", [("gender", "FEMALE")], set()),
    ("token system|code case-sensitive system", [("gender", f"{GENDER}|FEMALE")], set()),
    ("token code of an unknown system is exact", [("_tag", "T1")], set()),
    ("token code case-insensitive system", [("_tag", f"{SNOMED}|citag")], {"bene"}),
    ("token code without system, case-insensitive system", [("_tag", "CITAG")], {"bene"}),
    ("token code exact in a case-insensitive system", [("_tag", f"{SNOMED}|CiTag")], {"bene"}),
    ("token implicit system of code", [("gender", f"{GENDER}|male")], {"jp"}),
    ("token code without system", [("gender", "|male")], {"jp"}),
    ("token :not on gender", [("gender:not", "male")], {"bene", "ext", "comma"}),
    ("token extension only is missing", [("gender:missing", "true")], {"ext", "comma"}),
    ("token boolean", [("active", "true")], {"bene"}),
    ("token boolean false", [("active", "false")], {"jp"}),
    ("token ContactPoint case-insensitive", [("email", "jo{m}@x.org")], {"bene"}),
    ("token ContactPoint system|value", [("telecom", "phone|+33 1 23")], {"bene"}),
    ("token :in core value set", [("gender:in", "http://hl7.org/fhir/ValueSet/administrative-gender")],
     {"bene", "jp"}),
    ("token :not-in", [("gender:not-in", "http://hl7.org/fhir/ValueSet/administrative-gender")], {"ext", "comma"}),
    ("token :below is-a", [("_security:below", f"{ACT_REASON}|TREAT")], {"bene", "jp"}),
    ("token :below leaf", [("_security:below", f"{ACT_REASON}|ETREAT")], {"bene"}),
    ("token :above", [("_security:above", f"{ACT_REASON}|ETREAT")], {"bene", "jp"}),
    ("token :above of a parent", [("_security:above", f"{ACT_REASON}|TREAT")], {"jp"}),
    ("token :below system|", [("_security:below", f"{ACT_REASON}|")], {"bene", "jp"}),
    ("token :below flat system", [("gender:below", f"{GENDER}|female")], {"bene"}),
    ("token :below unknown system", [("gender:below", "http://snomed.info/sct|1")], 400),
    ("token :below without system", [("gender:below", "male")], 400),
    ("token :in unknown value set", [("gender:in", "http://example.org/vs")], 400),
    ("token unsupported modifier", [("gender:exact", "male")], 400),
    # common parameters
    ("_tag", [("_tag", "urn:tags|t1")], {"bene"}),
    ("_tag :text", [("_tag:text", "tag disp")], {"bene"}),
    ("_tag :not", [("_tag:not", "urn:tags|t1")], {"jp", "ext", "comma"}),
    ("_profile ignores the version", [("_profile", "http://example.org/StructureDefinition/p{m}")], {"bene"}),
    ("_profile versioned", [("_profile", "http://example.org/StructureDefinition/p{m}|1.0")], {"bene"}),
    ("uri :below", [("_profile:below", "http://example.org/StructureDefinition")], {"bene"}),
    ("uri :above", [("_profile:above", "http://example.org/StructureDefinition/p{m}/x")], {"bene"}),
    ("_source", [("_source", "http://src.example/{m}#abc")], {"bene"}),
    ("_source :missing", [("_source:missing", "true")], {"jp", "ext", "comma"}),
    ("_lastUpdated", [("_lastUpdated", "gt2020-01-01T00:00:00Z"), ("_lastUpdated", "lt2999")],
     {"bene", "jp", "ext", "comma"}),
    ("_text", [("_text", "WORLD")], {"bene"}),
    ("_content", [("_content", "marie")], {"bene"}),
    # date: ranges, nine prefixes
    ("date year", [("birthdate", "1980")], {"bene", "jp"}),
    ("date month", [("birthdate", "1980-05")], {"bene"}),
    ("date ne", [("birthdate", "ne1980-05")], {"jp", "comma"}),
    ("date gt", [("birthdate", "gt1980-05")], {"jp", "comma"}),
    ("date ge contains", [("birthdate", "ge1980")], {"bene", "jp", "comma"}),
    ("date lt", [("birthdate", "lt1980-05-04")], {"jp"}),
    ("date le", [("birthdate", "le1980-05-04")], {"bene", "jp"}),
    ("date sa", [("birthdate", "sa1980-12-31")], {"comma"}),
    ("date eb", [("birthdate", "eb1981")], {"bene", "jp"}),
    ("date ap", [("birthdate", "ap1980-05-04")], {"bene", "jp"}),
    ("date AND", [("birthdate", "ge1980"), ("birthdate", "lt1980-06")], {"bene", "jp"}),
    ("date missing", [("birthdate:missing", "true")], {"ext"}),
    ("date malformed", [("birthdate", "1980-13")], 400),
    ("date bad prefix", [("birthdate", "xx1980")], 400),
    # reference
    ("reference Type/id", [("general-practitioner", "Practitioner/gp1")], {"bene"}),
    ("reference bare id", [("general-practitioner", "gp2")], {"jp"}),
    ("reference :Type", [("general-practitioner:Practitioner", "gp2")], {"jp"}),
    ("reference stored absolute", [("general-practitioner", "Practitioner/gp2")], {"jp"}),
    ("reference :text on display", [("general-practitioner:text", "dr emile")], {"bene"}),
    ("reference :text is starts-with on the display", [("general-practitioner:text", "zola")], set()),
    ("reference :text case and accent folded", [("general-practitioner:text", "DR ÉM")], {"bene"}),
    ("reference :missing", [("general-practitioner:missing", "true")], {"ext", "comma"}),
    ("reference wrong :Type", [("general-practitioner:Patient", "gp2")], 400),
]

DOCUMENT_ROWS: list[Row] = [
    ("versioned stored reference", [("subject", "Patient/{bene}")], {"d1"}),
    ("versioned query reference", [("subject", "Patient/{bene}/_history/1")], {"d1"}),
    ("absolute query reference", [("subject", "{base}/Patient/{bene}")], {"d1"}),
    ("absolute stored reference", [("patient", "{jp}")], {"d2"}),
    ("reference :identifier", [("author:identifier", "urn:rpps|A{m}")], {"d1"}),
    ("chain", [("subject:Patient.name", "benedicte{m}")], {"d1", "d2"}),
    ("chain identifier", [("patient.identifier", "urn:sys|V{m}")], {"d1"}),
    ("composite", [("relationship", "replaces$DocumentReference/{d1}")], {"d2"}),
    ("composite other code", [("relationship", "appends$DocumentReference/{d1}")], set()),
    ("composite code case-sensitive", [("relationship", "REPLACES$DocumentReference/{d1}")], set()),
    ("composite code with its system",
     [("relationship", "http://hl7.org/fhir/document-relationship-type|replaces$DocumentReference/{d1}")], {"d2"}),
    ("composite code in another system", [("relationship", "urn:other|replaces$DocumentReference/{d1}")], set()),
    ("composite :missing", [("relationship:missing", "true")], {"d1", "d3"}),
    ("code with implicit system", [("status", "http://hl7.org/fhir/document-reference-status|current")],
     {"d1", "d3"}),
    # dateTime with offsets: stored 10:00+01:00 is 09:00Z; 23:30-02:00 is the next day 01:30Z
    ("dateTime in UTC", [("date", "2024-01-01T09:00:00Z")], {"d1"}),
    ("dateTime day", [("date", "2024-01-01")], {"d1"}),
    ("dateTime next day in UTC", [("date", "2024-01-02")], {"d3"}),
    ("dateTime with offset", [("date", "2024-01-01T23:30:00-02:00")], {"d3"}),
    ("Period open end gt", [("period", "gt2030")], {"d1"}),
    ("Period open end sa", [("period", "sa2022")], {"d1", "d2"}),
    ("Period open end never eb", [("period", "eb2030")], {"d2"}),
    ("Period eq", [("period", "2023")], {"d2"}),
    ("Period ne", [("period", "ne2023")], {"d1"}),
    ("Period missing", [("period:missing", "true")], {"d3"}),
    ("security-label :below flat", [("security-label:below",
                                     "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N")], {"d1"}),
]


def _fill(text: str, m: str, labels: dict[str, str], base: str) -> str:
    return text.format(m=m, base=base, **labels)


def _run(client: httpx.Client, base: str, rtype: str, data: tuple[str, dict[str, str]], params: list[tuple[str, str]],
         expected: set[str] | int) -> None:
    m, labels = data
    query = [(k, _fill(v, m, labels, base)) for k, v in params] + [("_tag", f"urn:scope|{m}")]
    resp = client.get(f"/{rtype}", params=query)
    if isinstance(expected, int):
        assert resp.status_code == expected, resp.text
        outcome = resp.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"]
        return
    assert resp.status_code == 200, resp.text
    by_id = {v: k for k, v in labels.items()}
    got = {by_id.get(e["resource"]["id"], e["resource"]["id"]) for e in resp.json().get("entry", [])}
    assert got == expected, query


@pytest.mark.parametrize(("label", "params", "expected"), PATIENT_ROWS, ids=[r[0] for r in PATIENT_ROWS])
def test_patient(client: httpx.Client, server: RunningServer, data: tuple[str, dict[str, str]], label: str,
                 params: list[tuple[str, str]], expected: set[str] | int) -> None:
    _run(client, server.base_url, "Patient", data, params, expected)


@pytest.mark.parametrize(("label", "params", "expected"), DOCUMENT_ROWS, ids=[r[0] for r in DOCUMENT_ROWS])
def test_document_reference(client: httpx.Client, server: RunningServer, data: tuple[str, dict[str, str]], label: str,
                            params: list[tuple[str, str]], expected: set[str] | int) -> None:
    _run(client, server.base_url, "DocumentReference", data, params, expected)


def test_post_search_equals_get_and_mixes_query_and_body(client: httpx.Client,
                                                         data: tuple[str, dict[str, str]]) -> None:
    m, _ = data
    scope = ("_tag", f"urn:scope|{m}")
    got = client.get("/Patient", params=[("family", f"benedicte{m}"), scope]).json()
    posted = client.post("/Patient/_search", data={"family": f"benedicte{m}", "_tag": scope[1]}).json()
    mixed = client.post(f"/Patient/_search?family=benedicte{m}", data={"_tag": scope[1]}).json()
    assert [e["fullUrl"] for e in got["entry"]] == [e["fullUrl"] for e in posted["entry"]] == \
        [e["fullUrl"] for e in mixed["entry"]]
    assert got["total"] == posted["total"] == mixed["total"] == 2


def test_self_link_lists_only_used_parameters(client: httpx.Client, data: tuple[str, dict[str, str]]) -> None:
    m, _ = data
    resp = client.get("/Patient", params={"family": f"other{m}", "bogus": "1", "_format": "json", "given": "",
                                          "_count": "100000"})
    self_url = next(link["url"] for link in resp.json()["link"] if link["relation"] == "self")
    assert "bogus" not in self_url and "given" not in self_url
    assert "_format=json" in self_url  # honoured, so kept: the next page answers in the same format
    assert "_count=1000" in self_url  # the page size actually used (FHIR_MAX_COUNT)
    strict = client.get("/Patient", params={"family": "x", "_format": "json"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 200
    refused = client.get("/Patient", params={"bogus": "1"}, headers={"Prefer": "handling=strict"})
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["bogus"]


def test_last_updated_is_compared_at_full_precision(client: httpx.Client, data: tuple[str, dict[str, str]]) -> None:
    """A resource's own microsecond ``lastUpdated`` is eq/ge/le to itself, never gt/lt/ne/sa/eb (ES dates
    keep milliseconds only: the index stores microseconds in a ``long_range``)."""
    _, labels = data
    own = client.get(f"/Patient/{labels['bene']}").json()["meta"]["lastUpdated"]
    for prefix, expected in (("eq", True), ("ge", True), ("le", True), ("ap", True), ("ne", False), ("gt", False),
                             ("lt", False), ("sa", False), ("eb", False)):
        bundle = client.get("/Patient", params={"_id": labels["bene"], "_lastUpdated": prefix + own}).json()
        assert (len(bundle.get("entry", [])) == 1) is expected, (prefix, own)


def test_sort_errors_name_the_parameter(client: httpx.Client) -> None:
    for value in ("_text", "_content", "nope"):
        resp = client.get("/Patient", params={"_sort": value})
        assert resp.status_code == 400 and resp.json()["issue"][0]["expression"] == ["_sort"], value


def test_count_zero_and_empty_results_have_no_entry_array(client: httpx.Client,
                                                          data: tuple[str, dict[str, str]]) -> None:
    """FHIR JSON has no empty arrays: a page without entries leaves ``entry`` out; ``_count=0`` still counts."""
    m, _ = data
    counted = client.get("/Patient", params={"_tag": f"urn:scope|{m}", "_count": "0"}).json()
    assert counted["total"] == 4 and "entry" not in counted
    empty = client.get("/Patient", params={"_tag": f"urn:scope|{m}", "family": "zzz-nobody"}).json()
    assert empty["total"] == 0 and "entry" not in empty
