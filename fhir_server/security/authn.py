"""Authentication of every request, as plain ASGI middleware (no per-request task or body buffering).

With ``FHIR_AUTH=jwt`` every request under the FHIR base, except the CapabilityStatement and the SMART
configuration, needs a valid bearer token; the :class:`Principal` is put in ``request.state.principal``
for the authorisation checks. With ``FHIR_AUTH=off`` no principal is set and nothing is checked.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.errors import FHIRError
from fhir_server.settings import Settings

from .tokens import AuthError, TokenVerifier, bearer_token

log = logging.getLogger(__name__)

#: What a client reads to learn how to authenticate: the CapabilityStatement, the SMART configuration, the API
#: description (no data in any of them); the health probes and /metrics (which guards itself: loopback or its token)
PUBLIC_PATHS = frozenset({"/fhir/metadata", "/fhir/$versions", "/fhir/.well-known/smart-configuration",
                          "/.well-known/smart-configuration", "/openapi.json", "/livez", "/readyz", "/metrics"})


def build_verifier(settings: Settings) -> TokenVerifier | None:
    if settings.auth == "off":
        log.warning("!!! FHIR_AUTH=off: authentication and authorisation are DISABLED; every client sees "
                    "every resource. Never run like this with real health data. !!!")
        return None
    if not settings.auth_issuer or not (settings.auth_jwks_url or settings.auth_jwks_file):
        raise ValueError("FHIR_AUTH=jwt needs FHIR_AUTH_ISSUER and FHIR_AUTH_JWKS_URL or FHIR_AUTH_JWKS_FILE")
    return TokenVerifier(issuer=settings.auth_issuer, audience=settings.auth_audience,
                         jwks_url=settings.auth_jwks_url, jwks_file=settings.auth_jwks_file,
                         base_url=settings.public_base)


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, verifier: TokenVerifier | None) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.verifier is None or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            principal = self.verifier.verify(bearer_token(headers.get("authorization")))
        except AuthError as exc:
            await _unauthorized(send, str(exc))
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, reason: str) -> None:
    # The reason stays in the server log: telling a caller why its token failed helps forging one.
    log.info("401: %s", reason)
    err = FHIRError(401, "login", "Authentication required: send a valid bearer token")
    body = orjson.dumps(err.outcome())
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="fhir", error="invalid_token"'),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: What this server itself enforces of SMART App Launch v2, whatever the authorisation server: v1 and v2 scopes,
#: patient/ and user/ scopes (the token's ``patient`` compartment, its ``fhirUser``)
SMART_PERMISSIONS = ("permission-patient", "permission-user", "permission-v1", "permission-v2")


def _endpoints(settings: Settings) -> list[tuple[str, str, str]]:
    """(oauth-uris extension name, well-known key, URL) of the authorisation server's configured endpoints."""
    return [(name, key, url) for name, key, url in (
        ("authorize", "authorization_endpoint", settings.auth_authorize_url),
        ("token", "token_endpoint", settings.auth_token_url),
        ("revoke", "revocation_endpoint", settings.auth_revoke_url),
        ("introspect", "introspection_endpoint", settings.auth_introspect_url)) if url]


def smart_capabilities(settings: Settings) -> list[str]:
    """Only what is true: the permissions this server enforces; a standalone launch (with its patient picked at
    launch) once a client knows where to authorise. Client authentication methods are the authorisation server's
    business, so none is claimed."""
    launch = ["launch-standalone", "context-standalone-patient"] if settings.auth_authorize_url else []
    return [*launch, *SMART_PERMISSIONS]


def smart_configuration(settings: Settings) -> dict[str, Any]:
    """``/.well-known/smart-configuration`` (SMART App Launch v2, conformance.html#metadata)."""
    conf: dict[str, Any] = {
        "issuer": settings.auth_issuer,
        "jwks_uri": settings.auth_jwks_url,
        **{key: url for _name, key, url in _endpoints(settings)},
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "scopes_supported": ["openid", "fhirUser", "launch/patient",
                             "patient/*.rs", "user/*.cruds", "system/*.cruds",
                             "patient/*.read", "user/*.read", "user/*.write", "system/*.read", "system/*.write"],
        "response_types_supported": ["code"],
        "capabilities": smart_capabilities(settings),
        "code_challenge_methods_supported": ["S256"],
    }
    return {k: v for k, v in conf.items() if v is not None}


def capability_security(settings: Settings) -> dict[str, Any] | None:
    """``CapabilityStatement.rest.security`` (SMART App Launch: SMART-on-FHIR service, oauth-uris); None when off."""
    if settings.auth == "off":
        return None
    uris = [{"url": name, "valueUri": url} for name, _key, url in _endpoints(settings)]
    security: dict[str, Any] = {
        "cors": bool(settings.cors_origins),
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "OAuth2 bearer tokens (SMART App Launch v2)"}],
        "description": "Bearer JWT (RS256/ES256) from the configured issuer; SMART v2/v1 scopes; patient context "
                       "limited to its compartment; DocumentReference visibility codes (MASQUE_PS, "
                       "INVISIBLE_PATIENT); a patient's deny Consent (scope patient-privacy) hides their record "
                       "from the named practitioner or organisation. See /.well-known/smart-configuration.",
    }
    if uris:
        security["extension"] = [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                   "extension": uris}]
    return security
