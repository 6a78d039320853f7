"""Binary / ITI-68 downloads follow the DocumentReference that points to them (or ``securityContext``)."""

from __future__ import annotations

import base64
from typing import Any

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.test_auth_http import FHIR_JSON, client_for, secured, world

__all__ = ["secured", "world"]  # module fixtures shared with test_auth_http (one server here)


def _create(world: dict[str, Any], resource: dict[str, Any]) -> str:
    resp = world["admin"].post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _binary(world: dict[str, Any], text: str, **extra: Any) -> str:
    return _create(world, {"resourceType": "Binary", "contentType": "text/plain",
                           "data": base64.b64encode(text.encode()).decode(), **extra})


def _doc(world: dict[str, Any], patient: str, url: str, label: str | None = None) -> str:
    res: dict[str, Any] = {"resourceType": "DocumentReference", "status": "current",
                           "subject": {"reference": f"Patient/{patient}"},
                           "content": [{"attachment": {"contentType": "text/plain", "url": url}}]}
    if label:
        res["securityLabel"] = [{"coding": [{"system": TRE_A07, "code": label}]}]
    return _create(world, res)


def test_binary_follows_its_document(secured: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    p1, p2 = world["p1"], world["p2"]
    plain = _binary(world, "plain content")
    masked = _binary(world, "masked content")
    hidden = _binary(world, "invisible to the patient")
    foreign = _binary(world, "another patient's content")
    orphan = _binary(world, "no document")
    by_context = _binary(world, "security context", securityContext={"reference": f"Patient/{p1}"})
    _doc(world, p1, f"Binary/{plain}")
    _doc(world, p1, f"{secured.base_url}/Binary/{masked}", "MASQUE_PS")  # absolute URL
    _doc(world, p1, f"Binary/{hidden}", "INVISIBLE_PATIENT")
    _doc(world, p2, f"Binary/{foreign}")

    with client_for(secured, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        resp = c.get(f"/Binary/{plain}")
        assert resp.status_code == 200 and resp.content == b"plain content"
        for allowed in (hidden, foreign, by_context):
            assert c.get(f"/Binary/{allowed}").status_code == 200
        for denied in (masked, orphan):
            for path in (f"/Binary/{denied}", f"/Binary/{denied}/_history/1", f"/Binary/{denied}/_history"):
                resp = c.get(path)
                assert resp.status_code == 404, path
                assert b"masked content" not in resp.content
            assert c.get(f"/Binary/{denied}", params={"_format": "json"}).status_code == 404
            assert c.delete(f"/Binary/{denied}").status_code == 204  # as an unknown id: nothing deleted
            assert world["admin"].get(f"/Binary/{denied}").status_code == 200
    with client_for(secured, issuer.mint("patient-1", "patient/*.rs", patient=p1)) as c:
        resp = c.get(f"/Binary/{masked}")
        assert resp.status_code == 200 and resp.content == b"masked content"
        assert c.get(f"/Binary/{plain}").status_code == 200
        assert c.get(f"/Binary/{by_context}").status_code == 200
        for denied in (hidden, foreign, orphan):
            assert c.get(f"/Binary/{denied}").status_code == 404, denied
    assert world["admin"].get(f"/Binary/{orphan}").status_code == 200  # system context: unrestricted


def test_deleted_binary_history_follows_its_document(secured: RunningServer, issuer: DevIssuer,
                                                     world: dict[str, Any]) -> None:
    masked = _binary(world, "masked then deleted")
    plain = _binary(world, "plain then deleted")
    _doc(world, world["p1"], f"Binary/{masked}", "MASQUE_PS")
    _doc(world, world["p1"], f"Binary/{plain}")
    for b in (masked, plain):
        assert world["admin"].delete(f"/Binary/{b}").status_code == 204
    with client_for(secured, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        resp = c.get(f"/Binary/{masked}/_history")
        assert resp.status_code == 404 and "masked then deleted" not in resp.text
        assert c.get(f"/Binary/{masked}/_history/1").status_code == 404
        shown = c.get(f"/Binary/{plain}/_history")
        assert shown.status_code == 200 and len(shown.json()["entry"]) == 2  # the version and the deletion
