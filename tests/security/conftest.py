"""Shared by the security tests: a development token issuer per module."""

from __future__ import annotations

import pytest

from fhir_server.security.dev_issuer import DevIssuer


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    dev = DevIssuer(tmp_path_factory.mktemp("issuer"))
    dev.ensure_keys()
    return dev
