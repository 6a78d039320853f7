"""The Consent look-up reads the store of record, never Elasticsearch: with the index unreachable a
professional whose opposition cache is cold is still served, and still refused what patients opposed.

Also the Consent actors' match keys in the store (both backends): written with the Consent, following its
current version, rebuilt at start-up for Consents stored before the rule, and a superset of what
``consent.opposition`` matches for every spelling of a reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, update

from fhir_server.security.consent import ActorKeys, opposition
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.storage import SQLResourceStore
from fhir_server.storage.keys import (
    CONSENT_ACTOR,
    CONSENT_ACTOR_ID,
    RULES_MARKER,
    extract_keys,
    identifier_values,
    reference_key,
)
from fhir_server.storage.schema import match_key, rules_version
from search.params.reference import parse_reference
from tests.harness import EsProxy, RunningServer
from tests.security.support import client_for, create_as, start_secured
from tests.security.test_leakage_http import RPPS, consent
from tests.test_storage import store  # noqa: F401  (the two-backend fixture)

FHIR_JSON = {"Content-Type": "application/fhir+json"}
BASE = "http://fhir.example/fhir"




@pytest.fixture(scope="module")
def outage(es_url: str, tmp_path_factory: pytest.TempPathFactory,
           issuer: DevIssuer) -> Iterator[tuple[RunningServer, EsProxy]]:
    proxy = EsProxy(es_url)
    srv = start_secured(proxy.url, tmp_path_factory.mktemp("consent-outage"), issuer, search_consistency_timeout_s=2.0)
    try:
        yield srv, proxy
    finally:
        proxy.restore()  # the harness deletes the test's indices through it
        srv.stop()
        proxy.close()


def test_a_cold_consent_cache_needs_no_elasticsearch(outage: tuple[RunningServer, EsProxy],
                                                     issuer: DevIssuer) -> None:
    srv, proxy = outage
    tag = uuid.uuid4().hex[:8]
    admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
    with admin:
        free, opposing, by_rpps, later = (
            create_as(admin, {"resourceType": "Patient", "name": [{"family": f"{n}{tag}"}]})
            for n in ("Free", "Opposing", "ByRpps", "Later"))
        create_as(admin, consent(opposing, {"reference": f"{srv.base_url}/Practitioner/cold-{tag}"}))
        create_as(admin, consent(by_rpps, {"identifier": {"system": RPPS, "value": f"rpps-{tag}"}}))
        proxy.cut()
        assert admin.get("/Patient", params={"name": tag}).status_code == 503  # the index is really gone
        dr = client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user=f"Practitioner/cold-{tag}"))
        by_id = client_for(srv, issuer.mint("dr2", "user/*.rs", extra={"identifier": f"{RPPS}|rpps-{tag}"}))
        with dr, by_id:
            first = dr.get(f"/Patient/{free}")  # the first request of this identity: the cache is cold
            assert first.status_code == 200, first.text
            assert dr.get(f"/Patient/{opposing}").status_code == 404
            assert dr.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).status_code == 201
            assert by_id.get(f"/Patient/{opposing}").status_code == 200
            assert by_id.get(f"/Patient/{by_rpps}").status_code == 404
            # a Consent written during the outage applies to the next request (the cache catches up)
            create_as(admin, consent(later, {"reference": f"Practitioner/cold-{tag}"}))
            assert dr.get(f"/Patient/{later}").status_code == 404
            assert dr.get(f"/Patient/{free}").status_code == 200
    proxy.restore()


def _consent(actors: list[dict[str, Any]], patient: str = "p1") -> dict[str, Any]:
    body = consent(patient, {"reference": "Practitioner/none"})
    body["provision"]["actor"] = actors
    return body


def test_consent_actor_keys_follow_the_current_version(store: SQLResourceStore) -> None:  # noqa: F811
    by_ref = [{"reference": {"reference": "Practitioner/7/_history/2"}}]
    by_ident = [{"reference": {"identifier": {"system": RPPS, "value": "42"}}}]
    with store.unit() as unit:
        unit.put("Consent", "c1", _consent(by_ref), method="PUT")
        unit.put("Consent", "c2", _consent(by_ident), method="PUT")
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR, "7")]) == {"c1"}
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR_ID, "42"), (CONSENT_ACTOR, "8")]) == {"c2"}
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR_ID, "7")]) == set()  # elements are not mixed
    with store.unit() as unit:
        unit.put("Consent", "c1", _consent(by_ident), method="PUT")
        unit.delete("Consent", "c2")
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR, "7")]) == set()
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR_ID, "42")]) == {"c1"}


def test_consent_actor_keys_are_backfilled_for_consents_stored_before_the_rule(
        store: SQLResourceStore) -> None:  # noqa: F811
    with store.unit() as unit:
        unit.put("Consent", "old", _consent([{"reference": {"reference": "Organization/9"}}]), method="PUT")
    with store.engine.begin() as conn:  # a store written under rules version 1: identifiers only
        conn.execute(delete(match_key).where(match_key.c.element.in_([CONSENT_ACTOR, CONSENT_ACTOR_ID])))
        conn.execute(update(rules_version).where(rules_version.c.name == RULES_MARKER).values(version="1"))
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR, "9")]) == set()
    store.create_schema()  # what every start does
    assert store.ids_with_keys("Consent", [(CONSENT_ACTOR, "9")]) == {"old"}


_SEGMENT = st.from_regex(r"[A-Za-z0-9\-.]{1,12}", fullmatch=True)


@given(kind=st.sampled_from(["relative", "local", "remote", "urn"]), rtype=st.sampled_from(
       ["Practitioner", "Organization", "PractitionerRole"]), rid=_SEGMENT, version=st.one_of(st.none(), _SEGMENT))
def test_every_spelling_of_an_opposed_actor_is_found_by_its_key(kind: str, rtype: str, rid: str,
                                                               version: str | None) -> None:
    """Whenever ``opposition`` matches a Consent's literal actor to the principal's normalised reference,
    the actor's key equals the key looked up for that reference (the keys never lose an opposition)."""
    ref = {"relative": f"{rtype}/{rid}", "local": f"{BASE}/{rtype}/{rid}",
           "remote": f"http://other.example/fhir/{rtype}/{rid}", "urn": f"urn:uuid:{rid}"}[kind]
    if version is not None and kind != "urn":
        ref += f"/_history/{version}"
    body = _consent([{"reference": {"reference": ref}}])
    principal_ref = parse_reference(ref, BASE)[0]  # what consent.actor_keys holds
    assert opposition(body, ActorKeys(frozenset({principal_ref}), frozenset()), BASE) is not None
    assert {k.value for k in extract_keys(body) if k.element == CONSENT_ACTOR} == {reference_key(principal_ref)}


@given(system=st.text(max_size=20), value=st.text(min_size=1, max_size=300))
def test_every_identifier_actor_is_found_by_its_key(system: str, value: str) -> None:
    body = _consent([{"reference": {"identifier": {"system": system, "value": value}}}])
    claim = f"{system}|{value}"  # the principal's identifier, as the token gives it
    assert opposition(body, ActorKeys(frozenset(), frozenset({claim})), BASE) is not None
    keys = {k.value for k in extract_keys(body) if k.element == CONSENT_ACTOR_ID}
    assert keys and keys <= identifier_values(claim)
