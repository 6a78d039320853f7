"""A JSON property named twice in one object is an error (json.html), whatever the route (formats/numbers.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.formats import numbers

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FHIR_XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+json"}

KEYS = st.sampled_from(["a", "b", "_b", "given", "valueDecimal"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5),
                   st.sampled_from([1.5, 2.50, 1e2]))
TREES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(KEYS, inner, min_size=1, max_size=3)),
                     max_leaves=12)


def _objects(node: Any, path: str, out: list[tuple[dict[str, Any], str]]) -> None:
    """Every object of ``node`` in document order, with the FHIRPath the parser reports for it."""
    if isinstance(node, dict):
        out.append((node, path))
        for k, v in node.items():
            _objects(v, f"{path}.{k.lstrip('_')}" if path else k.lstrip("_"), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _objects(v, f"{path}[{i}]", out)


def _write(node: Any, twice: dict[str, Any] | None, indent: bool) -> str:
    """JSON text of ``node``, the first property of the object ``twice`` (identity) written a second time."""
    sep = "\n  " if indent else ""
    if isinstance(node, dict):
        items = [f"{json.dumps(k)}:{_write(v, twice, indent)}" for k, v in node.items()]
        if node is twice:
            items.append(items[0])
        return "{" + sep + ("," + sep).join(items) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_write(v, twice, indent) for v in node) + "]"
    return json.dumps(node)


@given(TREES, st.data(), st.booleans())
def test_a_repeated_property_is_named_wherever_it_is(tree: Any, data: st.DataObject, indent: bool) -> None:
    root = {"resourceType": "Patient", "x": tree}
    text = _write(root, None, indent)
    assert numbers.loads(text) == json.loads(text)  # no repeat: parsed as before, on either route
    objects: list[tuple[dict[str, Any], str]] = []
    _objects(root, "Patient", objects)
    obj, path = data.draw(st.sampled_from(objects))
    first = next(iter(obj))
    try:
        numbers.loads(_write(root, obj, indent))
    except numbers.DuplicateProperty as exc:
        assert exc.name == first
        where = f"{path}.{first.lstrip('_')}"
        # a repeat earlier in document order (an enclosing object) would be reported first; here there is one
        assert exc.expression == where
        assert isinstance(exc, orjson.JSONDecodeError)  # callers that catch malformed JSON catch it too
    else:
        raise AssertionError("a repeated property was accepted")


def test_compact_bodies_never_take_the_fast_route_with_a_repeat() -> None:
    raw = b'{"resourceType":"Patient","birthDate":"1980-01-01","birthDate":"1981-02-03"}'
    assert not numbers.compact(raw)[0]  # orjson keeps one of them: what it writes back differs


def _outcome(resp: httpx.Response, status: int) -> tuple[str, set[str]]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    return issue["diagnostics"], set(issue.get("expression", ()))


def test_http_create_with_a_repeated_property_is_400(client: httpx.Client) -> None:
    compact = b'{"resourceType":"Patient","birthDate":"1980-01-01","birthDate":"1981-02-03"}'
    diag, where = _outcome(client.post("/Patient", content=compact, headers=FHIR_JSON), 400)
    assert "birthDate" in diag and where == {"Patient.birthDate"}
    pretty = b'{\n  "resourceType": "Patient",\n  "name": [{"family": "A", "family": "B"}]\n}'
    _, where = _outcome(client.post("/Patient", content=pretty, headers=FHIR_JSON), 400)
    assert where == {"Patient.name[0].family"}
    _, where = _outcome(client.post("/Patient/$validate", content=compact, headers=FHIR_JSON), 400)
    assert where == {"Patient.birthDate"}


def test_http_transaction_with_a_repeated_property_in_an_entry_is_400(client: httpx.Client) -> None:
    raw = (b'{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:1",'
           b'"resource":{"resourceType":"Patient","gender":"male","gender":"female"},'
           b'"request":{"method":"POST","url":"Patient"}}]}')
    _, where = _outcome(client.post("/", content=raw, headers=FHIR_JSON), 400)
    assert where == {"Bundle.entry[0].resource.gender"}


def test_http_xml_with_a_repeated_single_element_is_400(client: httpx.Client) -> None:
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><birthDate value="1980-01-01"/>'
           b'<birthDate value="1981-02-03"/></Patient>')
    diag, where = _outcome(client.post("/Patient", content=xml, headers=FHIR_XML), 400)
    assert "birthDate" in diag and where == {"Patient.birthDate"}
