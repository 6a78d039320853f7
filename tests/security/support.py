"""Helpers for tests against a server running with ``FHIR_AUTH=jwt``."""

from __future__ import annotations

from pathlib import Path

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
