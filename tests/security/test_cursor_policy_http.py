"""Page cursors under the access policy: a principal pages through what they may see, and a cursor issued to
another principal (another policy, so another query) is refused rather than carrying its total over."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured


@pytest.fixture(scope="module")
def secured(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("cursor"), issuer) as srv:
        yield srv


def _next(bundle: dict[str, Any]) -> str | None:
    return next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None)


def _walk(c: httpx.Client, url: str) -> tuple[list[str], set[Any]]:
    ids: list[str] = []
    totals: set[Any] = set()
    next_url: str | None = url
    while next_url is not None:
        r = c.get(next_url)
        assert r.status_code == 200, r.text
        totals.add(r.json().get("total"))
        ids += [e["resource"]["id"] for e in r.json().get("entry", [])]
        next_url = _next(r.json())
    return ids, totals


def test_pages_follow_the_policy_and_a_cursor_stays_with_its_principal(secured: RunningServer,
                                                                        issuer: DevIssuer) -> None:
    code = f"vax{uuid.uuid4().hex[:8]}"
    with client_for(secured, issuer.mint("backend", "system/*.cruds")) as admin:
        p1, p2 = (create_as(admin, {"resourceType": "Patient"}) for _ in range(2))
        own = [create_as(admin, {"resourceType": "Immunization", "status": "completed",
                                 "vaccineCode": {"coding": [{"system": "urn:test", "code": code}]},
                                 "patient": {"reference": f"Patient/{p}"}, "occurrenceDateTime": "2024-01-01"})
               for p in (p1, p1, p1, p2, p2)][:3]
        query = f"/Immunization?vaccine-code=urn:test|{code}&_count=1"
        everyone, totals = _walk(admin, query)
        assert len(everyone) == 5 and totals == {5}
        admin_cursor = parse_qs(urlparse(_next(admin.get(query).json()) or "").query)["_cursor"][0]
    with client_for(secured, issuer.mint("p1", "patient/*.read", patient=p1)) as patient:
        mine, totals = _walk(patient, query)  # every page, the patient's parameter ANDed on each
        assert sorted(mine) == sorted(own) and totals == {3}
        stolen = patient.get(query, params={"_cursor": admin_cursor})
        assert stolen.status_code == 400, stolen.text
        assert stolen.json()["issue"][0]["expression"] == ["_cursor"]
