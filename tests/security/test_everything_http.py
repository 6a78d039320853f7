"""Patient/[id]/$everything with authentication on: the operation shows exactly what the caller's searches and
reads would, no more. A masked document and its Binary are absent for a professional (present for the patient),
an ``INVISIBLE_PATIENT`` one absent for the patient, another patient's and an opposing patient's record answer
404 like an unknown id, and a referenced resource the caller may not read is never included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from tests.harness import RunningServer
from tests.security.support import client_for, start_secured
from tests.security.test_leakage_http import World, consent, opposed_token


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("everything"), issuer) as server:
        yield server


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    w = World(srv, issuer)
    p1, p2, p3 = w.patient("Alpha"), w.patient("Beta"), w.patient("Gamma")
    out: dict[str, Any] = {"p1": p1, "p2": p2, "p3": p3}
    out["own"] = w.record(p1)
    out["masked"] = w.record(p1, "MASQUE_PS")
    out["invisible"] = w.record(p1, "INVISIBLE_PATIENT")
    out["other"] = w.record(p2)
    out["opposing"] = w.record(p3)
    # p1's visible List pointing at hidden documents, and a visible document pointing at the masked Binary
    out["bait"] = w.create({"resourceType": "List", "status": "current", "mode": "working",
                            "subject": {"reference": f"Patient/{p1}"},
                            "entry": [{"item": {"reference": f"DocumentReference/{out[k]['doc']}"}}
                                      for k in ("masked", "invisible", "other", "opposing")]})
    out["pointer"] = w.create({"resourceType": "DocumentReference", "status": "current",
                               "subject": {"reference": f"Patient/{p1}"},
                               "content": [{"attachment": {"contentType": "text/plain",
                                                           "url": f"Binary/{out['masked']['binary']}"}}]})
    w.create(consent(p3, {"reference": "Practitioner/opposed"}))
    return out


def everything(c: httpx.Client, pid: str, **params: str) -> httpx.Response:
    return c.get(f"/Patient/{pid}/$everything", params={"_count": "1000", **params})


def keys(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in resp.json().get("entry", [])
            if e["search"]["mode"] in ("match", "include")}


def test_a_professional_never_gets_a_masked_document_or_its_binary(srv: RunningServer, issuer: DevIssuer,
                                                                   world: dict[str, Any]) -> None:
    with client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        resp = everything(c, world["p1"])
        got = keys(resp)
    assert {f"DocumentReference/{world['own']['doc']}", f"Binary/{world['own']['binary']}",
            f"DocumentReference/{world['invisible']['doc']}", f"DocumentReference/{world['pointer']}"} <= got
    assert f"DocumentReference/{world['masked']['doc']}" not in got
    assert f"Binary/{world['masked']['binary']}" not in got  # not through the pointer document either
    for hidden in ("masked",):  # (its id is in the bait List, its content nowhere; p2, p3 do not oppose dr)
        assert f"DocumentReference/{world[hidden]['doc']}" not in got and world[hidden]["secret"] not in resp.text


def test_the_patient_gets_the_masked_document_but_not_an_invisible_one(srv: RunningServer, issuer: DevIssuer,
                                                                       world: dict[str, Any]) -> None:
    with client_for(srv, issuer.mint("patient-1", "patient/*.rs", patient=world["p1"])) as c:
        resp = everything(c, world["p1"])
        got = keys(resp)
        other = everything(c, world["p2"])
        unknown = everything(c, "nobody")
    assert {f"DocumentReference/{world['masked']['doc']}", f"Binary/{world['masked']['binary']}"} <= got
    assert f"DocumentReference/{world['invisible']['doc']}" not in got
    assert f"Binary/{world['invisible']['binary']}" not in got
    for hidden in ("invisible", "other", "opposing"):
        assert f"DocumentReference/{world[hidden]['doc']}" not in got and world[hidden]["secret"] not in resp.text
    # another patient's record: exactly an unknown id's answer
    assert other.status_code == unknown.status_code == 404
    assert other.json()["issue"][0]["diagnostics"].replace(world["p2"], "X") == \
        unknown.json()["issue"][0]["diagnostics"].replace("nobody", "X")


def test_an_opposed_professional_gets_404_as_for_an_unknown_patient(srv: RunningServer, issuer: DevIssuer,
                                                                    world: dict[str, Any]) -> None:
    with client_for(srv, opposed_token(issuer)) as c:
        opposing = everything(c, world["p3"])
        unknown = everything(c, "nobody")
        own = everything(c, world["p1"])
    assert opposing.status_code == unknown.status_code == 404
    assert opposing.json()["issue"][0]["diagnostics"].replace(world["p3"], "X") == \
        unknown.json()["issue"][0]["diagnostics"].replace("nobody", "X")
    assert world["opposing"]["secret"] not in opposing.text
    # p1's List points at p3's document: never included for the opposed professional
    assert f"List/{world['bait']}" in keys(own)
    assert f"DocumentReference/{world['opposing']['doc']}" not in keys(own)
    assert world["opposing"]["secret"] not in own.text


def test_a_type_without_scope_is_left_out_with_a_warning(srv: RunningServer, issuer: DevIssuer,
                                                         world: dict[str, Any]) -> None:
    token = issuer.mint("dr-narrow", "user/Patient.rs user/Immunization.rs", fhir_user="Practitioner/dr")
    with client_for(srv, token) as c:
        resp = everything(c, world["p1"])
    got = keys(resp)
    assert f"Immunization/{world['own']['immunization']}" in got
    assert not any(k.startswith(("DocumentReference/", "List/", "Binary/")) for k in got)
    outcomes = [e["resource"] for e in resp.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes and "DocumentReference" in outcomes[0]["issue"][0]["diagnostics"]


def test_a_cursor_is_the_callers_own(srv: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    with client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        body = everything(c, world["p1"], _count="1").json()
    nxt = next(link["url"] for link in body["link"] if link["relation"] == "next")
    with client_for(srv, issuer.mint(f"dr-{uuid.uuid4().hex[:6]}", "user/*.cruds",
                                     fhir_user="Practitioner/dr2")) as c:
        assert c.get(nxt).status_code == 400


def test_the_audit_trail_names_the_patient(es_url: str, tmp_path_factory: pytest.TempPathFactory,
                                           issuer: DevIssuer) -> None:
    from fhir_server.audit.events import stored_event
    from fhir_server.storage.audit import AuditLog

    with start_secured(es_url, tmp_path_factory.mktemp("everything-audit"), issuer, audit="on") as audited:
        w = World(audited, issuer)
        pid = w.patient("Audited")
        with client_for(audited, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
            assert everything(c, pid).status_code == 200
        assert audited.ctx.audit is not None and audited.ctx.audit.wait_applied()
        event = next(stored_event(content, id_) for id_, content in AuditLog.of(audited.ctx.store.url).recent(5)
                     if b"\"code\":\"operation\"" in content)
    whats = [e.get("what", {}).get("reference") for e in event.get("entity", [])]
    assert f"Patient/{pid}" in whats, event
