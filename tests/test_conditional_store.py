"""Match keys and conditional matching in the store, against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.interactions import conditional
from fhir_server.storage import ConcurrentWrite, SQLResourceStore, UniqueKeyViolation
from fhir_server.storage.backfill import backfill_match_keys
from fhir_server.storage.keys import MatchKey, extract_keys
from tests.test_storage import store  # noqa: F401  (the two-backend fixture)


def _patient(value: str) -> dict[str, object]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": value}]}


def test_keys_follow_the_current_version(store: SQLResourceStore) -> None:  # noqa: F811
    with store.unit() as unit:
        unit.put("Patient", "a", _patient("1"), method="PUT")
        assert unit.match("Patient", ("identifier",), "urn:s", "1") == {"a"}  # visible in its own transaction
    with store.unit() as unit:
        unit.put("Patient", "a", _patient("2"), method="PUT")
    with store.unit() as unit:
        assert unit.match("Patient", ("identifier",), "urn:s", "1") == set()
        assert unit.match("Patient", ("identifier",), None, "2") == {"a"}
        unit.delete("Patient", "a")
        assert unit.match("Patient", ("identifier",), None, "2") == set()


def test_master_identifier_is_unique(store: SQLResourceStore) -> None:  # noqa: F811
    doc = {"resourceType": "DocumentReference", "masterIdentifier": {"system": "urn:s", "value": "m"}}
    with store.unit() as unit:
        unit.put("DocumentReference", "d1", doc, method="PUT")
    with pytest.raises(UniqueKeyViolation), store.unit() as unit:
        unit.put("DocumentReference", "d2", doc, method="PUT")
    assert store.read("DocumentReference", "d2") is None


def test_concurrent_conditional_creates_in_the_store(store: SQLResourceStore) -> None:  # noqa: F811
    criteria = conditional.parse_criteria("Patient", "identifier=urn:s|c", "x")
    barrier = threading.Barrier(16)
    created: list[str] = []

    def worker() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                with store.unit() as unit:
                    if not conditional.match(unit, "Patient", criteria):
                        id_ = uuid.uuid4().hex
                        unit.put("Patient", id_, _patient("c"), method="POST", must_not_exist=True)
                        created.append(id_)
                return
            except ConcurrentWrite:
                continue

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1


def test_extract_keys_ignores_garbage() -> None:
    res = {"identifier": [{"system": "s", "value": "v"}, {"value": 3}, "x", {"system": None, "value": "w"}],
           "masterIdentifier": {"value": "m"}}
    assert extract_keys(res) == {MatchKey("identifier", "s", "v"), MatchKey("masterIdentifier", "", "m")}
    assert extract_keys({"identifier": "nope"}) == set()


# a backslash is a search escape (search.html#escaping): such criteria take the general path
_TEXT = st.text(alphabet=st.characters(blacklist_characters="|,&\\", blacklist_categories=("Cs",)), min_size=1,
                max_size=20)


@settings(max_examples=200, deadline=None)
@given(alts=st.lists(st.tuples(st.one_of(st.none(), st.just(""), _TEXT), _TEXT), min_size=1, max_size=4))
def test_identifier_criteria_parse_round_trip(alts: list[tuple[str | None, str]]) -> None:
    """Whatever the characters, ``identifier=s|v,v2`` sent URL-encoded parses back to its alternatives."""
    raw = ",".join(v if s is None else f"{s}|{v}" for s, v in alts)
    criteria = conditional.parse_criteria("Patient", urlencode({"identifier": raw}), "x")
    assert criteria == [conditional.Criterion("identifier", tuple(alts))]


def _forget_keys(store: SQLResourceStore) -> None:  # noqa: F811
    """What a store written before match keys (or before a key rule) looks like: no rows, no marker."""
    from sqlalchemy import delete

    from fhir_server.storage.schema import match_key, rules_version

    with store.engine.begin() as conn:
        conn.execute(delete(match_key))
        conn.execute(delete(rules_version))


def test_match_keys_are_backfilled_at_start_up(store: SQLResourceStore) -> None:  # noqa: F811
    with store.unit() as unit:
        unit.put("Patient", "old", _patient("legacy"), method="PUT")
        unit.put("Patient", "gone", _patient("legacy-2"), method="PUT")
        unit.delete("Patient", "gone")
    _forget_keys(store)
    with store.unit() as unit:
        assert unit.match("Patient", ("identifier",), "urn:s", "legacy") == set()
    store.create_schema()  # what every start does
    with store.unit() as unit:
        assert unit.match("Patient", ("identifier",), "urn:s", "legacy") == {"old"}
        assert unit.match("Patient", ("identifier",), None, "legacy-2") == set()  # deleted: no keys
    assert backfill_match_keys(store) == 0  # the marker makes later starts a no-op
    assert backfill_match_keys(store, force=True) == 1


_PARAM = st.sampled_from(["family", "birthdate", "gender", "identifier", "_id", "name:exact", "address-city"])
_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(_PARAM, _VALUE), min_size=1, max_size=5), data=st.data())
def test_criteria_key_ignores_order_and_transport_parameters(pairs: list[tuple[str, str]], data: st.DataObject) -> None:
    """The lock key of general criteria is the same however the client orders them (they AND together)."""
    shuffled = data.draw(st.permutations(pairs))
    noisy = [*shuffled, ("_format", "json"), ("_count", "5")]
    a = conditional.analyse("Patient", urlencode(pairs), "x")
    b = conditional.analyse("Patient", urlencode(noisy), "x")
    assert a == b and a.key == b.key
    fast = all(n in ("_id", "identifier") for n, _ in pairs)
    assert (a.fast is not None) <= fast  # only identifier/_id criteria may take the match_key path
