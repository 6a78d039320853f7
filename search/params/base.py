"""Shared vocabulary of the per-type parameter modules (string, token, reference, date, uri).

Every module exposes the same four functions, so that the index layout and the queries on it
live side by side (see :class:`ParamType`):

* ``mapping(param)``: ES properties of ``sp.<code>``;
* ``index(param, values, ctx)``: extracted FHIR values -> ``{field: [values]}``;
* ``compile_query(param, modifier, values, ctx, name)``: OR-list of raw query values -> one ES clause;
* ``sort(param, descending)``: ES sort clause(s) for ``_sort``;
* ``modifiers(param)``: the modifiers that work on ``param`` (what the CapabilityStatement lists).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fhir_common.types import EsQuery, Resource
from search.errors import SearchError
from search.normalize import MAX_KEYWORD_CHARS, normalize_string
from search.registry import SearchParameter

log = logging.getLogger("search.index")

KEYWORD: dict[str, Any] = {"type": "keyword"}

#: Keyword values longer than this are not indexed (Lucene's 32766-byte term limit).
MAX_RAW_KEYWORD_CHARS = MAX_KEYWORD_CHARS


@dataclass(frozen=True)
class FhirValue:
    """One value produced by a FHIRPath expression, with its FHIR type name if known.

    ``type`` is a FHIR type (``HumanName``, ``dateTime``, ``CodeableConcept``...) or a FHIRPath
    system type (``System.String``); ``None`` for computed values such as booleans.
    """

    type: str | None
    data: Any


@dataclass(frozen=True)
class IndexContext:
    """What extraction needs beyond the values: the resource (for logs) and this server's base."""

    resource_type: str
    resource_id: str | None
    base_url: str | None = None
    #: contained resources by id (``#id`` references are indexed through them for chains)
    contained: dict[str, Resource] = field(default_factory=dict)

    def skip(self, param: SearchParameter, value: Any, why: str) -> None:
        """Log a value that cannot be indexed; indexing never fails a write."""
        log.warning("not indexing %s/%s %s=%r: %s", self.resource_type, self.resource_id, param.code, value, why)


@dataclass(frozen=True)
class QueryContext:
    """What query compilation needs: this server's base URL and the clock (for ``ap`` dates)."""

    base_url: str
    now: datetime = field(default_factory=lambda: datetime.now().astimezone())


Fields = dict[str, list[Any]]


class ParamType(Protocol):
    """The interface every module under ``search.params`` implements."""

    MODIFIERS: frozenset[str]

    def modifiers(self, param: SearchParameter) -> tuple[str, ...]: ...

    def mapping(self, param: SearchParameter) -> dict[str, Any]: ...

    def index(self, param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields: ...

    def compile_query(
        self, param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
    ) -> EsQuery: ...

    def sort(self, param: SearchParameter, descending: bool) -> list[dict[str, Any]]: ...


def field_name(param: SearchParameter, sub: str) -> str:
    """Full ES path of a parameter's subfield: ``sp.<code>.<sub>``."""
    return f"sp.{param.code}.{sub}"


def add(fields: Fields, key: str, value: Any) -> None:
    """Append ``value`` to ``fields[key]`` once (documents stay small, order kept)."""
    bucket = fields.setdefault(key, [])
    if value not in bucket:
        bucket.append(value)


def any_of(clauses: Sequence[EsQuery]) -> EsQuery:
    """OR of clauses (a single clause is returned as is)."""
    if len(clauses) == 1:
        return clauses[0]
    return {"bool": {"should": list(clauses), "minimum_should_match": 1}}


def none_of(clauses: Sequence[EsQuery]) -> EsQuery:
    return {"bool": {"must_not": list(clauses)}}


def match_nothing() -> EsQuery:
    return {"bool": {"must_not": [{"match_all": {}}]}}


def term(field_path: str, value: Any) -> EsQuery:
    return {"term": {field_path: value}}


def check_modifier(allowed: frozenset[str], param: SearchParameter, modifier: str | None, name: str) -> None:
    """Unsupported modifiers are always an error (never silently ignored)."""
    if modifier is not None and modifier not in allowed:
        raise SearchError(f"modifier :{modifier} is not supported on {param.type} parameter {param.code}", name)


def keyword_sort(field_path: str, descending: bool) -> list[dict[str, Any]]:
    """Sort on a multi-valued keyword: the value that comes first in the requested order wins."""
    order = "desc" if descending else "asc"
    return [{field_path: {"order": order, "mode": "max" if descending else "min", "missing": "_last"}}]


def split_escaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` unless escaped with a backslash; escapes are kept for later stages."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """Undo FHIR search escaping: ``\\,`` ``\\$`` ``\\|`` ``\\\\``; other backslashes stay literal."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in ",$|\\":
            out.append(value[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


#: Longest ``prefix`` query ES accepts (``index.max_regex_length``); string/uri values past it are a 400
MAX_PREFIX_CHARS = 1000
#: Longest ``:contains`` value: the ``*v*`` wildcard automaton must stay within ES's determinization effort
MAX_CONTAINS_CHARS = 256
#: ``:text`` bounds: each word is a regexp, and ES refuses patterns over 1,000 characters
MAX_TEXT_WORDS = 16
MAX_TEXT_WORD_CHARS = 200


def _regexp_literal(s: str) -> str:
    """``s`` with every character Lucene's regexp syntax could read as an operator escaped."""
    return "".join(c if c.isalnum() else "\\" + c for c in s)


def text_prefix(field_path: str, raw: str, name: str) -> EsQuery:
    """Token / reference ``:text``: string search semantics (search.html#string) on the text of the value:
    the whole normalised text starts with the normalised query (``summary`` does not match "Discharge
    summary"; ``discharge sum`` does).  ``field_path`` holds :func:`search.normalize.normalize_string`
    of each text, truncated to ``MAX_KEYWORD_CHARS``."""
    norm = normalize_string(unescape(raw))
    if not norm:
        raise SearchError("empty :text value", name)
    if len(norm) > MAX_PREFIX_CHARS:
        raise SearchError(f"a :text search value is limited to {MAX_PREFIX_CHARS} characters", name)
    return {"prefix": {field_path: norm}}


def words_clause(field_path: str, folded: str, name: str) -> EsQuery:
    """``:text``: every word of ``folded`` (a normalised query) starts a word of one value of ``field_path``.

    Values are normalised too (case/accent folded, so Latin letters are ASCII); a word starts the value
    or follows any character that is not an ASCII letter or digit (``pierre`` starts a word of
    ``jean-pierre``).  A ``regexp`` per word on the keyword field, all required.
    """
    words = "".join(c if c.isalnum() else " " for c in folded).split()
    if not words:
        raise SearchError(f"no word to search for in {folded!r}", name)
    if len(words) > MAX_TEXT_WORDS or max(len(w) for w in words) > MAX_TEXT_WORD_CHARS:
        raise SearchError(f":text takes at most {MAX_TEXT_WORDS} words of at most {MAX_TEXT_WORD_CHARS} characters",
                          name)
    return {"bool": {"filter": [
        {"regexp": {field_path: {"value": f"({lit}|.*[^a-z0-9]{lit}).*", "flags": "NONE"}}}
        for lit in (_regexp_literal(w) for w in words)]}}

