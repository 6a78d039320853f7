"""``string`` parameters: starts-with by default, ``:exact``, ``:contains``, ``:text``.

Index fields under ``sp.<code>``:

* ``norm``: :func:`search.normalize.normalize_string` of each value (case/accent folded,
  truncated to ``MAX_KEYWORD_CHARS``), queried with ``prefix`` (default) or ``wildcard``
  (``:contains``);
* ``exact``: the NFC form of each value, queried with ``term`` (``:exact``).

``:text`` (not defined on strings by R4, by R5 as "text search") matches when every word of the
query starts a word of one value, in any order (``name:text=pierre jean`` matches "Jean-Pierre"):
see :func:`search.params.base.words_clause`.

``phonetic`` (Patient) additionally indexes ``phon``: the Soundex code of every word of every
name part (after case/accent folding), and matches when a word of the query sounds like one.

Each part of a HumanName (family, given, prefix, suffix, text) and of an Address (line, city,
district, state, postalCode, country, text) is a separate value, so ``name=john smi`` matches
a name part or the whole ``HumanName.text``, never words picked from different parts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fhir_common.types import EsQuery
from search.errors import SearchError
from search.normalize import MAX_KEYWORD_CHARS, normalize_exact, normalize_string
from search.params.base import (
    KEYWORD,
    MAX_CONTAINS_CHARS,
    MAX_PREFIX_CHARS,
    MAX_RAW_KEYWORD_CHARS,
    FhirValue,
    Fields,
    IndexContext,
    QueryContext,
    add,
    any_of,
    check_modifier,
    field_name,
    keyword_sort,
    term,
    unescape,
    words_clause,
)
from search.registry import SearchParameter

MODIFIERS = frozenset({"exact", "contains", "text"})


def modifiers(param: SearchParameter) -> tuple[str, ...]:
    """The modifiers ``compile_query`` accepts on ``param`` (listed by the CapabilityStatement)."""
    return tuple(sorted(MODIFIERS))

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


PHONETIC = "phonetic"
_SOUNDEX = {c: d for d, letters in (("1", "bfpv"), ("2", "cgjkqsxz"), ("3", "dt"), ("4", "l"), ("5", "mn"), ("6", "r"))
            for c in letters}


def soundex(word: str) -> str:
    """American Soundex of a folded word (``"lefevre"`` -> ``"L116"``); empty for non-letters."""
    letters = [c for c in normalize_string(word) if "a" <= c <= "z"]
    if not letters:
        return ""
    out, last = letters[0].upper(), _SOUNDEX.get(letters[0], "")
    for c in letters[1:]:
        digit = _SOUNDEX.get(c, "")
        if digit and digit != last:
            out += digit
        if c not in "hw":
            last = digit
    return (out + "000")[:4]


def _soundex_codes(folded: str) -> list[str]:
    """Soundex codes of the words of a folded value (hyphens separate words; non-letter words dropped)."""
    return [c for c in (soundex(w) for w in folded.replace("-", " ").split()) if c]


def mapping(param: SearchParameter) -> dict[str, Any]:
    if param.code == PHONETIC:
        return {"norm": KEYWORD, "exact": KEYWORD, "phon": KEYWORD}
    return {"norm": KEYWORD, "exact": KEYWORD}


def _parts(obj: dict[str, Any], keys: Sequence[str]) -> Iterator[Any]:
    for key in keys:
        v = obj.get(key)
        if isinstance(v, list):
            yield from v
        elif v is not None:
            yield v


def strings_of(value: FhirValue) -> list[Any]:
    """The searchable strings of one value (several for HumanName/Address)."""
    data = value.data
    if value.type == "HumanName" or (value.type is None and isinstance(data, dict) and "family" in data):
        return list(_parts(data, _NAME_PARTS))
    if value.type == "Address" and isinstance(data, dict):
        return list(_parts(data, _ADDRESS_PARTS))
    return [data]


def index(param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields:
    fields: Fields = {}
    for value in values:
        for s in strings_of(value):
            if not isinstance(s, str):
                ctx.skip(param, s, f"not a string ({value.type})")
                continue
            norm = normalize_string(s)[:MAX_KEYWORD_CHARS]
            if norm:
                add(fields, "norm", norm)
            exact = normalize_exact(s)
            if exact and len(exact) <= MAX_RAW_KEYWORD_CHARS:
                add(fields, "exact", exact)
            if param.code == PHONETIC:
                for code in _soundex_codes(norm):
                    add(fields, "phon", code)
    return fields


def _escape_wildcard(s: str) -> str:
    return s.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def _clause(param: SearchParameter, modifier: str | None, raw: str, name: str) -> EsQuery:
    value = unescape(raw)
    if param.code == PHONETIC and modifier is None:
        codes = _soundex_codes(normalize_string(value))
        if not codes:
            raise SearchError(f"no letters to match phonetically in {value!r}", name)
        return {"bool": {"filter": [term(field_name(param, "phon"), c) for c in codes]}}
    if modifier == "exact":
        return term(field_name(param, "exact"), normalize_exact(value))
    norm = normalize_string(value)[:MAX_KEYWORD_CHARS]
    if not norm:
        raise SearchError(f"empty search value for {param.code} after normalisation", name)
    if modifier == "text":
        return words_clause(field_name(param, "norm"), norm, name)
    limit = MAX_CONTAINS_CHARS if modifier == "contains" else MAX_PREFIX_CHARS
    if len(norm) > limit:
        raise SearchError(f"{'a :contains' if modifier else 'a string'} search value is limited to {limit} "
                          "characters", name)
    if modifier == "contains":
        return {"wildcard": {field_name(param, "norm"): {"value": f"*{_escape_wildcard(norm)}*"}}}
    return {"prefix": {field_name(param, "norm"): norm}}


def compile_query(
    param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
) -> EsQuery:
    check_modifier(MODIFIERS, param, modifier, name)
    return any_of([_clause(param, modifier, v, name) for v in values])


def sort(param: SearchParameter, descending: bool) -> list[dict[str, Any]]:
    return keyword_sort(field_name(param, "norm"), descending)
