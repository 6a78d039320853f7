"""A development token issuer: a local key pair and a minting function.

For running locally and in tests with authentication on: the server is pointed at the public JWKS file
this writes (``FHIR_AUTH_JWKS_FILE``), and ``fhir-server token`` mints tokens signed with the private key.
Never a production issuer: the private key sits unencrypted on disk.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

DEV_ISSUER = "https://dev-issuer.fhir-server.local"
DEV_AUDIENCE = "fhir-server"


@dataclass(frozen=True)
class DevIssuer:
    directory: Path
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE

    @property
    def private_key_file(self) -> Path:
        return self.directory / "dev-private-jwk.json"

    @property
    def jwks_file(self) -> Path:
        return self.directory / "dev-jwks.json"

    def ensure_keys(self) -> None:
        """Create the key pair once (ES256, P-256); idempotent."""
        if self.private_key_file.exists() and self.jwks_file.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        kid = uuid.uuid4().hex[:16]
        private = json.loads(ECAlgorithm.to_jwk(key))
        public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        private.update(kid=kid, alg="ES256", use="sig")
        public.update(kid=kid, alg="ES256", use="sig")
        self.private_key_file.write_text(json.dumps(private), encoding="utf-8")
        self.private_key_file.chmod(0o600)
        self.jwks_file.write_text(json.dumps({"keys": [public]}), encoding="utf-8")

    def mint(self, subject: str, scopes: str, *, patient: str | None = None, fhir_user: str | None = None,
             ttl_s: int = 3600, extra: dict[str, Any] | None = None) -> str:
        """A signed token. The server refuses a ``user/`` token without ``fhir_user`` (or an ``identifier`` in
        ``extra``: patients' oppositions need the professional's identity) and a ``patient`` that is no FHIR id."""
        self.ensure_keys()
        jwk = json.loads(self.private_key_file.read_text(encoding="utf-8"))
        key = ECAlgorithm.from_jwk(json.dumps(jwk))
        if not isinstance(key, ec.EllipticCurvePrivateKey):  # a JWK without "d": nothing to sign with
            raise ValueError(f"{self.private_key_file} holds no private key")
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": subject, "iat": now,
                                  "nbf": now, "exp": now + ttl_s, "scope": scopes, "jti": uuid.uuid4().hex}
        if patient:
            claims["patient"] = patient
        if fhir_user:
            claims["fhirUser"] = fhir_user
        claims.update(extra or {})
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": jwk["kid"]})
