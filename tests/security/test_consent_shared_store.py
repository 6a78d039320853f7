"""Read-your-writes of Consent across processes: two servers on one store (SQLite file or PostgreSQL schema)
and one index, the second a separate OS process with its own opposition cache.

A Consent whose write returned 2xx on one server applies to the very next request of the opposed
practitioner on the other, whose cache was warm (it had just answered that practitioner); withdrawing
it applies at once too. And the look-up rides on the interaction's own thread-pool hop: one hop per
read, as for a system token.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_devtools import es_node
from fhir_server.security import authz
from fhir_server.security.dev_issuer import DevIssuer
from tests.harness import RunningServer, pg_schema_url
from tests.security.support import client_for, create_as, start_secured
from tests.security.test_leakage_http import consent

FHIR_JSON = {"Content-Type": "application/fhir+json"}
REPO = Path(__file__).resolve().parents[2]


class OtherProcess:
    """``fhir-server serve`` in a child process on ``srv``'s store and index prefix (audit off)."""

    def __init__(self, srv: RunningServer, issuer: DevIssuer, workdir: Path) -> None:
        port = es_node.free_port()
        s = srv.settings
        env = {**os.environ, "FHIR_DB_URL": s.db_url, "FHIR_ES_URL": s.es_url or "",
               "FHIR_ES_INDEX_PREFIX": s.es_index_prefix, "FHIR_PORT": str(port), "FHIR_HOST": "127.0.0.1",
               "FHIR_AUTH": "jwt", "FHIR_AUTH_ISSUER": issuer.issuer, "FHIR_AUTH_AUDIENCE": issuer.audience,
               "FHIR_AUTH_JWKS_FILE": str(issuer.jwks_file), "FHIR_AUDIT": "off",
               "FHIR_AUDIT_JOURNAL_DIR": str(workdir / "journal-b")}
        env.pop("FHIR_BASE_URL", None)
        self.log = (workdir / "other.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve"], cwd=REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the second server exited ({self.proc.returncode}), see {workdir / 'other.log'}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the second server did not start within 90 s")
            time.sleep(0.1)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(request: pytest.FixtureRequest, es_url: str, tmp_path_factory: pytest.TempPathFactory,
         issuer: DevIssuer) -> Iterator[tuple[RunningServer, OtherProcess]]:
    workdir = tmp_path_factory.mktemp("shared")
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if request.param == "postgresql":
            overrides["db_url"] = stack.enter_context(pg_schema_url("consent"))
        srv = stack.enter_context(start_secured(es_url, workdir, issuer, **overrides))
        other = OtherProcess(srv, issuer, workdir)
        stack.callback(other.stop)
        yield srv, other


def _doc(admin: httpx.Client, patient: str) -> str:
    return create_as(admin, {"resourceType": "DocumentReference", "status": "current",
                             "subject": {"reference": f"Patient/{patient}"},
                             "content": [{"attachment": {"url": "http://x/d"}}]})


def _count(c: httpx.Client, patient: str) -> int:
    resp = c.get("/DocumentReference", params={"subject": f"Patient/{patient}", "_summary": "count"})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


@pytest.mark.parametrize("written_on", ["this", "other"])
def test_a_consent_applies_to_the_next_request_on_another_process(
        pair: tuple[RunningServer, OtherProcess], issuer: DevIssuer, written_on: str) -> None:
    srv, other = pair
    tag = uuid.uuid4().hex[:8]
    admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
    p = create_as(admin, {"resourceType": "Patient", "name": [{"family": f"Shared{tag}"}]})
    doc = _doc(admin, p)
    dr_token = issuer.mint(f"dr-{tag}", "user/*.cruds", fhir_user=f"Practitioner/{tag}")
    patient_token = issuer.mint(f"pat-{tag}", "patient/*.cruds", patient=p)
    here, there = client_for(srv, dr_token), other.client(dr_token)
    writer = client_for(srv, patient_token) if written_on == "this" else other.client(patient_token)
    reader = there if written_on == "this" else here
    # both caches warm for this practitioner: nobody opposes them yet
    for c in (here, there):
        assert c.get(f"/DocumentReference/{doc}").status_code == 200
        assert _count(c, p) == 1
    created = writer.post("/Consent", json=consent(p, {"reference": f"Practitioner/{tag}"}), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert reader.get(f"/DocumentReference/{doc}").status_code == 404  # the very next request
    assert reader.get(f"/Patient/{p}").status_code == 404
    assert _count(reader, p) == 0
    withdrawn = {**created.json(), "status": "inactive"}
    assert writer.put(f"/Consent/{created.json()['id']}", json=withdrawn, headers=FHIR_JSON).status_code == 200
    assert reader.get(f"/DocumentReference/{doc}").status_code == 200  # lifted at once, too
    assert _count(reader, p) == 1
    deleted_again = writer.post("/Consent", json=consent(p, {"reference": f"Practitioner/{tag}"}),
                                headers=FHIR_JSON)
    assert deleted_again.status_code == 201
    assert reader.get(f"/DocumentReference/{doc}").status_code == 404
    assert writer.delete(f"/Consent/{deleted_again.json()['id']}").status_code in (200, 204)
    assert reader.get(f"/DocumentReference/{doc}").status_code == 200


def _hop_world(srv: RunningServer, issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
               ) -> tuple[httpx.Client, str, str, str, list[str]]:
    """(admin, an open document, a document whose patient opposes practitioner ``tag``, ``tag``, the hops:
    the name of each function authz sends to the thread pool from now on)."""
    tag = uuid.uuid4().hex[:8]
    admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
    p, q = (create_as(admin, {"resourceType": "Patient", "name": [{"family": f"Hop{tag}"}]}) for _ in range(2))
    open_doc, opposed_doc = _doc(admin, p), _doc(admin, q)
    create_as(admin, consent(q, {"reference": f"Practitioner/{tag}"}))
    hops: list[str] = []
    real = authz.run_in_threadpool

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(authz, "run_in_threadpool", counting)
    return admin, open_doc, opposed_doc, tag, hops


def test_a_professionals_read_takes_one_thread_hop(pair: tuple[RunningServer, OtherProcess], issuer: DevIssuer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The Consent look-up rides on the read's own hop (authz.run), and that hop still sees the oppositions."""
    srv, _ = pair
    _, open_doc, opposed_doc, tag, hops = _hop_world(srv, issuer, monkeypatch)
    dr = client_for(srv, issuer.mint(f"dr-{tag}", "user/*.rs", fhir_user=f"Practitioner/{tag}"))
    backend = client_for(srv, issuer.mint("svc", "system/*.rs"))
    for c, doc, status in ((dr, open_doc, 200), (dr, opposed_doc, 404), (backend, opposed_doc, 200)):
        hops.clear()
        assert c.get(f"/DocumentReference/{doc}").status_code == status
        assert len(hops) == 1, hops


def test_a_professionals_update_and_delete_take_one_thread_hop(pair: tuple[RunningServer, OtherProcess],
                                                               issuer: DevIssuer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The current-version check, the content check and the write share the Consent look-up's hop."""
    srv, _ = pair
    admin, open_doc, opposed_doc, tag, hops = _hop_world(srv, issuer, monkeypatch)
    dr = client_for(srv, issuer.mint(f"dr-{tag}", "user/*.cruds", fhir_user=f"Practitioner/{tag}"))
    for doc, status in ((open_doc, 200), (opposed_doc, 404)):
        body = {**admin.get(f"/DocumentReference/{doc}").json(), "description": "edited"}
        hops.clear()
        assert dr.put(f"/DocumentReference/{doc}", json=body, headers=FHIR_JSON).status_code == status
        assert len(hops) == 1, hops
        hops.clear()
        assert dr.delete(f"/DocumentReference/{doc}").status_code == 204  # hidden: as an unknown id, unchanged
        assert len(hops) == 1, hops
