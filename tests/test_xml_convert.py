"""FHIR JSON ⇄ XML conversion (xml.html, json.html): every R4 example and French example round-trips exactly,
the spec's own paired snippets convert both ways, and hypothesis explores primitives, extensions and arrays."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.formats import XMLFormatError, from_xml, json_number, to_xml

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _examples() -> list[Path]:
    files = sorted((SHARED_DATA / "r4-examples").glob("*.json"))
    files += sorted(p for p in (SHARED_DATA / "fr").rglob("*.json") if p.name != "jdv-summary.json")
    return files


EXAMPLES = _examples()


def load_exact(text: str) -> Any:
    """JSON with decimals kept as written (``1.50`` stays ``1.50``)."""
    return json.loads(text, parse_float=Decimal)


def mismatch(a: Any, b: Any, path: str = "$") -> str | None:
    """Where two JSON values differ, strictly: types must agree (True is not 1) and numbers by their digits."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return f"{path}: {sorted(a)} vs {sorted(b) if isinstance(b, dict) else b!r}"
        return next((m for k in a if (m := mismatch(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return f"{path}: {a!r:.100} vs {b!r:.100}"
        return next((m for i, (x, y) in enumerate(zip(a, b, strict=True)) if (m := mismatch(x, y, f"{path}[{i}]"))),
                    None)
    numbers = (int, Decimal, float)
    if isinstance(a, numbers) and not isinstance(a, bool) and isinstance(b, numbers) and not isinstance(b, bool):
        return None if str(a) == str(b) else f"{path}: {a!r} vs {b!r}"
    return None if type(a) is type(b) and a == b else f"{path}: {a!r:.100} vs {b!r:.100}"


def test_the_examples_are_there() -> None:
    if not (SHARED_DATA / "r4-examples").exists():
        pytest.skip("shared data not found")
    assert len(EXAMPLES) > 700


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_round_trips_exactly(path: Path) -> None:
    original = load_exact(path.read_text(encoding="utf-8"))
    xml = to_xml(original)
    back = from_xml(xml, decimal=Decimal)
    assert mismatch(original, back) is None, mismatch(original, back)
    assert to_xml(back) == xml  # and the XML form is a fixed point


@pytest.mark.parametrize("path", EXAMPLES[::40], ids=[p.name for p in EXAMPLES[::40]])
def test_pretty_xml_is_the_same_content(path: Path) -> None:
    original = load_exact(path.read_text(encoding="utf-8"))
    assert from_xml(to_xml(original, pretty=True), decimal=Decimal) == from_xml(to_xml(original), decimal=Decimal)


def test_server_numbers_keep_their_json_type() -> None:
    """Without Decimal, decimals are what orjson would have parsed: ints stay ints, fractions are floats."""
    doc = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "valueQuantity": {"value": 2}, "component": [{"code": {"text": "y"}, "valueQuantity": {"value": 0.25}},
                                                        {"code": {"text": "z"}, "valueInteger": -3}]}
    back = from_xml(to_xml(doc))
    assert back == doc
    assert type(back["valueQuantity"]["value"]) is int
    assert json_number("1.50") == 1.5 and json_number("-0") == 0 and json_number("1e3") == 1000.0


# -- the spec's paired JSON/XML snippets (json.html#primitive, xml.html) ---------------------------------------

SPEC_PAIRS = [
    (  # json.html: a primitive with an id and an extension
        """<Patient xmlns="http://hl7.org/fhir"><birthDate id="314159" value="1970-03-30">
             <extension url="http://example.org/fhir/StructureDefinition/text">
               <valueString value="Easter 1970"/></extension></birthDate></Patient>""",
        {"resourceType": "Patient", "birthDate": "1970-03-30",
         "_birthDate": {"id": "314159", "extension": [{"url": "http://example.org/fhir/StructureDefinition/text",
                                                        "valueString": "Easter 1970"}]}},
    ),
    (  # readers are lenient about order (compose before useContext here); writers are not
        """<ValueSet xmlns="http://hl7.org/fhir"><status value="draft"/><compose><include>
             <system value="urn:iso:std:iso:3166"/><concept><code value="au"/></concept></include></compose>
             <useContext><code><code value="jurisdiction"/></code><valueCodeableConcept><coding>
             <code value="au"/></coding></valueCodeableConcept></useContext></ValueSet>""",
        {"resourceType": "ValueSet", "status": "draft",
         "useContext": [{"code": {"code": "jurisdiction"}, "valueCodeableConcept": {"coding": [{"code": "au"}]}}],
         "compose": {"include": [{"system": "urn:iso:std:iso:3166", "concept": [{"code": "au"}]}]}},
    ),
    (  # json.html: a repeating primitive, null where an occurrence has no value or no id/extension
        """<Patient xmlns="http://hl7.org/fhir"><name><given value="Ann"/><given id="g2">
             <extension url="http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier">
             <valueCode value="CL"/></extension></given><given value="Lee"/></name></Patient>""",
        {"resourceType": "Patient", "name": [{"given": ["Ann", None, "Lee"], "_given": [
            None, {"id": "g2", "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
                                              "valueCode": "CL"}]}, None]}]},
    ),
    (  # xml.html: contained resources and Bundle entries are wrapped in an element named after their type
        """<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry>
             <fullUrl value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/><resource><Patient>
             <contained><Organization><id value="o"/><active value="true"/></Organization></contained>
             <managingOrganization><reference value="#o"/></managingOrganization></Patient></resource></entry>
             <entry><resource><Parameters><parameter><name value="p"/><resource><Binary>
             <contentType value="text/plain"/><data value="aGk="/></Binary></resource></parameter>
             <parameter><name value="n"/><valueDecimal value="3.10"/></parameter></Parameters></resource></entry>
             </Bundle>""",
        {"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": {
                "resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "active": True}],
                "managingOrganization": {"reference": "#o"}}},
            {"resource": {"resourceType": "Parameters", "parameter": [
                {"name": "p", "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="}},
                {"name": "n", "valueDecimal": Decimal("3.10")}]}}]},
    ),
    (  # narrative: XHTML in XML, a string in JSON, kept character for character
        """<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"
             class='c'><p>Ren&#233;e &amp; <b>Zoë</b> &lt;3</p><br/></div></text><active value="false"/></Patient>""",
        {"resourceType": "Patient", "active": False, "text": {
            "status": "generated",
            "div": """<div xmlns="http://www.w3.org/1999/xhtml"
             class='c'><p>Ren&#233;e &amp; <b>Zoë</b> &lt;3</p><br/></div>"""}},
    ),
]


@pytest.mark.parametrize(("xml", "expected"), SPEC_PAIRS)
def test_spec_snippets_xml_to_json(xml: str, expected: dict[str, Any]) -> None:
    got = from_xml(xml.encode(), decimal=Decimal)
    assert mismatch(expected, got) is None, mismatch(expected, got)
    assert mismatch(expected, from_xml(to_xml(expected), decimal=Decimal)) is None


def test_element_order_follows_the_definitions() -> None:
    doc = {"gender": "male", "name": [{"given": ["A"], "family": "B"}], "id": "x", "resourceType": "Patient",
           "active": True}
    assert to_xml(doc) == (b'<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http://hl7.org/fhir">'
                           b'<id value="x"/><active value="true"/><name><family value="B"/><given value="A"/></name>'
                           b'<gender value="male"/></Patient>')


def test_prefixed_narrative_is_rewritten_with_its_own_namespace() -> None:
    xml = (b'<f:Patient xmlns:f="http://hl7.org/fhir" xmlns:h="http://www.w3.org/1999/xhtml"><f:text>'
           b'<f:status value="generated"/><h:div><h:p title="a&#10;b">x</h:p></h:div></f:text></f:Patient>')
    div = from_xml(xml)["text"]["div"]
    assert div == '<div xmlns="http://www.w3.org/1999/xhtml"><p title="a&#10;b">x</p></div>'


def test_narrative_that_is_not_xml_still_gives_well_formed_output() -> None:
    doc = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>caf&eacute;&nbsp;<br></div>"}}
    back = from_xml(to_xml(doc))
    assert back["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert "café" in from_xml(to_xml({**doc, "text": {"status": "generated", "div": "<div>caf&eacute;</div>"}}))[
        "text"]["div"].replace("&#233;", "é")


# -- refused input ----------------------------------------------------------------------------------------------

BAD = {
    "not FHIR namespace": (b"<Patient><id value='1'/></Patient>", "Patient"),
    "unknown element": (b'<Patient xmlns="http://hl7.org/fhir"><foo value="1"/></Patient>', "Patient.foo"),
    "not a resource": (b'<HumanName xmlns="http://hl7.org/fhir"/>', "HumanName"),
    "bad boolean": (b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>', "Patient.active"),
    "bad integer": (b'<Patient xmlns="http://hl7.org/fhir"><multipleBirthInteger value="1.5"/></Patient>',
                    "Patient.multipleBirthInteger"),
    "bad decimal": (b'<Observation xmlns="http://hl7.org/fhir"><valueQuantity><value value="1e999"/></valueQuantity>'
                    b'</Observation>', "Observation.valueQuantity.value"),
    "repeated single": (b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="male"/>'
                        b'</Patient>', "Patient.gender"),
    "two choice types": (b'<Patient xmlns="http://hl7.org/fhir"><deceasedBoolean value="true"/>'
                         b'<deceasedDateTime value="2020"/></Patient>', "Patient.deceasedDateTime"),
    "text content": (b'<Patient xmlns="http://hl7.org/fhir"><gender>male</gender></Patient>', "Patient.gender"),
    "unknown attribute": (b'<Patient xmlns="http://hl7.org/fhir"><name><given value="a" foo="b"/></name>'
                          b'</Patient>', "Patient.name[0].given[0]"),
    "empty primitive": (b'<Patient xmlns="http://hl7.org/fhir"><gender/></Patient>', "Patient.gender"),
    "two resources in one slot": (b'<Patient xmlns="http://hl7.org/fhir"><contained><Patient/><Patient/></contained>'
                                  b'</Patient>', "Patient.contained[0]"),
    "empty resource slot": (b'<Patient xmlns="http://hl7.org/fhir"><contained/></Patient>', "Patient.contained[0]"),
    "div in FHIR namespace": (b'<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/><div/></text>'
                              b'</Patient>', "Patient.text.div"),
    "malformed": (b'<Patient xmlns="http://hl7.org/fhir"><id value="1"></Patient>', None),
    "not UTF-8": ('<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="http://hl7.org/fhir">'
                  '<id value="é"/></Patient>'.encode("latin-1"), None),
    "UTF-16": ('<Patient xmlns="http://hl7.org/fhir"/>'.encode("utf-16"), None),
    "undeclared entity": (b'<Patient xmlns="http://hl7.org/fhir"><id value="&nbsp;"/></Patient>', None),
}


@pytest.mark.parametrize(("data", "expression"), BAD.values(), ids=BAD.keys())
def test_invalid_xml_is_refused_with_its_location(data: bytes, expression: str | None) -> None:
    with pytest.raises(XMLFormatError) as info:
        from_xml(data)
    assert info.value.expression == expression, info.value.message


XXE = b"""<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&xxe;"/></Patient>"""
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b']><Patient xmlns="http://hl7.org/fhir"><id value="&lol9;"/></Patient>')
PARAMETER_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/x.dtd"> %ext;]>'
                    b'<Patient xmlns="http://hl7.org/fhir"/>')
PLAIN_DOCTYPE = b'<!DOCTYPE Patient><Patient xmlns="http://hl7.org/fhir"/>'


@pytest.mark.parametrize("data", [XXE, BILLION_LAUGHS, PARAMETER_ENTITY, PLAIN_DOCTYPE],
                         ids=["xxe", "billion-laughs", "parameter-entity", "doctype"])
def test_dtds_and_entities_are_refused_before_anything_is_resolved(data: bytes) -> None:
    with pytest.raises(XMLFormatError, match="not allowed"):
        from_xml(data)


def test_deep_nesting_is_refused() -> None:
    data = (b'<Patient xmlns="http://hl7.org/fhir">' + b"<extension url='u'>" * 300 + b"</extension>" * 300
            + b"</Patient>")
    with pytest.raises(XMLFormatError, match="deeper"):
        from_xml(data)


def test_foreign_attributes_and_comments_are_ignored() -> None:
    xml = (b'<?xml version="1.0" encoding="utf-8"?><!-- c --><Patient xmlns="http://hl7.org/fhir" '
           b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://hl7.org/fhir x.xsd">'
           b"<!-- comment --><id value='p1'/><?pi x?></Patient>")
    assert from_xml(xml) == {"resourceType": "Patient", "id": "p1"}


# -- hypothesis ----------------------------------------------------------------------------------------------

# FHIR strings: any XML character (json.html: no control characters other than whitespace)
xml_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00\ufffe\uffff")
                   .filter(lambda c: c in "\t\n\r" or ord(c) >= 0x20), min_size=1, max_size=30)
decimals = st.integers(0, 6).flatmap(lambda places: st.decimals(
    min_value=-(10**9), max_value=10**9, allow_nan=False, allow_infinity=False, places=places))
ids = st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)


@st.composite
def extensions(draw: st.DrawFn, depth: int = 0) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 2))):
        ext: dict[str, Any] = {"url": draw(st.sampled_from(["http://a.example/x", "http://b.example/y?a=1&b=2"]))}
        if draw(st.booleans()):
            ext["id"] = draw(ids)
        if depth < 2 and draw(st.booleans()):
            ext["extension"] = draw(extensions(depth + 1))
        else:
            key, value = draw(st.one_of(
                st.tuples(st.just("valueString"), xml_text), st.tuples(st.just("valueBoolean"), st.booleans()),
                st.tuples(st.just("valueInteger"), st.integers(-(2**31), 2**31 - 1)),
                st.tuples(st.just("valueDecimal"), decimals),
                st.tuples(st.just("valueQuantity"), st.fixed_dictionaries({"value": decimals, "unit": xml_text})),
                st.tuples(st.just("valueCodeableConcept"), st.fixed_dictionaries({"text": xml_text}))))
            ext[key] = value
        out.append(ext)
    return out


shadows = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"id": ids, "extension": extensions()})
                    .filter(bool))


@st.composite
def primitive_array(draw: st.DrawFn) -> tuple[list[Any], list[Any] | None]:
    """A repeating primitive: every occurrence has a value, an id/extension, or both."""
    values, marks = [], []
    for _ in range(draw(st.integers(1, 4))):
        value = draw(st.one_of(st.none(), xml_text))
        shadow = draw(shadows)
        if value is None and shadow is None:
            value = "v"
        values.append(value)
        marks.append(shadow)
    return values, (marks if any(m is not None for m in marks) else None)


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"resourceType": "Patient", "id": draw(ids)}
    if draw(st.booleans()):
        doc["active"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["_active"] = draw(shadows.filter(bool))
    names = []
    for _ in range(draw(st.integers(0, 2))):
        given, given_shadow = draw(primitive_array())
        name: dict[str, Any] = {}
        if any(v is not None for v in given):
            name["given"] = given
        if given_shadow is not None:
            name["_given"] = given_shadow
        if draw(st.booleans()):
            name["family"] = draw(xml_text)
        if name:
            names.append(name)
    if names:
        doc["name"] = names
    choice = draw(st.sampled_from([None, "multipleBirthInteger", "multipleBirthBoolean"]))
    if choice == "multipleBirthInteger":
        doc[choice] = draw(st.integers(0, 2**31 - 1))
    elif choice == "multipleBirthBoolean":
        doc[choice] = draw(st.booleans())
    if draw(st.booleans()):
        doc["extension"] = draw(extensions())
    if draw(st.booleans()):
        doc["contained"] = [{"resourceType": "Organization", "id": draw(ids), "name": draw(xml_text)}]
    return doc


@settings(max_examples=150, deadline=None)
@given(patients())
def test_generated_resources_round_trip(doc: dict[str, Any]) -> None:
    xml = to_xml(doc)
    back = from_xml(xml, decimal=Decimal)
    assert mismatch(doc, back) is None, (mismatch(doc, back), xml)
    assert to_xml(back) == xml


@settings(max_examples=200, deadline=None)
@given(xml_text)
def test_any_string_survives_attributes(text: str) -> None:
    doc = {"resourceType": "Patient", "id": "a", "name": [{"text": text}]}
    assert from_xml(to_xml(doc)) == doc


@settings(max_examples=200, deadline=None)
@given(st.one_of(decimals, st.integers(-(10**30), 10**30).map(Decimal)))
def test_decimals_keep_their_digits(value: Decimal) -> None:
    doc = {"resourceType": "Observation", "status": "final", "code": {"text": "c"}, "valueQuantity": {"value": value}}
    back = from_xml(to_xml(doc), decimal=Decimal)["valueQuantity"]["value"]
    assert str(back) == str(value)


# narrative: any well-formed XHTML div comes back character for character
xhtml_text = st.text(st.sampled_from(list("ab é<>&\"'\n\t")), max_size=8).map(
    lambda t: t.replace("&", "&amp;").replace("<", "&lt;"))
char_refs = st.sampled_from(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#233;", "&#x20AC;", "&#10;"])
attr_values = st.tuples(st.sampled_from(['"', "'"]), xhtml_text).map(
    lambda qv: qv[0] + qv[1].replace(qv[0], "&quot;" if qv[0] == '"' else "&apos;") + qv[0])
attributes = st.lists(st.tuples(st.sampled_from(["class", "title", "style", "xml:lang"]), attr_values,
                                st.sampled_from([" ", "  ", "\n"])), max_size=3, unique_by=lambda a: a[0]).map(
    lambda attrs: "".join(f"{space}{name}={value}" for name, value, space in attrs))


@st.composite
def xhtml_content(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "ref", "cdata", "comment", "empty", "element"]))
        if kind == "text":
            parts.append(draw(xhtml_text))
        elif kind == "ref":
            parts.append(draw(char_refs))
        elif kind == "cdata":
            parts.append(f"<![CDATA[{draw(xhtml_text).replace(']]>', '')}]]>")
        elif kind == "comment":
            parts.append(f"<!--{draw(xhtml_text).replace('-', '')}-->")
        elif kind == "empty":
            parts.append(f"<br{draw(attributes)}{draw(st.sampled_from(['/', ' /']))}>")
        elif depth < 3:
            tag = draw(st.sampled_from(["p", "b", "span", "table"]))
            inner = draw(xhtml_content(depth + 1))
            parts.append(f"<{tag}{draw(attributes)}>{inner}</{tag}{draw(st.sampled_from(['', ' ']))}>")
    return "".join(parts)


@st.composite
def narratives(draw: st.DrawFn) -> str:
    head = f'<div xmlns="http://www.w3.org/1999/xhtml"{draw(attributes)}'
    if draw(st.booleans()):
        return head + "/>"
    return f"{head}>{draw(xhtml_content())}</div{draw(st.sampled_from(['', ' ', chr(10)]))}>"


@settings(max_examples=200, deadline=None)
@given(narratives())
def test_narratives_round_trip_exactly(div: str) -> None:
    doc = {"resourceType": "Patient", "text": {"status": "generated", "div": div}, "active": True}
    assert from_xml(to_xml(doc)) == doc
    assert from_xml(to_xml(doc, pretty=True)) == doc


SEED_XML = to_xml({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
    "resourceType": "Patient", "id": "p", "text": {"status": "generated",
                                                   "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div>'},
    "name": [{"given": ["a", None], "_given": [None, {"extension": [{"url": "u", "valueDecimal": 1.5}]}]}],
    "contained": [{"resourceType": "Organization", "name": "o"}], "multipleBirthInteger": 1}}]})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SEED_XML)), st.integers(0, 8),
                          st.binary(max_size=6) | st.sampled_from([b"<", b">", b"/", b'"', b"&", b"<![CDATA[", b"]]>",
                                                                   b"<div>", b"</div>", b"xmlns:h='x'"])),
                max_size=4))
def test_mangled_documents_are_either_read_or_refused_cleanly(edits: list[tuple[int, int, bytes]]) -> None:
    """Whatever a client sends, the reader answers a resource or an XMLFormatError (a 400), never a crash."""
    data = SEED_XML
    for at, cut, insert in edits:
        data = data[:at] + insert + data[at + cut:]
    try:
        result = from_xml(data)
    except XMLFormatError:
        return
    assert isinstance(result, dict) and "resourceType" in result
