"""Helpers for tests against a server running with ``FHIR_AUTH=jwt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fhir_server.security.dev_issuer import DevIssuer
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server


def start_secured(es_url: str, workdir: Path, issuer: DevIssuer, **overrides: object) -> RunningServer:
    """A server trusting ``issuer``'s tokens."""
    return start_server(make_settings(es_url, workdir, auth="jwt", auth_issuer=issuer.issuer,
                                      auth_audience=issuer.audience, auth_jwks_file=issuer.jwks_file, **overrides))


def client_for(srv: RunningServer, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.base_url, headers=headers, timeout=30)


def create_as(client: httpx.Client, resource: dict[str, Any]) -> str:
    """Create ``resource`` with ``client`` (a test's set-up: anything but 201 fails the test); its id."""
    resp = client.post(f"/{resource['resourceType']}", json=resource, headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])
