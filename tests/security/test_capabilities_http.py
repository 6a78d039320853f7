"""With authentication on, the SMART configuration, the CapabilityStatement's security and ``/openapi.json`` say
where to get a token and what this server enforces (it only verifies tokens; the authorisation server is another)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server.security.authn import smart_configuration
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.settings import Settings
from tests.harness import RunningServer
from tests.security.support import client_for, start_secured

AS = "https://auth.example/oauth2"
ENDPOINTS = {"authorize": f"{AS}/authorize", "token": f"{AS}/token", "revoke": f"{AS}/revoke",
             "introspect": f"{AS}/introspect"}
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def secured(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("cap-auth"), issuer, auth_authorize_url=ENDPOINTS["authorize"],
                       auth_token_url=ENDPOINTS["token"], auth_revoke_url=ENDPOINTS["revoke"],
                       auth_introspect_url=ENDPOINTS["introspect"]) as srv:
        yield srv


def _root(srv: RunningServer) -> str:
    return srv.base_url.rsplit("/fhir", 1)[0]


def test_smart_configuration_names_the_endpoints_and_only_true_capabilities(secured: RunningServer) -> None:
    for base in (_root(secured), secured.base_url):
        url = f"{base}/.well-known/smart-configuration"
        conf = httpx.get(url, timeout=30).json()  # public
        assert conf["authorization_endpoint"] == ENDPOINTS["authorize"]
        assert conf["token_endpoint"] == ENDPOINTS["token"]
        assert conf["revocation_endpoint"] == ENDPOINTS["revoke"]
        assert conf["introspection_endpoint"] == ENDPOINTS["introspect"]
        assert conf["code_challenge_methods_supported"] == ["S256"]
        assert set(conf["capabilities"]) == {"launch-standalone", "context-standalone-patient", "permission-patient",
                                             "permission-user", "permission-v1", "permission-v2"}
        assert "token_endpoint_auth_methods_supported" not in conf  # the authorisation server's business


def test_no_launch_is_claimed_without_an_authorize_endpoint() -> None:
    conf = smart_configuration(Settings(auth="jwt", auth_issuer="https://iss.example"))
    assert "authorization_endpoint" not in conf and "token_endpoint" not in conf
    assert "launch-standalone" not in conf["capabilities"] and "permission-v2" in conf["capabilities"]


def test_capability_statement_security_lists_the_oauth_uris(secured: RunningServer) -> None:
    with client_for(secured, None) as anonymous:
        security = anonymous.get("/metadata").json()["rest"][0]["security"]
    (oauth,) = security["extension"]
    assert oauth["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert {e["url"]: e["valueUri"] for e in oauth["extension"]} == ENDPOINTS
    with client_for(secured, None) as anonymous:  # the same statement in XML (security, patchFormat...)
        xml = anonymous.get("/metadata", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 200 and b'<valueUri value="https://auth.example/oauth2/revoke"/>' in xml.content
    assert b'<conditionalRead value="full-support"/>' in xml.content and b"<patchFormat" in xml.content


def test_update_as_create_is_documented_and_only_for_system_tokens(secured: RunningServer, issuer: DevIssuer) -> None:
    with client_for(secured, None) as anonymous:
        patient = next(r for r in anonymous.get("/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient")
    assert patient["updateCreate"] is True and "system-context tokens" in patient["documentation"]
    body: dict[str, Any] = {"resourceType": "Patient"}
    user_id, system_id = f"u-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    with client_for(secured, issuer.mint("u", "user/*.cruds", fhir_user="Practitioner/1")) as user:
        assert user.put(f"/Patient/{user_id}", json={**body, "id": user_id}, headers=FHIR_JSON).status_code == 404
    with client_for(secured, issuer.mint("backend", "system/*.cruds")) as backend:
        assert backend.put(f"/Patient/{system_id}", json={**body, "id": system_id},
                           headers=FHIR_JSON).status_code == 201


def test_openapi_describes_the_bearer_scheme(secured: RunningServer) -> None:
    resp = httpx.get(f"{_root(secured)}/openapi.json", timeout=30)  # public: it says how to authenticate
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "SMART App Launch access token (see /.well-known/smart-configuration)"}
    assert doc["security"] == [{"bearer": []}]
    for public in ("/metadata", "/$versions", "/.well-known/smart-configuration"):
        assert doc["paths"][public]["get"]["security"] == [], public
    assert "security" not in doc["paths"]["/Patient"]["get"]  # the global requirement applies
    with client_for(secured, None) as anonymous:
        assert anonymous.get("/Patient").status_code == 401
