"""Match keys: the identifiers of each current resource, kept in the store of record.

Conditional interactions (``If-None-Exist``, conditional update/delete/patch,
conditional references in transactions) must match consistently with writes made
earlier in the same store transaction, and safely under concurrency. Elasticsearch
can do neither (it is eventually consistent and outside the transaction), so the
store keeps, for every current resource, one row per ``identifier`` (and
``masterIdentifier``), written in the same transaction as the version (HAPI keeps
a similar table of conditional-create URLs).

Consent actors (``consent.py``): every current Consent also gets one row per actor of its top-level
provision, so the oppositions naming a professional are found in the store of record (no Elasticsearch,
no index lag). The rows narrow, the stored Consent decides (``consent.opposition``), so they only need to
be a superset: ``consent-actor`` holds the last path segment (the id) of a literal reference, the same for
every spelling of it (relative, absolute, ``/_history/n``), and ``consent-actor-id`` an identifier's system
and value, as ``opposition`` reads them.

Uniqueness policy: ``UNIQUE_ELEMENTS`` lists elements whose ``system|value`` may
belong to only one current resource of the type. ``DocumentReference.masterIdentifier``
is the document's uniqueId (XDS), so a retried ITI-65/ITI-105 can never store the
same document twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from fhir_common.types import Resource

KEY_ELEMENTS = ("identifier", "masterIdentifier")
#: Version of the rules of :func:`extract_keys`. The store records the version its rows were derived with
#: (the ``RULES_MARKER`` row of ``rules_version``) and rebuilds the rows of every current resource at start-up
#: when it differs (``backfill.py``), so resources stored before a rule existed (or before the table did) are
#: still matched. Bump it whenever :func:`extract_keys` changes.
RULES_VERSION = 2  # 2: Consent actors
RULES_MARKER = "match-key-rules"  # its row in ``rules_version`` (before revision store_0002: a row of match_key)
UNIQUE_ELEMENTS: dict[str, tuple[str, ...]] = {"DocumentReference": ("masterIdentifier",)}
MAX_PART = 255
CONSENT_ACTOR = "consent-actor"
CONSENT_ACTOR_ID = "consent-actor-id"


@dataclass(frozen=True, slots=True)
class MatchKey:
    element: str  # identifier | masterIdentifier | consent-actor | consent-actor-id
    system: str  # "" when the identifier has no system
    value: str


def _identifier_key(element: str, ident: Any) -> MatchKey | None:
    if not isinstance(ident, dict):
        return None
    value, system = ident.get("value"), ident.get("system", "")
    if not isinstance(value, str) or not value or not isinstance(system, str):
        return None
    if len(value) > MAX_PART or len(system) > MAX_PART:
        return None  # not matchable; such values are not valid business identifiers anyway
    return MatchKey(element, system, value)


def reference_key(reference: str) -> str:
    """The ``consent-actor`` value of a literal reference: its last path segment before any ``/_history/``
    (bounded). Equal for a reference and its normalised form (``parse_reference`` only strips this server's
    base and the version), so looking up the principal's normalised references finds every spelling."""
    return reference.split("/_history/", 1)[0].rstrip("/").rsplit("/", 1)[-1][:MAX_PART]


def identifier_values(system_value: str) -> set[str]:
    """The ``consent-actor-id`` values a ``system|value`` string could stand for (a system may hold ``|``)."""
    parts = system_value.split("|")
    return {"|".join(parts[i:])[:MAX_PART] for i in range(1, len(parts))}


def _consent_actor_keys(resource: Resource) -> set[MatchKey]:
    """Keys for the actors of a Consent's top-level provision, read as ``consent.opposition`` reads them."""
    provision = resource.get("provision")
    actors = provision.get("actor") if isinstance(provision, dict) else None
    keys: set[MatchKey] = set()
    for actor in actors if isinstance(actors, list) else []:
        ref = actor.get("reference") if isinstance(actor, dict) else None
        if not isinstance(ref, dict):
            continue
        if isinstance(literal := ref.get("reference"), str):
            keys.add(MatchKey(CONSENT_ACTOR, "", reference_key(literal)))
        if isinstance(ident := ref.get("identifier"), dict):  # opposition() compares f"{system}|{value}"
            keys.add(MatchKey(CONSENT_ACTOR_ID, f"{ident.get('system')}"[:MAX_PART],
                              f"{ident.get('value')}"[:MAX_PART]))
    return keys


def extract_keys(resource: Resource) -> set[MatchKey]:
    """The match keys of a resource (malformed identifiers are ignored, never an error)."""
    keys: set[MatchKey] = _consent_actor_keys(resource) if resource.get("resourceType") == "Consent" else set()
    idents = resource.get("identifier")
    if isinstance(idents, list):
        for ident in idents:
            if (k := _identifier_key("identifier", ident)) is not None:
                keys.add(k)
    if (k := _identifier_key("masterIdentifier", resource.get("masterIdentifier"))) is not None:
        keys.add(k)
    return keys


def lock_id(type_: str, value: str) -> int:
    """A signed 64-bit advisory-lock key for (type, identifier value), system deliberately left out.

    Leaving the system out makes ``identifier=v`` and ``identifier=s|v`` take the
    same lock, so every pair of operations that could match each other serialise.
    """
    digest = hashlib.blake2b(f"{type_}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class UniqueKeyViolation(Exception):
    """Another current resource already holds a unique identifier (e.g. a masterIdentifier)."""

    def __init__(self, type_: str, key: MatchKey, holder_id: str) -> None:
        super().__init__(f"{type_}.{key.element} {key.system}|{key.value} is already held by {type_}/{holder_id}")
        self.type = type_
        self.key = key
        self.holder_id = holder_id
