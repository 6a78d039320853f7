"""Bearer-token (JWT) verification against a configured issuer.

Signature (RS256/ES256 only: ``none`` and HMAC algorithms are never accepted, which closes the classic
algorithm-confusion attacks), ``exp``/``nbf`` with a small leeway, ``iss`` and ``aud``. Keys come from a
JWKS URL (cached by PyJWT's client, refetched when an unknown ``kid`` appears) or a local JWKS file.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from .scopes import ScopeSet

ALGORITHMS = ("RS256", "ES256")
#: How long a verified token is trusted without checking its signature again (the JWKS cache lifespan).
VERIFIED_TTL_S = 300
#: Most verified tokens remembered (least recently used first out).
VERIFIED_MAX = 4096
#: A FHIR resource id (R4 datatypes "id"): what the ``patient`` claim must be, since the policy puts it into
#: search parameters (``"A,B"`` would otherwise mean patient A or B)
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class OppositionSlot:
    """One request's answer to "which patients' Consent denies this user?" (consent.py), filled once.

    Empty (None) until the request's first thread-pool hop fills it (``authz.run``): the look-up rides on
    the interaction's own hop instead of paying one of its own. Every check after that, the search
    executor's and a Bundle's entries included, reads the same answer through the principal. One per
    request, never per token: the verifier shares a token's Principal between requests."""

    __slots__ = ("patients",)

    def __init__(self, patients: frozenset[str] | None = None) -> None:
        self.patients: frozenset[str] | None = patients


class AuthError(Exception):
    """Missing, malformed or invalid credentials: answered with 401 and ``WWW-Authenticate``."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what the token grants."""

    subject: str
    scopes: ScopeSet
    patient: str | None = None  # SMART launch context: the patient id the token is bound to
    fhir_user: str | None = None  # e.g. Practitioner/123
    client_id: str | None = None
    claims: tuple[tuple[str, Any], ...] = ()
    # who the user acts for, besides ``fhir_user`` (claim ``organization``): ``Organization/456`` references
    organizations: tuple[str, ...] = ()
    # identifiers of the user and their organisations (claims ``identifier`` and ``organization`` in
    # ``system|value`` form), e.g. an RPPS or FINESS number, matched by identifier-based Consent actors
    identifiers: tuple[str, ...] = ()
    # the user's own identifiers (claim ``identifier`` alone): with ``fhir_user``, what identifies the professional
    user_identifiers: tuple[str, ...] = ()
    # the server's public base: an absolute reference under it is local (``{base}/Patient/x`` is patient x);
    # one to another server never places a resource in a compartment here (None: any ``.../Patient/x`` is x)
    base_url: str | None = None
    # this request's oppositions (authz.prepare gives each user-context request its own slot); not part of
    # the principal's identity, so equality and hashing ignore it
    oppositions: OppositionSlot | None = field(default=None, compare=False, repr=False)

    @property
    def opposed_by(self) -> frozenset[str] | None:
        """Patients whose active deny Consent names this user; None = not looked up (yet) for this request,
        which the policy refuses to guess in user context."""
        return None if self.oppositions is None else self.oppositions.patients


class TokenVerifier:
    def __init__(self, *, issuer: str, audience: str, jwks_url: str | None = None,
                 jwks_file: Path | None = None, leeway_s: int = 30, base_url: str | None = None) -> None:
        if (jwks_url is None) == (jwks_file is None):
            raise ValueError("configure exactly one of jwks_url and jwks_file")
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.base_url = base_url
        self._client = PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None
        self._keys: PyJWKSet | None = None
        self._verified: OrderedDict[str, tuple[Principal, float, float]] = OrderedDict()  # token -> (p, nbf, until)
        if jwks_file is not None:
            self._keys = PyJWKSet.from_dict(json.loads(jwks_file.read_text(encoding="utf-8")))

    def _key(self, token: str) -> PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        if header.get("alg") not in ALGORITHMS:
            raise AuthError(f"token algorithm {header.get('alg')!r} is not accepted")
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token)
            except jwt.PyJWTError as exc:
                raise AuthError(f"no usable signing key: {exc}") from exc
        assert self._keys is not None
        kid = header.get("kid")
        candidates = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise AuthError(f"unknown key id {kid!r}")
        return candidates[0]

    def verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            principal, not_before, until = hit
            if not_before <= now < until:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]  # expired, or not yet valid: the full check decides (and explains)
        principal, claims = self._verify(token)
        exp = float(claims["exp"]) + self.leeway_s
        nbf = float(claims.get("nbf", 0) or 0) - self.leeway_s
        self._verified[token] = (principal, nbf, min(exp, now + VERIFIED_TTL_S))
        if len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        key = self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=list(ALGORITHMS), audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        scope = claims.get("scope") or claims.get("scp") or ""
        scopes = ScopeSet.parse(scope if isinstance(scope, str) else [str(s) for s in scope])
        patient = _patient(claims.get("patient"))
        orgs = _strings(claims.get("organization"))
        own = [i for i in _strings(claims.get("identifier")) if "|" in i]
        principal = Principal(
            subject=str(claims["sub"]),
            scopes=scopes,
            patient=patient,
            fhir_user=str(claims["fhirUser"]) if claims.get("fhirUser") else None,
            client_id=str(claims.get("client_id") or claims.get("azp") or "") or None,
            claims=tuple(sorted(claims.items())),
            organizations=tuple(o for o in orgs if "|" not in o),
            identifiers=tuple(i for i in (*own, *orgs) if "|" in i),
            user_identifiers=tuple(own),
            base_url=self.base_url,
        )
        return principal, claims


def _patient(value: Any) -> str | None:
    """The ``patient`` claim: absent, or a FHIR id (anything else refuses the token, never narrows it)."""
    if value is None:
        return None
    if not isinstance(value, str) or not FHIR_ID.fullmatch(value):
        raise AuthError("the patient claim is not a FHIR id")
    return value


def _strings(value: Any) -> list[str]:
    """A claim holding one string or a list of strings."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, or AuthError."""
    if not authorization:
        raise AuthError("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token.strip()
