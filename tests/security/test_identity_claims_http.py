"""Identity claims the policy relies on: a professional must be identified (or no opposition could apply), and
the ``patient`` claim must be one FHIR id (it becomes a search value)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fhir_server.security.dev_issuer import DevIssuer
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured
from tests.security.test_leakage_http import RPPS, consent

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("identity"), issuer) as server:
        yield server


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, str]:
    with client_for(srv, issuer.mint("backend", "system/*.cruds")) as admin:
        out = {name: create_as(admin, {"resourceType": "Patient", "name": [{"family": f"Ident{name}"}]})
               for name in ("a", "b", "opposing")}
        create_as(admin, consent(out["opposing"], {"reference": "Organization/anyone"}))
        create_as(admin, consent(out["opposing"], {"identifier": {"system": RPPS, "value": "810000000099"}}))
    return out


@pytest.mark.parametrize("extra", [{}, {"organization": "Organization/anyone"}, {"fhirUser": "not a reference"},
                                   {"identifier": "no-system-separator"}])
def test_a_user_token_that_does_not_identify_the_professional_is_refused(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, str], extra: dict[str, Any]) -> None:
    """Without fhirUser or identifier no Consent naming the user can be found: the opposition would be
    bypassed (the opposing patient's record served), so the token is refused for every interaction."""
    with client_for(srv, issuer.mint("anonymous-dr", "user/*.cruds", extra=extra)) as c:
        for resp in (c.get(f"/Patient/{world['opposing']}"), c.get(f"/Patient/{world['a']}"),
                     c.get("/Patient", params={"_id": world["opposing"]}), c.get("/_history"),
                     c.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)):
            assert resp.status_code == 403, resp.text
            issue = resp.json()["issue"][0]
            assert issue["code"] == "forbidden" and "fhirUser" in issue["diagnostics"]
            assert "Consent" in issue["diagnostics"]


@pytest.mark.parametrize("extra", [{"fhirUser": "Practitioner/ident-dr"}, {"identifier": f"{RPPS}|810000000099"}])
def test_an_identified_professional_is_served_and_their_oppositions_applied(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, str], extra: dict[str, Any]) -> None:
    with client_for(srv, issuer.mint("dr", "user/*.cruds", extra=extra)) as c:
        assert c.get(f"/Patient/{world['a']}").status_code == 200
        opposed = extra.get("identifier") is not None  # the second Consent names this RPPS number
        assert c.get(f"/Patient/{world['opposing']}").status_code == (404 if opposed else 200)


@pytest.mark.parametrize("claim", ["{a},{b}", "{a}|x", "{a}$x", "{a}\\", "", " {a}", "{a}/x", "x" * 65, 7,
                                   ["{a}"], {"id": "{a}"}])
def test_a_patient_claim_that_is_no_fhir_id_refuses_the_token(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, str], claim: Any) -> None:
    """``"A,B"`` used to become ``_id=A,B`` / ``subject=Patient/A,B``: patient A's token searched B's record."""
    if isinstance(claim, str):
        claim = claim.format(a=world["a"], b=world["b"])
    elif isinstance(claim, list):
        claim = [world["a"]]
    elif isinstance(claim, dict):
        claim = {"id": world["a"]}
    token = issuer.mint("patient-a", "patient/*.rs", extra={"patient": claim})
    with client_for(srv, token) as c:
        for resp in (c.get("/Patient"), c.get(f"/Patient/{world['a']}")):
            assert resp.status_code == 401, resp.text
            assert resp.json()["issue"][0]["code"] == "login"
            assert "invalid_token" in resp.headers["www-authenticate"]


def test_a_valid_patient_claim_still_gives_its_compartment(srv: RunningServer, issuer: DevIssuer,
                                                           world: dict[str, str]) -> None:
    with client_for(srv, issuer.mint("patient-a", "patient/*.rs", patient=world["a"])) as c:
        resp = c.get("/Patient")
        assert resp.status_code == 200, resp.text
        assert {e["resource"]["id"] for e in resp.json().get("entry", [])} == {world["a"]}
