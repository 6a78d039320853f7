"""The narrative ``div`` is judged once, by the hardened parser, whichever format it arrives in and leaves in:
what the validator accepts from a JSON client is the markup an XML client gets (narrative.html#xhtml)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_common.narrative import check_div, is_div, numeric_entities
from fhir_server.formats import from_xml
from fhir_server.formats.xhtml import embeddable

NS = 'xmlns="http://www.w3.org/1999/xhtml"'
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
XML = "application/fhir+xml"
OWN_DTD = f'<!DOCTYPE div [<!ENTITY name "Jean">]><div {NS}>&name;</div>'


def _patient(family: str, div: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}],
            "text": {"status": "generated", "div": div}}


def _issues(resp: httpx.Response) -> list[dict[str, Any]]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


def _stored(client: httpx.Client, family: str) -> int:
    return int(client.get("/Patient", params={"family": family}, headers=FHIR_JSON).json()["total"])


def test_a_narrative_with_its_own_dtd_is_refused_in_json_and_in_xml(client: httpx.Client) -> None:
    family = f"Dtd{uuid.uuid4().hex[:8]}"
    resp = client.post("/Patient", json=_patient(family, OWN_DTD), headers=FHIR_JSON)
    assert resp.status_code == 422, resp.text
    [issue] = [i for i in _issues(resp) if i["severity"] == "error"]
    assert issue["expression"] == ["Patient.text.div"] and "txt-1" in issue["diagnostics"]
    assert "DOCTYPE" in issue["diagnostics"]
    # In XML a DTD can only stand before the root element; the same parser refuses it before reading any element.
    xml = (f'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY name "Jean">]><Patient xmlns="http://hl7.org/fhir">'
           f'<text><status value="generated"/><div {NS}>&name;</div></text>'
           f'<name><family value="{family}"/></name></Patient>')
    resp = client.post("/Patient", content=xml.encode(), headers={**FHIR_JSON, "Content-Type": XML})
    assert resp.status_code == 400, resp.text
    assert "DOCTYPE" in _issues(resp)[0]["diagnostics"]
    assert _stored(client, family) == 0


@pytest.mark.parametrize("div", [
    f"<div {NS}>Jean <b>Dupont</b></div>",
    f"<div {NS}><p>a&nbsp;b</p></div>",
    f'<?xml version="1.0"?><div {NS}>Jean</div>',
    OWN_DTD,
    f"<!-- generated --><div {NS}>Jean</div>",
    f'<!DOCTYPE div SYSTEM "http://127.0.0.1:9/x.dtd"><div {NS}>Jean</div>',
], ids=["plain", "html-entity", "xml-declaration", "own-dtd", "comment-outside", "external-dtd"])
def test_what_json_clients_may_write_xml_clients_read_as_the_same_markup(client: httpx.Client, div: str) -> None:
    family = f"Nar{uuid.uuid4().hex[:8]}"
    resp = client.post("/Patient", json=_patient(family, div), headers=FHIR_JSON)
    if resp.status_code == 422:
        assert [i["expression"] for i in _issues(resp) if i["severity"] == "error"] == [["Patient.text.div"]]
        return
    assert resp.status_code == 201, resp.text
    url = f"/Patient/{resp.json()['id']}"
    as_json = client.get(url, headers=FHIR_JSON).json()["text"]["div"]
    as_xml = from_xml(client.get(url, headers={"Accept": XML}).content)["text"]["div"]
    assert as_json == div
    assert as_xml in (div, numeric_entities(div.removeprefix('<?xml version="1.0"?>')))  # markup kept, not escaped


_PROLOG = st.sampled_from(["", '<?xml version="1.0"?>', "<!DOCTYPE div>", '<!DOCTYPE div [<!ENTITY x "J">]>',
                           "<!-- c -->", "<?pi x?>", " "])
_OPEN = st.sampled_from([f"<div {NS}>", "<div>", '<x:div xmlns:x="http://www.w3.org/1999/xhtml">',
                         f'<div {NS} xml:lang="fr" class="c">', f'<p {NS}>', f'<div {NS} onclick="x()">'])
_INNER = st.lists(st.sampled_from(["Jean", " ", "&nbsp;", "&x;", "&amp;", "&#160;", "<b>t</b>", "<br/>",
                                   "<script>x</script>", '<img src="a.png"/>', "<!-- in -->", "<?pi y?>",
                                   '<a href="javascript:x()">l</a>', "<", "]]>", "<![CDATA[c]]>"]), max_size=5)


@given(_PROLOG, _OPEN, _INNER, st.sampled_from(["", " ", "<!-- after -->", "<p/>"]))
def test_a_narrative_the_validator_accepts_is_written_to_xml_as_markup(prolog: str, open_tag: str,
                                                                       inner: list[str], tail: str) -> None:
    close = "</x:div>" if open_tag.startswith("<x:") else "</p>" if open_tag.startswith("<p") else "</div>"
    div = prolog + open_tag + "".join(inner) + close + tail
    if check_div(div):
        return
    embedded = embeddable(div)
    assert is_div(embedded)
    assert embedded in (div, numeric_entities(div.removeprefix('<?xml version="1.0"?>').strip())), div
