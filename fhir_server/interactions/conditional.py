"""Conditional matching (http.html#cond-update, #ccreate, #cdelete, bundle conditional references).

Two paths, one set of 0/1/many rules:

- **Fast path** — criteria made only of ``identifier`` (``system|value``, ``value``,
  ``|value``, ``system|``; comma = OR) and ``_id``, repeated parameters AND-ed. They
  are matched in the store of record, inside the write's own transaction, on the
  ``match_key`` table (see ``storage/keys.py``): they see the transaction's earlier
  writes, including the Bundle's own entries, and the identifier values are locked
  first, so concurrent identical conditional creates make exactly one resource.
  For DocumentReference ``identifier`` covers ``masterIdentifier`` too, as the R4
  SearchParameter does.
- **General path** — any other search criteria the server supports
  (``family=x&birthdate=y``, chains such as ``patient.identifier=s|v``, modifiers...).
  They are compiled by the search compiler (strict: an unknown parameter is a 400)
  and matched in Elasticsearch. Soundness rests on three steps:

  1. a lock keyed by the *normalised* criteria (``Type?`` + the sorted pairs) is taken
     before anything is read and held until the write has committed: a process-local
     lock, plus on PostgreSQL a session-level advisory lock so that several server
     processes serialise too (``ResourceStore.criteria_locks``);
  2. under that lock the read-your-writes barrier waits until every acknowledged write
     is searchable, then Elasticsearch is searched: the previous conditional write with
     the same criteria has committed and is visible;
  3. inside the store transaction every Elasticsearch match is read again and dropped
     if it is no longer current (deleted meanwhile).

  So conditional operations with the same criteria never race each other (50
  concurrent identical creates make one resource). A plain write racing a conditional
  one is not serialised (the spec asks for nothing more; HAPI behaves the same).
  General criteria see the committed state only, never the entries of the same
  Bundle (http.html: the conditions are evaluated against the server's content when
  the transaction starts), except that resources the Bundle deletes no longer match.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from fhir_common.types import EsQuery, SearchParams
from fhir_server.errors import FHIRError, bad_request
from fhir_server.registry import get_type
from fhir_server.storage import WriteUnit
from search.query import SearchError, compile_search

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.security.policy import AccessPolicy

# parameters of the HTTP layer or of the result page, never criteria
_IGNORED = {"_format", "_pretty", "_summary", "_elements", "_count"}
# result parameters that make no sense for a match
_REFUSED = {"_sort", "_total", "_include", "_revinclude", "_contained", "_containedType"}
#: Elasticsearch hits read per general criteria; more visible matches than that are "many" anyway
MAX_GENERAL_HITS = 100
_STRIPES = [threading.Lock() for _ in range(256)]


@dataclass(frozen=True)
class Criterion:
    """One AND-ed parameter of the fast path: a set of OR-ed alternatives."""

    name: str  # _id | identifier
    alternatives: tuple[tuple[str | None, str | None], ...]  # (system, value); None = any


@dataclass(frozen=True)
class Criteria:
    """``Type?query`` normalised: transport parameters dropped, pairs sorted (the lock key)."""

    type: str
    pairs: tuple[tuple[str, str], ...]
    fast: tuple[Criterion, ...] | None  # set when only identifier/_id: matched on match_key

    @property
    def key(self) -> str:
        return f"{self.type}?{urlencode(self.pairs)}"


def elements_of(type_: str) -> tuple[str, ...]:
    return ("identifier", "masterIdentifier") if type_ == "DocumentReference" else ("identifier",)


def _token(raw: str) -> tuple[str | None, str | None]:
    if "|" not in raw:
        return None, raw
    system, _, value = raw.partition("|")
    return system, (value or None)


def _fast(pairs: SearchParams) -> tuple[Criterion, ...] | None:
    out: list[Criterion] = []
    for name, value in pairs:
        if name not in ("_id", "identifier") or "\\" in value:
            return None
        alts = tuple((None, v) if name == "_id" else _token(v) for v in value.split(","))
        if any(s is None and v is None for s, v in alts) or any(v == "" for _, v in alts):
            return None  # e.g. identifier=| : let the search compiler say what is wrong
        out.append(Criterion(name, alts))
    return tuple(out)


def analyse(type_: str, query: str | SearchParams, where: str) -> Criteria:
    """The criteria of ``Type?query``; 400 (naming ``where``) when there are none or a value is empty."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    kept: SearchParams = []
    for name, value in pairs:
        if name in _IGNORED:
            continue
        if name in _REFUSED:
            raise bad_request(f"'{name}' is a result parameter, not a conditional criterion", where)
        if not value:
            raise bad_request(f"Empty value for conditional parameter '{name}'", where)
        kept.append((name, value))
    if not kept:
        raise bad_request("Conditional interaction without criteria", where)
    kept.sort()
    return Criteria(type_, tuple(kept), _fast(kept))


def if_none_exist_query(raw: str, type_: str, base_url: str, where: str) -> str:
    """The query of an ``If-None-Exist`` (header or ``Bundle.entry.request.ifNoneExist``), from any of its forms.

    http.html#ccreate shows ``[search parameters]``, but clients send ``[base]/Type?...`` (the HAPI generic
    client, with ``_format``) or ``Type?...``: all three mean the same. A base that is not this server's or a
    type that is not the created resource's is a 400 naming ``where``. A bare query may hold a ``?`` in a
    value (``identifier=http://s?x|1``): it is a URL only when what comes before the first ``?`` has no ``=``.
    """
    text = raw.strip()
    prefix, sep, query = text.partition("?")
    if not sep or "=" in prefix or "&" in prefix:
        return text  # bare parameters
    path = prefix
    if "://" in prefix:
        base = base_url.rstrip("/")
        if not prefix.startswith(base + "/"):
            raise bad_request(f"If-None-Exist '{raw}' names another server: criteria are [base]/{type_}?..., "
                              f"{type_}?... or bare parameters, with this server's base {base}", where)
        path = prefix[len(base) + 1:]
    if path.lstrip("/") != type_:
        raise bad_request(f"If-None-Exist '{raw}' names '{path}' but the created resource is a {type_}", where)
    if not query:  # else an empty string: a plain create, not the conditional one asked for
        raise bad_request(f"If-None-Exist '{raw}' has no criteria", where)
    return query


def parse_criteria(type_: str, query: str | SearchParams, where: str) -> list[Criterion]:
    """Fast-path criteria of ``Type?query`` (identifier/_id only); 400 for anything else."""
    crit = analyse(type_, query, where)
    if crit.fast is None:
        raise bad_request("Only identifier and _id criteria are matched in the store", where)
    return list(crit.fast)


def match(unit: WriteUnit, type_: str, criteria: list[Criterion] | tuple[Criterion, ...]) -> set[str]:
    """Fast path: ids of the current resources of ``type_`` meeting every criterion, read inside ``unit``.

    Locks the identifier values first (PostgreSQL advisory locks), so a
    concurrent transaction matching or writing the same values waits for this one.
    """
    values = [v for c in criteria if c.name == "identifier" for _, v in c.alternatives if v is not None]
    unit.lock_values(type_, values)
    result: set[str] | None = None
    for c in criteria:
        ids: set[str] = set()
        for system, value in c.alternatives:
            if c.name == "_id":
                cur = unit.current(type_, value or "")
                if cur is not None and not cur.deleted:
                    ids.add(cur.id)
            else:
                ids |= unit.match(type_, elements_of(type_), system, value)
        result = ids if result is None else result & ids
    return result or set()


# -- general path ---------------------------------------------------------------------------------

def check_general(ctx: ServerContext, crit: Criteria, where: str, policy: AccessPolicy | None = None) -> EsQuery:
    """The Elasticsearch query of general criteria; 400 naming ``where`` when they cannot be searched.

    ``policy``: the caller's (None: unrestricted). Its chains, ``_has`` and ``_list`` run under it as in the
    caller's own search (the same resolver), so a match never depends on what the caller may not see: a
    patient with a masked document must match ``_has:DocumentReference:subject:security-label=...`` exactly
    as one without. The outer query is restricted too, so hidden matches cannot crowd visible ones out of
    :data:`MAX_GENERAL_HITS`; the write path still checks each match (with the write's own interaction)."""
    rt = get_type(crit.type)
    if rt is None or not rt.searchable:
        raise bad_request(f"{crit.type} is not searchable: only identifier and _id criteria apply", where)
    from .search_exec import EsResolver, policy_query

    try:
        compiled = compile_search(ctx.search_parameters, crit.type, list(crit.pairs), base_url=ctx.base_url,
                                  strict=True, resolver=EsResolver(ctx, policy))
    except SearchError as exc:
        raise bad_request(f"Conditional criteria '{crit.key}': {exc.message}", where) from exc
    restricted = policy_query(ctx, policy, crit.type, compiled.query)
    # None: the caller may not *search* the type (e.g. an update-only scope): the write path's own check decides
    return compiled.query if restricted is None else restricted


def search_general(ctx: ServerContext, crit: Criteria, where: str, policy: AccessPolicy | None = None) -> set[str]:
    """Ids Elasticsearch holds for general criteria, as the caller's ``policy`` lets them match; call after the
    barrier, under :func:`locked`."""
    query = check_general(ctx, crit, where, policy)
    resp = ctx.es.search(index=ctx.indices.alias(crit.type), query=query, source=False,
                         size=MAX_GENERAL_HITS, track_total_hits=False, sort=["_doc"]).body
    return {h["_id"] for h in resp["hits"]["hits"]}


@contextmanager
def locked(ctx: ServerContext, keys: list[str]) -> Iterator[None]:
    """Serialise conditional operations on the same normalised criteria, in this process and across processes.

    Stripes are taken in one global order, then the store's cross-process locks, so two
    operations needing several criteria never deadlock.
    """
    if not keys:
        yield
        return
    stripes = sorted({zlib.crc32(k.encode()) % len(_STRIPES) for k in keys})
    with ExitStack() as stack:
        for s in stripes:
            stack.enter_context(_STRIPES[s])
        stack.enter_context(ctx.store.criteria_locks(sorted(set(keys))))
        yield


def verify(unit: WriteUnit, type_: str, ids: set[str]) -> set[str]:
    """Elasticsearch matches still current in the store, read inside the write's transaction."""
    out = set()
    for id_ in ids:
        cur = unit.current(type_, id_)
        if cur is not None and not cur.deleted:
            out.add(id_)
    return out


def single_match(unit: WriteUnit, type_: str, criteria: list[Criterion], where: str) -> str | None:
    """The one matching id, None when none; 412 when several (http.html 'multiple matches')."""
    ids = match(unit, type_, criteria)
    if len(ids) > 1:
        raise FHIRError(412, "multiple-matches", f"The conditional criteria match {len(ids)} {type_} resources",
                        (where,))
    return next(iter(ids), None)
