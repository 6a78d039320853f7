"""Token verification and SMART scope parsing (pure unit tests: no server needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.scopes import ScopeSet, parse_permissions, parse_scope
from fhir_server.security.tokens import AuthError, TokenVerifier, bearer_token


@pytest.fixture(scope="module")
def verifier(issuer: DevIssuer) -> TokenVerifier:
    return TokenVerifier(issuer=issuer.issuer, audience=issuer.audience, jwks_file=issuer.jwks_file)


def test_valid_token_gives_principal(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint("dr-house", "user/DocumentReference.rs openid", fhir_user="Practitioner/7")
    p = verifier.verify(token)
    assert p.subject == "dr-house" and p.fhir_user == "Practitioner/7" and p.patient is None
    assert p.scopes.allows("DocumentReference", "search-type")
    assert p.scopes.allows("DocumentReference", "read")
    assert not p.scopes.allows("DocumentReference", "create")
    assert not p.scopes.allows("Patient", "read")


def test_patient_context(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    p = verifier.verify(issuer.mint("p1", "patient/*.read", patient="123"))
    assert p.patient == "123"
    assert p.scopes.contexts_for("Immunization", "search-type") == {"patient"}


@pytest.mark.parametrize("mutate", ["expired", "not_yet", "issuer", "audience", "signature", "alg_none", "hs256"])
def test_invalid_tokens_are_refused(issuer: DevIssuer, verifier: TokenVerifier, tmp_path: Path, mutate: str) -> None:
    now = int(time.time())
    if mutate == "expired":
        token = issuer.mint("x", "system/*.cruds", ttl_s=-3600)
    elif mutate == "not_yet":
        token = issuer.mint("x", "system/*.cruds", extra={"nbf": now + 3600})
    elif mutate == "issuer":
        token = DevIssuer(issuer.directory, issuer="https://evil.example").mint("x", "system/*.cruds")
    elif mutate == "audience":
        token = DevIssuer(issuer.directory, audience="other-api").mint("x", "system/*.cruds")
    elif mutate == "signature":
        other = DevIssuer(tmp_path / "other")
        other_token = other.mint("x", "system/*.cruds")
        header = json.loads(base64.urlsafe_b64decode(other_token.split(".")[0] + "=="))
        kid = json.loads(issuer.jwks_file.read_text())["keys"][0]["kid"]
        header["kid"] = kid  # claim to be signed by the trusted key
        h = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        token = ".".join([h, *other_token.split(".")[1:]])
    elif mutate == "alg_none":
        token = jwt.encode({"iss": issuer.issuer, "aud": issuer.audience, "sub": "x", "exp": now + 60,
                            "scope": "system/*.cruds"}, key="", algorithm="none")
    else:  # algorithm confusion: HMAC keyed with the public key text (built by hand; PyJWT refuses to)
        public = issuer.jwks_file.read_bytes()
        kid = json.loads(public)["keys"][0]["kid"]
        parts = [base64.urlsafe_b64encode(json.dumps(x).encode()).rstrip(b"=") for x in (
            {"alg": "HS256", "kid": kid, "typ": "JWT"},
            {"iss": issuer.issuer, "aud": issuer.audience, "sub": "x", "exp": now + 60, "scope": "system/*.cruds"})]
        signing_input = b".".join(parts)
        sig = base64.urlsafe_b64encode(hmac.new(public, signing_input, hashlib.sha256).digest()).rstrip(b"=")
        token = (signing_input + b"." + sig).decode()
    with pytest.raises(AuthError):
        verifier.verify(token)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_bad_authorization_headers(header: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("patient/DocumentReference.rs", ("patient", "DocumentReference", "rs")),
        ("user/*.cruds", ("user", "*", "cruds")),
        ("system/*.*", ("system", "*", "cruds")),
        ("patient/*.read", ("patient", "*", "rs")),
        ("user/Patient.write", ("user", "Patient", "cud")),
        ("patient/Immunization.r", ("patient", "Immunization", "r")),
    ],
)
def test_parse_scope(scope: str, expected: tuple[str, str, str]) -> None:
    grant = parse_scope(scope)
    assert grant is not None
    assert (grant.context, grant.resource_type, "".join(sorted(grant.permissions, key="cruds".index))) == expected


@pytest.mark.parametrize("scope", ["openid", "launch/patient", "patient/Observation.rs?category=laboratory",
                                   "patient/Patient.sr", "patient/Patient.rr", "admin/*.*", "user/patient.r",
                                   "patient/*.readwrite", ""])
def test_scopes_not_granted(scope: str) -> None:
    assert parse_scope(scope) is None


@given(st.text(alphabet="cruds*readwit", max_size=8))
def test_permission_strings_are_canonical_or_refused(text: str) -> None:
    parsed = parse_permissions(text)
    if parsed is not None and text not in ("read", "write", "*"):
        assert "".join(sorted(parsed, key="cruds".index)) == text


def test_scope_set_unions_grants() -> None:
    s = ScopeSet.parse("patient/Patient.r user/DocumentReference.s openid")
    assert s.contexts_for("Patient", "read") == {"patient"}
    assert s.contexts_for("DocumentReference", "search-type") == {"user"}
    assert not s.allows("DocumentReference", "read")
    assert not s.allows("Patient", "unknown-interaction")


def test_a_remembered_token_still_expires_and_altered_bytes_are_checked_again(issuer: DevIssuer) -> None:
    verifier = TokenVerifier(issuer=issuer.issuer, audience=issuer.audience, jwks_file=issuer.jwks_file,
                             leeway_s=0)
    token = issuer.mint("short", "system/*.cruds", ttl_s=2)
    assert verifier.verify(token).subject == "short"
    assert verifier.verify(token).subject == "short"  # served from the verified-token cache
    head, payload, sig = token.split(".")
    with pytest.raises(AuthError):  # a different signature is never a cache hit
        verifier.verify(f"{head}.{payload}.{sig[:-4]}AAAA")
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.2)
    with pytest.raises(AuthError):
        verifier.verify(token)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(max_size=70), st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
                 st.integers(), st.lists(st.text(max_size=5), max_size=2)))
def test_the_patient_claim_is_one_fhir_id_or_the_token_is_refused(issuer: DevIssuer, verifier: TokenVerifier,
                                                                  claim: object) -> None:
    token = issuer.mint("p", "patient/*.rs", extra={"patient": claim})
    if isinstance(claim, str) and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", claim):
        assert verifier.verify(token).patient == claim
    else:
        with pytest.raises(AuthError):
            verifier.verify(token)
