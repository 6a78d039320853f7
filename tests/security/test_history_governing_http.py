"""A resource's current visibility governs all its versions (for a deleted one: the last version before the
deletion), at every level of history and in vread and read: a version written before a label was added, or
before the resource moved into an opposing patient's compartment, is never served."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured
from tests.security.test_leakage_http import consent

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("governing"), issuer) as server:
        yield server


@pytest.fixture(scope="module")
def admin(srv: RunningServer, issuer: DevIssuer) -> Iterator[httpx.Client]:
    with client_for(srv, issuer.mint("backend", "system/*.cruds")) as c:
        yield c


@pytest.fixture(scope="module")
def patients(admin: httpx.Client) -> dict[str, str]:
    """``free`` opposes no one; ``opposing`` opposes Practitioner/gov."""
    out = {name: create_as(admin, {"resourceType": "Patient", "name": [{"family": name}]})
           for name in ("free", "opposing")}
    create_as(admin, consent(out["opposing"], {"reference": "Practitioner/gov"}))
    return out


def _resource(how: str, patient: str, secret: str) -> dict[str, Any]:
    """A masked-to-be DocumentReference, or an Immunization to be moved into the opposing patient's record
    (a DocumentReference's subject cannot change: PDSm metadata updates)."""
    if how == "masked":
        return {"resourceType": "DocumentReference", "status": "current", "description": secret,
                "subject": {"reference": f"Patient/{patient}"},
                "content": [{"attachment": {"contentType": "text/plain", "url": f"http://example.org/{secret}"}}]}
    return {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": secret},
            "patient": {"reference": f"Patient/{patient}"}, "occurrenceDateTime": "2024-01-01"}


def _hide(admin: httpx.Client, how: str, resource: dict[str, Any], patients: dict[str, str]) -> None:
    """Make the resource invisible to the practitioner from its version 2 on."""
    url = f"/{resource['resourceType']}/{resource['id']}"
    if how == "masked":
        resp = admin.patch(url, headers=JSON_PATCH, json=[
            {"op": "add", "path": "/securityLabel", "value": [{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]}])
    else:
        resp = admin.put(url, headers=FHIR_JSON,
                         json={**resource, "patient": {"reference": f"Patient/{patients['opposing']}"}})
    assert resp.status_code == 200, resp.text


def _walk(c: httpx.Client, url: str) -> list[dict[str, Any]]:
    """Every entry of a history, all pages followed."""
    entries: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        resp = c.get(next_url)
        assert resp.status_code == 200, resp.text
        entries += resp.json().get("entry", [])
        next_url = next((link["url"] for link in resp.json()["link"] if link["relation"] == "next"), None)
    return entries


@pytest.mark.parametrize("how", ["masked", "moved-to-opposing-patient"])
@pytest.mark.parametrize("deleted", [False, True])
def test_versions_from_before_a_resource_was_hidden_are_never_served(
        srv: RunningServer, issuer: DevIssuer, admin: httpx.Client, patients: dict[str, str],
        how: str, deleted: bool) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    hidden = _resource(how, patients["free"], secret)
    hidden["id"] = create_as(admin, hidden)
    type_, doc_id = hidden["resourceType"], hidden["id"]
    control = create_as(admin, _resource(how, patients["free"], f"control-{secret}"))  # never hidden
    _hide(admin, how, hidden, patients)
    if deleted:
        for target in (doc_id, control):
            assert admin.delete(f"/{type_}/{target}").status_code in (200, 204)
    dr = client_for(srv, issuer.mint("dr-gov", "user/*.cruds", fhir_user="Practitioner/gov"))
    with dr:
        for url in (f"{srv.base_url}/{type_}/_history?_count=1000", f"{srv.base_url}/_history?_count=1000",
                    f"{srv.base_url}/{type_}/_history?_count=1"):
            entries = _walk(dr, url)
            ids = {e["fullUrl"].rsplit("/", 1)[-1] for e in entries}
            assert control in ids, url  # the test sees what a professional may see
            assert doc_id not in ids, url
            assert secret not in str([e for e in entries if control not in e["fullUrl"]]), url
        unknown = f"no-such-{uuid.uuid4().hex[:8]}"
        for tail in ("", "/_history/1", "/_history/2", "/_history/3", "/_history"):
            got, absent = dr.get(f"/{type_}/{doc_id}{tail}"), dr.get(f"/{type_}/{unknown}{tail}")
            assert got.status_code == absent.status_code == 404, (tail, got.text)
            assert got.json()["issue"][0]["diagnostics"].replace(doc_id, unknown) == \
                absent.json()["issue"][0]["diagnostics"], tail
            assert "etag" not in got.headers, tail
        visible = dr.get(f"/{type_}/{control}")
        assert visible.status_code == (410 if deleted else 200)  # the control is served as before
        assert dr.get(f"/{type_}/{control}/_history/1").status_code == 200
