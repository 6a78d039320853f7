"""Consent: the supported shape, the actor a token names, and what the policy hides (unit tests: no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from fhir_server.errors import FHIRError
from fhir_server.security import authz
from fhir_server.security.consent import ActorKeys, actor_keys, opposition
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07, AccessPolicy, ConsentNotResolved, may_write, visible
from fhir_server.security.scopes import ScopeSet
from fhir_server.security.tokens import OppositionSlot, Principal, TokenVerifier
from fhir_server.storage import StoredVersion
from tests.security.test_leakage_http import RPPS, consent

BASE = "http://fhir.example/fhir"
KEYS = ActorKeys(frozenset({"Practitioner/7", "Organization/9"}), frozenset({f"{RPPS}|810000000042"}))


@pytest.mark.parametrize(("actor", "expected"), [
    ({"reference": "Practitioner/7"}, True),
    ({"reference": f"{BASE}/Practitioner/7"}, True),  # absolute on this server
    ({"reference": "Practitioner/7/_history/2"}, True),
    ({"reference": "http://elsewhere.example/fhir/Practitioner/7"}, False),
    ({"reference": "Organization/9"}, True),
    ({"reference": "Practitioner/8"}, False),
    ({"identifier": {"system": RPPS, "value": "810000000042"}}, True),
    ({"identifier": {"system": RPPS, "value": "810000000043"}}, False),
    ({"identifier": {"value": "810000000042"}}, False),  # an identifier without its system names no one
])
def test_actor_matching(actor: dict[str, Any], expected: bool) -> None:
    found = opposition(consent("p1", actor), KEYS, BASE)
    assert (found is not None) is expected
    if found is not None:
        assert found.patient == "p1"


@pytest.mark.parametrize("change", [
    {"status": "inactive"}, {"status": "draft"},
    {"scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]}},
    {"patient": {"reference": "Group/1"}}, {"patient": {"display": "no reference"}},
])
def test_other_shapes_oppose_no_one(change: dict[str, Any]) -> None:
    assert opposition({**consent("p1", {"reference": "Practitioner/7"}), **change}, KEYS, BASE) is None


def test_permit_provision_is_no_opposition() -> None:
    c = consent("p1", {"reference": "Practitioner/7"})
    c["provision"]["type"] = "permit"
    assert opposition(c, KEYS, BASE) is None


def test_period_bounds_the_opposition() -> None:
    found = opposition(consent("p1", {"reference": "Practitioner/7"}, period={"start": "2024-01-01",
                                                                              "end": "2024-06"}), KEYS, BASE)
    assert found is not None
    assert not found.holds(datetime(2023, 12, 31, 23, 59, tzinfo=UTC))
    assert found.holds(datetime(2024, 1, 1, tzinfo=UTC))
    assert found.holds(datetime(2024, 6, 30, 23, 59, tzinfo=UTC))  # "2024-06" lasts the whole month
    assert not found.holds(datetime(2024, 7, 1, tzinfo=UTC))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["status", "scope", "coding", "code", "provision", "type", "actor",
                                         "reference", "identifier", "system", "value", "patient", "period",
                                         "start", "end"]), inner, max_size=4), max_leaves=20))
def test_opposition_never_raises_on_any_json(data: Any) -> None:
    """Stored Consents passed validation, but the look-up must not trust that."""
    if isinstance(data, dict):
        opposition({"resourceType": "Consent", **data}, KEYS, BASE)


def test_token_claims_name_the_actor(issuer: DevIssuer) -> None:
    verifier = TokenVerifier(issuer=issuer.issuer, audience=issuer.audience, jwks_file=issuer.jwks_file)
    p = verifier.verify(issuer.mint("dr", "user/*.rs", fhir_user=f"{BASE}/Practitioner/7",
                                    extra={"identifier": [f"{RPPS}|810000000042", "not-an-identifier"],
                                           "organization": ["Organization/9", "urn:oid:1.2.250.1.71.4.2.2|123"]}))
    keys = actor_keys(p, BASE)
    assert keys.references == {"Practitioner/7", "Organization/9"}
    assert keys.identifiers == {f"{RPPS}|810000000042", "urn:oid:1.2.250.1.71.4.2.2|123"}
    assert p.opposed_by is None  # looked up per request, not carried by the token


def _user(opposed: frozenset[str] | None) -> Principal:
    return Principal("dr", ScopeSet.parse("user/*.cruds"), fhir_user="Practitioner/7",
                     oppositions=OppositionSlot(opposed))


def test_opposing_patients_compartment_is_hidden_from_the_user() -> None:
    dr = _user(frozenset({"p3"}))
    assert not visible(dr, {"resourceType": "Patient", "id": "p3"})
    assert visible(dr, {"resourceType": "Patient", "id": "p1"})
    assert not visible(dr, {"resourceType": "Immunization", "patient": {"reference": "Patient/p3"}})
    assert not visible(dr, {"resourceType": "DocumentReference", "subject": {"reference": f"{BASE}/Patient/p3"}})
    assert not visible(dr, {"resourceType": "Consent", "patient": {"reference": "Patient/p3"}})
    assert visible(dr, {"resourceType": "DocumentReference", "subject": {"reference": "Patient/p1"}})
    policy = AccessPolicy(dr)
    assert policy.excluded("DocumentReference") == [("subject", "Patient/p3")]
    assert policy.excluded("Patient") == [("_id", "p3")]
    assert policy.params("DocumentReference") is not None and ("subject", "Patient/p3") not in (
        policy.params("DocumentReference") or [])  # never a parameter: links would name the patient


def test_patient_and_system_contexts_ignore_oppositions() -> None:
    patient = Principal("p3", ScopeSet.parse("patient/*.cruds"), patient="p3")
    backend = Principal("svc", ScopeSet.parse("system/*.cruds"))
    for who in (patient, backend):
        assert visible(who, {"resourceType": "Patient", "id": "p3"})
        assert AccessPolicy(who).excluded("DocumentReference") == []


def test_a_user_decision_without_the_lookup_fails_closed() -> None:
    with pytest.raises(ConsentNotResolved):
        visible(_user(None), {"resourceType": "Patient", "id": "p1"})
    assert not AccessPolicy(_user(frozenset())).excluded("Patient")


def test_only_patient_or_backend_writes_consent() -> None:
    assert not may_write(_user(frozenset()), "Consent", "create")
    assert not may_write(_user(frozenset()), "Consent", "delete")
    assert may_write(_user(frozenset()), "Consent", "read")
    assert may_write(_user(frozenset()), "Patient", "create")
    assert may_write(Principal("p", ScopeSet.parse("patient/Consent.cud"), patient="p"), "Consent", "create")
    assert may_write(Principal("svc", ScopeSet.parse("system/Consent.cud")), "Consent", "update")


def test_each_request_gets_its_own_empty_slot_and_no_check_guesses() -> None:
    """authz.prepare does no I/O: it gives the request a slot of its own (the verifier shares a token's
    Principal between requests), and until the request's first hop fills it no user decision is made."""
    token_principal = Principal("dr", ScopeSet.parse("user/*.cruds"), fhir_user="Practitioner/7")
    requests = [_request(token_principal) for _ in range(2)]
    for r in requests:
        authz.prepare(r)
    first, second = (authz.principal_of(r) for r in requests)
    assert first is not None and second is not None
    assert first.oppositions is not None and second.oppositions is not None
    assert first.oppositions is not second.oppositions and token_principal.oppositions is None
    assert first == token_principal  # the same caller: the slot is no part of who they are
    with pytest.raises(ConsentNotResolved):
        visible(first, {"resourceType": "Patient", "id": "p1"})
    with pytest.raises(ConsentNotResolved):  # a write's check before the first hop fails closed
        authz.BundleAccess(None, first).may_write("Patient", {"resourceType": "Patient", "id": "p1"},  # type: ignore[arg-type]
                                                  "create")
    first.oppositions.patients = frozenset({"p1"})  # what authz.resolve does in the first hop
    assert not visible(first, {"resourceType": "Patient", "id": "p1"})
    assert second.opposed_by is None  # the other request's slot is untouched
    for who in (Principal("svc", ScopeSet.parse("system/*.cruds")),
                Principal("p", ScopeSet.parse("patient/*.cruds"), patient="p")):
        r = _request(who)
        authz.prepare(r)
        assert authz.principal_of(r) is who  # no look-up to make: no slot, no cost


def _request(principal: Principal) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(base_url=BASE)))
    return Request({"type": "http", "app": app, "state": {"principal": principal}})


@pytest.mark.parametrize("who", [
    Principal("dr", ScopeSet.parse("user/*.rs")),
    Principal("dr", ScopeSet.parse("user/*.rs"), organizations=("Organization/9",),
              identifiers=("urn:oid:1.2.250.1.71.4.2.2|123",)),  # an organisation: the user is still unknown
    Principal("dr", ScopeSet.parse("user/*.rs system/Patient.rs"), fhir_user="no reference"),
])
def test_a_user_the_token_does_not_identify_is_refused_before_any_check(who: Principal) -> None:
    """No fhirUser or identifier: no Consent naming the user could be found, so none would apply."""
    with pytest.raises(FHIRError) as err:
        authz.prepare(_request(who))
    assert err.value.status == 403 and "fhirUser" in err.value.diagnostics


def _version(seq: int, id_: str, version: int, resource: dict[str, Any] | None) -> StoredVersion:
    content = None if resource is None else orjson.dumps({"resourceType": "DocumentReference", "id": id_,
                                                          **resource})
    return StoredVersion(seq, "DocumentReference", id_, version, 0, "PUT", content is None, content)


class _VersionStore:
    def __init__(self, versions: list[StoredVersion], current: list[StoredVersion]) -> None:
        self.versions = {(v.type, v.id, v.version): v for v in versions}
        self.current = {v.id: v for v in current}
        self.vreads: list[tuple[str, int]] = []
        self.read_manys: list[list[str]] = []

    def read_many(self, type_: str, ids: list[str]) -> dict[str, StoredVersion]:
        self.read_manys.append(ids)
        return {i: self.current[i] for i in ids if i in self.current}

    def vread(self, type_: str, id_: str, version: int) -> StoredVersion | None:
        self.vreads.append((id_, version))
        return self.versions.get((type_, id_, version))


def test_history_filter_reads_deleted_versions_once_per_batch() -> None:
    """A deletion is shown only if the version it deleted is: taken from the batch when it is there,
    read from the store otherwise (once each), and decided lazily."""
    masked = {"securityLabel": [{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]}
    batch = [
        _version(9, "d1", 2, None), _version(8, "d1", 1, {}),  # deletion and what it deleted, both here
        _version(7, "d2", 3, None),  # deleted a masked version, kept in the store only
        _version(6, "d3", 2, None),  # its version 1 is not found: never shown
        _version(5, "d4", 1, masked),
    ]
    store = _VersionStore([_version(2, "d2", 2, masked)], current=[batch[0], batch[2], batch[3], batch[4]])
    ctx = SimpleNamespace(store=store)
    keep = authz.history_keep(ctx, _user(frozenset()), "DocumentReference", "history-type")  # type: ignore[arg-type]
    assert keep is not None
    assert list(keep(batch)) == [True, True, False, False, False]
    assert store.vreads == [("d2", 2), ("d3", 1)]
    assert store.read_manys == [["d1", "d2", "d3", "d4"]]  # the current versions: one read for the batch
    store.vreads.clear()
    decisions = keep(batch)
    assert next(decisions) is True and store.vreads == [("d2", 2), ("d3", 1)]  # one look-up for the batch
    assert authz.history_keep(ctx, Principal("svc", ScopeSet.parse("system/*.rs")),  # type: ignore[arg-type]
                              "DocumentReference", "history-type") is None


def test_history_filter_hides_every_version_of_a_resource_hidden_now() -> None:
    """A version visible when written is not shown once the resource is masked (its current version) or,
    for a deleted one, once the version before the deletion was."""
    masked = {"securityLabel": [{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]}
    batch = [_version(4, "d5", 1, {}), _version(3, "d6", 2, {}), _version(2, "d6", 1, {})]
    current = [_version(10, "d5", 2, masked), _version(12, "d6", 4, None)]
    store = _VersionStore([_version(11, "d6", 3, masked)], current=current)
    keep = authz.history_keep(SimpleNamespace(store=store), _user(frozenset()),  # type: ignore[arg-type]
                              "DocumentReference", "history-type")
    assert keep is not None and list(keep(batch)) == [False, False, False]
    store.current = {"d5": _version(10, "d5", 2, {}), "d6": _version(11, "d6", 3, {})}  # unmasked since
    assert list(keep(batch)) == [True, True, True]
