"""FHIR decimals keep their exact digits: JSON parse/serialise, store, XML ⇄ JSON (formats/numbers.py)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.formats import from_xml, numbers, to_xml
from fhir_server.formats.numbers import FhirDecimal

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FHIR_XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}
EXT = "http://example.org/fhir/StructureDefinition/measure"

# the lexical space of FHIR decimal (datatypes.html#decimal), without the NaN/Infinity JSON refuses
DECIMALS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,2})?\Z")


def patient(text: str) -> bytes:
    """A Patient whose extension holds the decimal written exactly as ``text``."""
    return (b'{"resourceType":"Patient","extension":[{"url":"' + EXT.encode() + b'","valueDecimal":'
            + text.encode() + b'}],"name":[{"family":"Dec"}]}')


def value_text(raw: bytes) -> str:
    """The decimal as written in a JSON document (the text between the key and the next delimiter)."""
    tail = raw.split(b'"valueDecimal":', 1)[1].lstrip()
    end = min(i for i in (tail.find(b"}"), tail.find(b","), tail.find(b"\n")) if i >= 0)
    return tail[:end].decode().strip()


@given(DECIMALS)
def test_json_round_trip_keeps_every_digit(text: str) -> None:
    raw = patient(text)
    parsed = numbers.loads(raw)
    value = parsed["extension"][0]["valueDecimal"]
    assert numbers.dumps(parsed) == raw
    assert float(value) == float(text)  # still a number for everything that reads it (ints stay ints)


@given(DECIMALS)
def test_xml_json_round_trip_keeps_every_digit(text: str) -> None:
    parsed = numbers.loads(patient(text))
    xml = to_xml(parsed)
    assert f'<valueDecimal value="{text}"/>'.encode() in xml
    assert numbers.dumps(from_xml(xml)) == patient(text)


def test_fast_path_and_edge_cases() -> None:
    plain = b'{"resourceType":"Patient","birthDate":"1970-01-01","meta":{"lastUpdated":"2020-01-01T10:00:00.000Z"}}'
    assert numbers.compact(plain)[0]  # one line orjson writes back as is: no second parse
    assert numbers.compact(b'{"a":[1,2.5]}')[0] and not numbers.compact(b'{"a":[1,2.50]}')[0]
    assert not numbers.compact(b'{"a" : 1}')[0] and not numbers.compact(b'{\n"a":1}')[0]
    assert numbers.loads(b'{\n"a": [1, 2.50, -0, 1e2]}') == {"a": [1, 2.5, 0, 100.0]}
    assert numbers.dumps(numbers.loads(b'{\n"a": [1, 2.50, -0, 1e2]}')) == b'{"a":[1,2.50,-0,1e2]}'
    big = numbers.loads(b'{"a":123456789012345678901234567890}')["a"]
    assert isinstance(big, FhirDecimal) and numbers.dumps(big) == b"123456789012345678901234567890"
    assert numbers.loads(b'{"a":2,"b":1.5}') == {"a": 2, "b": 1.5}
    for bad in (b'{"a":NaN,"b":1.5}', b'{"a":1.5', b'{"a":"\\ud800","b":1.0}', b'\xff{"a":1.0}',
                b'{"a": 1e400}', b'{"a": Infinity}', b'{"a":\n"\\udc00"}', "{\"a\": \"\ud800\"}"):
        with pytest.raises(orjson.JSONDecodeError):
            numbers.loads(bad)
    with pytest.raises(TypeError):  # a call site forgetting numbers.dumps fails loudly, never rounds
        orjson.dumps(FhirDecimal("1.50"))
    assert str(FhirDecimal("1e2")) == "1e2" and FhirDecimal("1.50") == 1.5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=DECIMALS)
def test_http_json_store_json_and_xml(client: httpx.Client, text: str) -> None:
    created = client.post("/Patient", content=patient(text), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert value_text(created.content) == text
    pid = created.json()["id"]
    assert value_text(client.get(f"/Patient/{pid}").content) == text
    assert value_text(client.get(f"/Patient/{pid}", params={"_pretty": "true"}).content) == text
    xml = client.get(f"/Patient/{pid}", headers={"Accept": "application/fhir+xml"})
    assert f'<valueDecimal value="{text}"/>' in xml.text


def test_http_xml_in_json_out_and_bundles(client: httpx.Client) -> None:
    fam = "Dec" + uuid.uuid4().hex[:8]
    xml = (f'<Patient xmlns="http://hl7.org/fhir"><extension url="{EXT}"><valueDecimal value="0.1000"/></extension>'
           f'<name><family value="{fam}"/></name></Patient>')
    created = client.post("/Patient", content=xml, headers=FHIR_XML)
    assert created.status_code == 201 and 'value="0.1000"' in created.text
    pid = created.headers["Location"].split("/Patient/")[1].split("/")[0]
    assert value_text(client.get(f"/Patient/{pid}").content) == "0.1000"
    # searchable as usual (the index builder reads the number), and served with its digits
    found = client.get("/Patient", params={"family": fam})
    assert found.json()["total"] == 1 and value_text(found.content) == "0.1000"
    # a transaction entry, a PUT and a FHIRPath Patch value
    bundle = b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + patient("1.10") + \
        b',"request":{"method":"POST","url":"Patient"}}]}'
    resp = client.post("/", content=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200 and value_text(resp.content) == "1.10"
    body = patient("2.500").replace(b'{"resourceType":"Patient",', f'{{"resourceType":"Patient","id":"{pid}",'.encode())
    assert value_text(client.put(f"/Patient/{pid}", content=body, headers=FHIR_JSON).content) == "2.500"
    patch = (b'{"resourceType":"Parameters","parameter":[{"name":"operation","part":['
             b'{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.extension.value"},'
             b'{"name":"value","valueDecimal":3.000}]}]}')
    patched = client.patch(f"/Patient/{pid}", content=patch, headers=FHIR_JSON)
    assert patched.status_code == 200, patched.text
    assert value_text(patched.content) == "3.000"
    # the validator still sees a number: a string is not a decimal
    bad: dict[str, Any] = orjson.loads(patient("1.5"))
    bad["extension"][0]["valueDecimal"] = "1.5"
    assert client.post("/Patient", json=bad, headers=FHIR_JSON).status_code == 422


def test_load_and_bulk_load_keep_every_digit(es_url: str, tmp_path: Any) -> None:
    """``fhir-server load`` (ordinary and ``--bulk``) stores the decimals as written in the files."""
    from fhir_server.context import ServerContext
    from fhir_server.loader import bulk_load, load
    from tests.conftest import make_settings

    settings = make_settings(es_url, tmp_path)
    ctx = ServerContext.build(settings, es_url, start_indexer=False)
    try:
        lines = [patient(t).replace(b'"resourceType":"Patient",', f'"resourceType":"Patient","id":"{i}",'.encode())
                 for i, t in (("p1", "1.50"), ("p2", "123456789012345678901234.0"))]
        (tmp_path / "a.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        report = load(ctx, [tmp_path / "a.ndjson"])
        assert report.loaded == 2, report
        for pid, text in (("p1", "1.50"), ("p2", "123456789012345678901234.0")):
            stored = ctx.store.read("Patient", pid)
            assert stored is not None and stored.content is not None
            assert value_text(stored.content) == text
        (tmp_path / "b.ndjson").write_bytes(lines[0].replace(b'"id":"p1"', b'"id":"b1"') + b"\n")
        bulk_load(ctx, [tmp_path / "b.ndjson"], workers=0)
        stored = ctx.store.read("Patient", "b1")
        assert stored is not None and stored.content is not None and value_text(stored.content) == "1.50"
    finally:
        ctx.indices.drop_all()
        ctx.close()
