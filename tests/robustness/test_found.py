"""Requests the robustness run (``bench/fuzz.py``) once answered with a 5xx: each is now a 4xx OperationOutcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.harness import start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(autouse=True)
def _seeded(client: httpx.Client) -> None:
    client.put("Patient/f1", json={"resourceType": "Patient", "id": "f1"}, headers=FHIR_JSON)


def _outcome(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_head_is_answered_like_get_without_a_body(client: httpx.Client) -> None:
    assert client.head("Patient/f1").status_code == 200
    assert client.head("Patient/nope").status_code == 404
    assert client.head("Binary/nope").status_code == 404


def test_json_patch_nested_beyond_the_depth_limit_is_400(client: httpx.Client) -> None:
    body = '[{"op": "add", "path": "/extension", "value": ' + "[" * 300 + '"x"' + "]" * 300 + "}]"
    resp = client.patch("Patient/f1", content=body, headers={"Content-Type": "application/json-patch+json"})
    _outcome(resp, 400)


def test_patches_nesting_values_into_values_beyond_the_limit_are_422(client: httpx.Client) -> None:
    deep = "[" * 50 + "1" + "]" * 50
    pointer = "/x" + "/0" * 49
    ops = f'[{{"op": "add", "path": "/x", "value": {deep}}}, {{"op": "add", "path": "{pointer}/0", "value": {deep}}}]'
    resp = client.patch("Patient/f1", content=ops, headers={"Content-Type": "application/json-patch+json"})
    assert resp.status_code in (400, 422), resp.text


def test_vread_of_a_version_beyond_64_bits_is_404(client: httpx.Client) -> None:
    _outcome(client.get("Patient/f1/_history/99999999999999999999"), 404)


@pytest.mark.parametrize("path", ["Patient?_count=\u00b2", "Patient/f1/_history?_count=\u00b2"])
def test_non_ascii_digits_in_count_are_400(client: httpx.Client, path: str) -> None:
    _outcome(client.get(path), 400)


def test_non_ascii_digit_or_huge_if_match_is_400(client: httpx.Client) -> None:
    for tag in ("W/\"\u00b2\"".encode("latin-1"), b'W/"99999999999999999999"'):
        resp = client.put("Patient/f1", json={"resourceType": "Patient", "id": "f1"},
                          headers=[(b"Content-Type", b"application/fhir+json"), (b"If-Match", tag)])
        _outcome(resp, 400)


@pytest.mark.parametrize("parameter", ["true", "3", '[{"name": "operation", "part": true}]',
                                       '[{"name": "operation", "part": [{"name": []}]}]'])
def test_fhirpath_patch_with_non_array_parameters_is_400(client: httpx.Client, parameter: str) -> None:
    body = '{"resourceType": "Parameters", "parameter": ' + parameter + "}"
    _outcome(client.patch("Patient/f1", content=body, headers=FHIR_JSON), 400)


@pytest.mark.parametrize("path,method", [("Patient", "POST"), ("Patient/f1", "PUT"), ("", "POST"),
                                         ("Patient/$validate", "POST")])
def test_json_nested_deeper_than_orjson_writes_is_400(client: httpx.Client, path: str, method: str) -> None:
    body = '{"resourceType": "Patient", "extension": ' + "[" * 300 + "1" + "]" * 300 + "}"
    _outcome(client.request(method, path, content=body, headers=FHIR_JSON), 400)


@pytest.mark.parametrize("path", ["Patient/_history", "_history"])
def test_non_ascii_digits_in_count_of_store_pages_are_400(client: httpx.Client, path: str) -> None:
    """``'²'.isdigit()`` is true and ``int('²')`` raises: the audit trail's ``_count`` lacked the ASCII check."""
    _outcome(client.get(path, params={"_count": "²"}), 400)


def test_a_conditional_read_of_a_binary_satisfied_by_the_client_copy_is_304(client: httpx.Client) -> None:
    client.put("Binary/f1", json={"resourceType": "Binary", "id": "f1", "contentType": "text/plain",
                                  "data": "aGVsbG8="}, headers=FHIR_JSON)
    for headers in ({"If-None-Match": "*"}, {"If-None-Match": 'W/"1"'},
                    {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}):
        for resp in (client.get("Binary/f1", headers=headers), client.head("Binary/f1", headers=headers)):
            assert resp.status_code == 304 and resp.content == b"" and resp.headers["etag"] == 'W/"1"', resp.text
    assert client.get("Binary/f1").content == b"hello"


@pytest.fixture(scope="module")
def audited(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with start_server(make_settings(es_url, Path(tmp_path_factory.mktemp("audited")), audit="on")) as srv, \
            httpx.Client(base_url=srv.base_url, timeout=30) as c:
        yield c


def test_non_ascii_digits_in_count_of_the_audit_trail_are_400(audited: httpx.Client) -> None:
    """The same on AuditEvent, served only with the audit trail on."""
    _outcome(audited.get("AuditEvent", params={"_count": "²"}), 400)


@pytest.mark.parametrize("entry", ['{"fullUrl": "1e309", "request": 6.6e16}', '{"request": [1], "resource": 3}',
                                   '{"request": {"method": 7, "url": []}, "response": "x"}'])
def test_hostile_batch_entries_are_traced_not_500_with_audit_on(audited: httpx.Client, entry: str) -> None:
    body = '{"resourceType": "Bundle", "type": "batch", "entry": [[], ' + entry + "]}"
    resp = audited.post("/", content=body, headers=FHIR_JSON)
    assert resp.status_code < 500, resp.text

