"""A patient's opposition to a practitioner or organisation (``Consent``), looked up once per request.

Supported shape (docs/security.md): a ``Consent`` with

- ``status`` = ``active`` and ``scope`` coded ``patient-privacy``
  (``http://terminology.hl7.org/CodeSystem/consentscope``),
- ``patient`` = a literal reference to the Patient who opposes,
- ``provision.type`` = ``deny`` (the top-level provision),
- ``provision.actor[].reference`` naming the opposed actor: a literal reference (``Practitioner/123``,
  ``PractitionerRole/..``, ``Organization/456``, relative or absolute on this server) or an identifier
  reference (``{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "<RPPS>"}}``),
- optionally ``provision.period``: the opposition holds only within it.

``provision.class``, ``provision.data`` and nested provisions are not interpreted: such a Consent denies
the actor the whole record (it errs on the patient's side).

The token names the actor (see :class:`.tokens.Principal`): ``fhirUser``, the ``organization`` claim
(references or ``system|value`` identifiers) and the ``identifier`` claim (``system|value``).

Read-your-writes: the Consents naming an actor are cached per process with the state of the store's
Consent log they reflect (last position and number of versions: ``store.log_marker``, one key read per
request, made at the start of the request's first thread-pool hop, ``authz.run``). When the
log has moved, the entry is brought up to date from the new Consent versions, read in the store (the newest
version of each Consent decides); only when they cannot all be found that way (thousands of them, or a
commit below the last position) does the look-up run again. Either way a Consent whose write returned 2xx
applies to the next request, and Consents about other actors do not make an actor's next request slower
than a few store reads.

The look-up reads the store of record only, never Elasticsearch: the ``match_key`` rows of each current
Consent's actors (``storage.keys``, written in the Consent's own transaction) narrow, the stored Consent
decides. So an index outage or lag never denies a professional service, nor hides a fresh opposition.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError
from fhir_server.storage.keys import CONSENT_ACTOR, CONSENT_ACTOR_ID, identifier_values, reference_key
from search.params.date import parse_date_range
from search.params.reference import parse_reference

from .tokens import Principal

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
READ_BATCH = 500  # Consents read from the store per statement
MAX_CATCH_UP = 1000  # Consent versions read from the store to update a cache entry before a full look-up
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Opposition:
    """One patient's opposition to the actor, within ``[start, end)`` (None: unbounded)."""

    patient: str
    start: datetime | None = None
    end: datetime | None = None

    def holds(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


@dataclass(frozen=True)
class ActorKeys:
    references: frozenset[str]  # normalised: "Practitioner/123" (or an absolute URL of another server)
    identifiers: frozenset[str]  # "system|value"

    def __bool__(self) -> bool:
        return bool(self.references or self.identifiers)


def actor_keys(principal: Principal, base_url: str) -> ActorKeys:
    refs = set()
    for ref in (principal.fhir_user, *principal.organizations):
        if ref:
            norm, rtype, rid = parse_reference(ref, base_url)
            if rtype and rid:
                refs.add(norm)
    return ActorKeys(frozenset(refs), frozenset(principal.identifiers))


UNIDENTIFIED = ("A user-context token must identify the professional (claim fhirUser: a reference such as "
                "Practitioner/123, or identifier: system|value) so that patients' oppositions (Consent) can be applied")


def identifies_user(principal: Principal, base_url: str) -> bool:
    """Whether the token names the professional themself: a ``fhirUser`` reference or an ``identifier`` claim.

    Without either, no Consent naming the user could ever be found: the look-up would pass every patient's
    opposition by. An ``organization`` claim alone does not do: a Consent may name the practitioner."""
    if principal.user_identifiers:
        return True
    if not principal.fhir_user:
        return False
    _, rtype, rid = parse_reference(principal.fhir_user, base_url)
    return bool(rtype and rid)


def require_identified(principal: Principal, base_url: str) -> None:
    """403 for a user-context principal the Consent look-up could not apply to (fail closed)."""
    if not identifies_user(principal, base_url):
        raise FHIRError(403, "forbidden", UNIDENTIFIED)


def _period(provision: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    raw = provision.get("period")
    period: dict[str, Any] = raw if isinstance(raw, dict) else {}
    start = end = None
    try:
        if isinstance(period.get("start"), str):
            start = parse_date_range(period["start"]).lo
        if isinstance(period.get("end"), str):
            end = parse_date_range(period["end"]).hi
    except ValueError:
        pass  # the validator refuses malformed dates at write time; an unreadable bound is no bound
    return start, end


def opposition(consent: Resource, keys: ActorKeys, base_url: str) -> Opposition | None:
    """The opposition ``consent`` expresses against the actor, if it has the supported shape and names it."""
    if consent.get("status") != "active":
        return None
    raw_scope = consent.get("scope")
    scope: dict[str, Any] = raw_scope if isinstance(raw_scope, dict) else {}
    if not any(isinstance(c, dict) and c.get("code") == "patient-privacy" and c.get("system") in (None, CONSENT_SCOPE)
               for c in scope.get("coding") or []):
        return None
    provision = consent.get("provision")
    if not isinstance(provision, dict) or provision.get("type") != "deny":
        return None
    patient_ref = (consent.get("patient") or {}).get("reference") if isinstance(consent.get("patient"), dict) \
        else None
    if not isinstance(patient_ref, str):
        return None
    _, ptype, pid = parse_reference(patient_ref, base_url)
    if ptype != "Patient" or not pid or "/" in pid:
        return None
    for actor in provision.get("actor") or []:
        ref = actor.get("reference") if isinstance(actor, dict) else None
        if not isinstance(ref, dict):
            continue
        literal = ref.get("reference")
        if isinstance(literal, str) and parse_reference(literal, base_url)[0] in keys.references:
            return Opposition(pid, *_period(provision))
        ident = ref.get("identifier")
        if isinstance(ident, dict) and f"{ident.get('system')}|{ident.get('value')}" in keys.identifiers:
            return Opposition(pid, *_period(provision))
    return None


Oppositions = dict[str, Opposition]  # by Consent id


def _lookup(ctx: ServerContext, keys: ActorKeys) -> Oppositions:
    """Active Consents naming the actor, from the store of record: the Consent actors' match keys narrow
    (a superset: ``storage.keys``), the stored Consent decides."""
    wanted = [(CONSENT_ACTOR, reference_key(r)) for r in keys.references]
    wanted += [(CONSENT_ACTOR_ID, v) for i in keys.identifiers for v in identifier_values(i)]
    ids = sorted(ctx.store.ids_with_keys("Consent", wanted))
    out: Oppositions = {}
    for i in range(0, len(ids), READ_BATCH):
        for stored in ctx.store.read_many("Consent", ids[i:i + READ_BATCH]).values():
            if stored.deleted or stored.content is None:
                continue
            found = opposition(stored.resource(), keys, ctx.base_url)
            if found is not None:
                out[stored.id] = found
    return out


#: (max seq, number of versions) of the store's Consent log: changes whenever a Consent version commits
Marker = tuple[int, int]


def _marker(ctx: ServerContext) -> Marker:
    """The count matters too: PostgreSQL may commit seqs out of order, so a late commit can sit below the max."""
    return ctx.store.log_marker("Consent")


def _catch_up(ctx: ServerContext, keys: ActorKeys, known: Oppositions, old: Marker, new: Marker) -> Oppositions | None:
    """``known`` updated from the Consent versions committed since ``old``, read in the store (no index, no
    barrier); None when they cannot all be found that way (too many, or committed out of seq order)."""
    expected = new[1] - old[1]  # versions committed since: exactly these must sit above the old position
    if not 0 < expected <= MAX_CATCH_UP:
        return None
    page = ctx.store.history("Consent", None, before_seq=None, since_us=None, count=expected + 1)
    versions = [v for v in page if v.seq > old[0]]
    if len(versions) != expected:
        return None
    out = dict(known)
    seen: set[str] = set()
    for v in versions:  # newest first: the newest version of each Consent decides
        if v.id in seen:
            continue
        seen.add(v.id)
        found = None if v.deleted or v.content is None else opposition(v.resource(), keys, ctx.base_url)
        if found is None:
            out.pop(v.id, None)
        else:
            out[v.id] = found
    return out


_Key = tuple[int, str, ActorKeys]  # (id of the server context, its store URL, the actor)


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[_Key, tuple[Marker, Oppositions]] = OrderedDict()

    def get(self, key: _Key) -> tuple[Marker, Oppositions] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: _Key, marker: Marker, value: Oppositions) -> None:
        with self._lock:
            self._items[key] = (marker, value)
            self._items.move_to_end(key)
            while len(self._items) > _CACHE_SIZE:
                self._items.popitem(last=False)


_CACHE = _Cache()


def opposing_patients(ctx: ServerContext, principal: Principal) -> frozenset[str]:
    """Ids of the patients whose Consent currently denies this principal's user or organisations."""
    require_identified(principal, ctx.base_url)  # (authz.prepare refused it already: never an empty look-up)
    keys = actor_keys(principal, ctx.base_url)
    marker = _marker(ctx)
    cache_key = (id(ctx), ctx.settings.db_url, keys)
    cached = _CACHE.get(cache_key)
    found = None
    if cached is not None:
        found = cached[1] if cached[0] == marker else _catch_up(ctx, keys, cached[1], cached[0], marker)
    if found is None:
        found = _lookup(ctx, keys)
    if cached is None or cached[0] != marker:
        _CACHE.put(cache_key, marker, found)
    now = datetime.now(UTC)
    return frozenset(o.patient for o in found.values() if o.holds(now))
