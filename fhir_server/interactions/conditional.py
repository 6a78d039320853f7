"""Conditional matching (http.html#cond-update, #ccreate, #cdelete, bundle conditional references).

Rule (documented in README): conditional criteria are matched in the store of
record, inside the write's own transaction, never in Elasticsearch, so they see
the transaction's earlier writes and cannot race. The supported criteria are
``_id`` and ``identifier`` (``system|value``, ``value``, ``|value``,
``system|``; comma = OR; repeated parameters = AND). For DocumentReference
``identifier`` covers ``masterIdentifier`` too, as the R4 SearchParameter does.
Anything else is refused with 400 rather than matched unsafely.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fhir_server.errors import FHIRError, bad_request
from fhir_server.storage import WriteUnit

# parameters of the HTTP layer, never criteria
_IGNORED = {"_format", "_pretty", "_summary", "_elements", "_count"}


@dataclass(frozen=True)
class Criterion:
    """One AND-ed parameter: a set of OR-ed alternatives."""

    name: str  # _id | identifier
    alternatives: tuple[tuple[str | None, str | None], ...]  # (system, value); None = any


def elements_of(type_: str) -> tuple[str, ...]:
    return ("identifier", "masterIdentifier") if type_ == "DocumentReference" else ("identifier",)


def _token(raw: str) -> tuple[str | None, str | None]:
    if "|" not in raw:
        return None, raw
    system, _, value = raw.partition("|")
    return system, (value or None)


def parse_criteria(type_: str, query: str | list[tuple[str, str]], where: str) -> list[Criterion]:
    """Criteria of ``Type?query``; 400 (naming ``where``) for anything not safely matchable."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
    out: list[Criterion] = []
    for name, value in pairs:
        if name in _IGNORED:
            continue
        if name not in ("_id", "identifier"):
            raise bad_request(
                f"Conditional criteria on '{name}' are not supported; use identifier=system|value or _id", where)
        if not value:
            raise bad_request(f"Empty value for conditional parameter '{name}'", where)
        alts = tuple((None, v) if name == "_id" else _token(v) for v in value.split(","))
        if any(s is None and v is None for s, v in alts) or any(v == "" for _, v in alts):
            raise bad_request(f"Invalid conditional value '{value}' for '{name}'", where)
        out.append(Criterion(name, alts))
    if not out:
        raise bad_request("Conditional interaction without criteria", where)
    return out


def match(unit: WriteUnit, type_: str, criteria: list[Criterion]) -> set[str]:
    """Ids of the current resources of ``type_`` that meet every criterion, read inside ``unit``.

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


def single_match(unit: WriteUnit, type_: str, criteria: list[Criterion], where: str) -> str | None:
    """The one matching id, None when none; 412 when several (http.html 'multiple matches')."""
    ids = match(unit, type_, criteria)
    if len(ids) > 1:
        raise FHIRError(412, "multiple-matches", f"The conditional criteria match {len(ids)} {type_} resources",
                        (where,))
    return next(iter(ids), None)
