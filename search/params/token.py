"""``token`` parameters: ``code``, ``system|code``, ``|code``, ``system|``; ``:not``, ``:text``, ``:of-type``,
``:in`` / ``:not-in`` (known value sets), ``:below`` / ``:above`` (subsumption in known code systems).

Case rule: a code is compared exactly unless its code system says ``caseSensitive = false``
(:func:`case_insensitive`, from the R4 CodeSystems in ``terminology-r4.json``: SNOMED CT).
administrative-gender and most R4 systems are case-sensitive, so ``gender=FEMALE`` does not
find ``female``; a system that says nothing, or is unknown, is compared exactly too.  Codes
without a system (booleans, plain strings) are exact.  Identifier values match exactly (never
accent-folded: folding identifiers is a known bug of other servers); ContactPoint values
(e-mail addresses...) match without regard to case, but are never accent-folded either.
Systems are URIs: always exact.

The case decision is taken at index time, per stored coding: only case-insensitive values get a
lower-cased copy (``*_ci`` fields).  A query is then always "exact term OR lower-cased term on the
``_ci`` field", two term queries, and ``code`` without a system still matches a SNOMED code in any
case but an administrative-gender code only exactly, without knowing the system at query time.

``:text`` follows R4 (search.html#token): "the search parameter is applied to the text", with
string semantics: the whole CodeableConcept.text / Coding.display / Identifier.type.text starts with
the value after case and accent folding (``type:text=discharge`` matches "Discharge summary",
``type:text=summary`` does not).

Terminology (``definitions/``): ``:in`` / ``:not-in`` expand the French JDVs of
``value-sets.json`` and the complete R4 expansions of ``terminology-r4.json``; ``:below`` /
``:above`` walk the hierarchy of the R4 code systems of ``terminology-r4.json`` (the code
itself included).  An unknown value set or code system is a 400, never an empty answer.

Index fields under ``sp.<code>`` (keywords):

* ``code``: every code / identifier value / ContactPoint value / boolean (``true``/``false``);
* ``system``: every system;
* ``sys_code``: ``system|code`` for values that have both (one keyword, so a system and a
  code from *different* Codings never combine into a false match);
* ``nosys``: codes that have no system (for ``|code``); a ``code`` element whose binding gives it
  an implicit system (:func:`implicit_system`) is indexed both with that system and without;
* ``text``: normalised CodeableConcept.text, Coding.display, Identifier.type.text (``:text``, prefix);
* ``of_type``: ``typeSystem|typeCode|value`` for Identifiers (``:of-type``);
* ``code_ci``, ``sys_code_ci``, ``nosys_ci``: lower-cased copies of ``code``, ``sys_code``,
  ``nosys`` for case-insensitive values only (codes of case-insensitive systems, ContactPoint values).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any

from fhir_common.fhirpath import element_types
from fhir_common.types import EsQuery
from search.errors import SearchError
from search.normalize import MAX_KEYWORD_CHARS, normalize_string
from search.params.base import (
    KEYWORD,
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
    none_of,
    split_escaped,
    term,
    text_prefix,
    unescape,
)
from search.registry import SearchParameter

MODIFIERS = frozenset({"not", "text", "of-type", "in", "not-in", "below", "above"})

FIELDS = ("code", "system", "sys_code", "nosys", "text", "of_type", "code_ci", "sys_code_ci", "nosys_ci")

#: Value types whose token is an identifier-like value (exact match only).
_EXACT_TYPES = frozenset({"Identifier"})
#: Value types with a code system (``:in``, ``:not-in``, ``:below``, ``:above``) and with a text (``:text``).
_CODED_TYPES = frozenset({"code", "Coding", "CodeableConcept"})
_TEXT_TYPES = frozenset({"Coding", "CodeableConcept", "Identifier"})


def modifiers(param: SearchParameter) -> tuple[str, ...]:
    """The modifiers that can match something on ``param``, from the types its paths yield (the
    CapabilityStatement lists these): ``:of-type`` only on Identifiers, ``:text`` only where a text is indexed,
    the terminology ones only on codes. A path whose type the model cannot tell keeps them all."""
    types: set[str] = set()
    for path in param.paths:
        found = element_types(path.expression)
        if found is None:
            return tuple(sorted(MODIFIERS))
        types |= found
    out = {"not"}
    if types & _CODED_TYPES:
        out |= {"in", "not-in", "below", "above"}
    if types & _TEXT_TYPES:
        out.add("text")
    if "Identifier" in types:
        out.add("of-type")
    return tuple(sorted(out))


#: Value types whose values match without regard to case whatever their system (e-mail addresses...).
_CASE_INSENSITIVE_TYPES = frozenset({"ContactPoint"})


def mapping(param: SearchParameter) -> dict[str, Any]:
    return {f: KEYWORD for f in FIELDS}


def _codings(value: FhirValue) -> Iterator[tuple[str | None, Any, str | None]]:
    """(system, code, display-ish text) triples of one value, whatever its type."""
    data = value.data
    if isinstance(data, bool):
        yield None, "true" if data else "false", None
    elif isinstance(data, str | int | float):
        yield None, str(data), None
    elif isinstance(data, dict):
        if value.type == "CodeableConcept" or "coding" in data or (value.type is None and "text" in data):
            for coding in data.get("coding", []):
                yield coding.get("system"), coding.get("code"), coding.get("display")
            if data.get("text"):
                yield None, None, data["text"]
        elif value.type == "Identifier":
            yield data.get("system"), data.get("value"), (data.get("type") or {}).get("text")
        elif value.type == "ContactPoint":
            yield data.get("system"), data.get("value"), None
        else:  # Coding, or an untyped dict that looks like one
            yield data.get("system"), data.get("code", data.get("value")), data.get("display")


def implicit_system(resource_type: str, code: str) -> str | None:
    """The code system of a parameter on a ``code`` element bound to one system (``Patient.gender``)."""
    system: str | None = _terminology()["implicitSystems"].get(resource_type, {}).get(code)
    return system


#: Matched without regard to case although their CodeSystem says nothing: the ANS visibility codes
#: (TRE_A07 ``MASQUE_PS``, ``INVISIBLE_PATIENT``, in both spellings of the system the IG examples use). The
#: access policy hides a document so labelled in any case (``security.policy``), and its search exclusion must
#: agree, erring on hiding: a ``masque_ps`` label hides the document from reads and from searches alike.
FOLDED_SYSTEMS = frozenset({
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument",
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatusVisibiliteDocument/FHIR/TRE-A07-StatusVisibiliteDocument",
})


@cache
def _case_insensitive_systems() -> frozenset[str]:
    return frozenset(_terminology()["caseInsensitiveSystems"]) | FOLDED_SYSTEMS


def case_insensitive(system: str | None) -> bool:
    """Whether codes of ``system`` match without regard to case: only where its CodeSystem says
    ``caseSensitive = false`` (an unknown system, or no system, is compared exactly)."""
    return system is not None and system in _case_insensitive_systems()


def index(param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields:
    fields: Fields = {}
    implicit = implicit_system(ctx.resource_type, param.code)
    for value in values:
        if implicit and isinstance(value.data, str):
            # a code with an implicit system: searchable as system|code, and still as |code
            add(fields, "system", implicit)
            add(fields, "sys_code", f"{implicit}|{value.data}")
            if case_insensitive(implicit):
                add(fields, "sys_code_ci", f"{implicit}|{value.data.lower()}")
        for system, code, text in _codings(value):
            if code is not None and not isinstance(code, str):
                ctx.skip(param, code, "code is not a string")
                code = None
            if code is not None and len(code) + len(system or "") >= MAX_RAW_KEYWORD_CHARS:
                ctx.skip(param, code, "code too long to index")
                code = None
            if system:
                add(fields, "system", system)
            if code:
                add(fields, "code", code)
                add(fields, "sys_code" if system else "nosys", f"{system}|{code}" if system else code)
                if value.type in _CASE_INSENSITIVE_TYPES or case_insensitive(system or implicit):
                    low = code.lower()
                    add(fields, "code_ci", low)
                    add(fields, "sys_code_ci" if system else "nosys_ci", f"{system}|{low}" if system else low)
            if isinstance(text, str) and (norm := normalize_string(text)[:MAX_KEYWORD_CHARS]):
                add(fields, "text", norm)
        if value.type == "Identifier" and isinstance(value.data, dict) and value.data.get("value"):
            for tc in (value.data.get("type") or {}).get("coding", []):
                if tc.get("code"):
                    add(fields, "of_type", f"{tc.get('system') or ''}|{tc['code']}|{value.data['value']}")
    return fields


def _exact_or_ci(param: SearchParameter, f: str, value: str) -> EsQuery:
    """Exact match, or a match of the lower-cased copy, which only case-insensitive values have (see
    :func:`index`): two term queries, whatever the system of the stored value."""
    return any_of([term(field_name(param, f), value), term(field_name(param, f + "_ci"), value.lower())])


def _match(param: SearchParameter, raw: str, name: str) -> EsQuery:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return _exact_or_ci(param, "code", unescape(raw))
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    if system and code:
        return any_of([term(field_name(param, "sys_code"), f"{system}|{code}"),
                       term(field_name(param, "sys_code_ci"), f"{system}|{code.lower()}")])
    if system:
        return term(field_name(param, "system"), system)
    if code:
        return _exact_or_ci(param, "nosys", code)
    raise SearchError(f"token value {raw!r} has neither a system nor a code", name)


def _of_type(param: SearchParameter, raw: str, name: str) -> EsQuery:
    parts = [unescape(p) for p in split_escaped(raw, "|")]
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SearchError(f":of-type expects type-system|type-code|value, got {raw!r}", name)
    return term(field_name(param, "of_type"), "|".join(parts))


def _text(param: SearchParameter, raw: str, name: str) -> EsQuery:
    """R4 ``:text``: string search semantics on the whole text (starts-with, case/accent folded)."""
    return text_prefix(field_name(param, "text"), raw, name)


@cache
def _terminology() -> dict[str, Any]:
    text = resources.files("search").joinpath("definitions/terminology-r4.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def value_sets() -> dict[str, list[str]]:
    """``url -> ["system|code", ...]`` of the value sets ``:in`` / ``:not-in`` can expand (see definitions/)."""
    text = resources.files("search").joinpath("definitions/value-sets.json").read_text("utf-8")
    sets: dict[str, list[str]] = dict(json.loads(text)["valueSets"])
    for url, by_system in _terminology()["valueSets"].items():
        sets.setdefault(url, [f"{system}|{code}" for system, codes in by_system.items() for code in codes])
    return sets


def code_systems() -> dict[str, dict[str, list[str]]]:
    """``url -> {code: [parent codes]}`` of the code systems ``:below`` / ``:above`` know."""
    systems: dict[str, dict[str, list[str]]] = _terminology()["codeSystems"]
    return systems


@cache
def _children(system: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for code, parents in code_systems()[system].items():
        for parent in parents:
            out.setdefault(parent, []).append(code)
    return out


def subsumed(system: str, code: str, direction: str) -> list[str]:
    """Codes of ``system`` below (subsumed by) or above (subsuming) ``code``, ``code`` first; KeyError if unknown."""
    graph = _children(system) if direction == "below" else code_systems()[system]
    out, todo = [code], [code]
    while todo:
        for nxt in graph.get(todo.pop(), []):
            if nxt not in out:
                out.append(nxt)
                todo.append(nxt)
    return out


def _subsumption(param: SearchParameter, direction: str, raw: str, name: str) -> EsQuery:
    parts = split_escaped(raw, "|")
    if len(parts) == 1 or not unescape(parts[0]):
        raise SearchError(f":{direction} needs system|code (subsumption is defined within a code system), "
                          f"got {raw!r}", name)
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    if system not in code_systems():
        raise SearchError(f":{direction}: code system {system!r} is not known to this server (subsumption is "
                          f"only evaluated in the {len(code_systems())} R4 code systems)", name)
    if not code:
        if direction == "above":
            raise SearchError(":above needs a code", name)
        return term(field_name(param, "system"), system)
    return _any_sys_code(param, [f"{system}|{c}" for c in subsumed(system, code, direction)])


def _in(param: SearchParameter, raw: str, name: str) -> EsQuery:
    url = unescape(raw).split("|", 1)[0]  # a |version is accepted and ignored (one version known)
    codes = value_sets().get(url)
    if codes is None:
        raise SearchError(f"unknown value set {url!r}: :in/:not-in only know {len(value_sets())} value sets", name)
    return _any_sys_code(param, codes)


def _any_sys_code(param: SearchParameter, system_codes: list[str]) -> EsQuery:
    """Any of ``system|code``, exactly or by the lower-cased copy (``:in`` and ``:below``/``:above`` both
    expand to such a list, and both must treat case as a plain ``system|code`` does)."""
    return any_of([{"terms": {field_name(param, "sys_code"): system_codes}},
                   {"terms": {field_name(param, "sys_code_ci"): [_lower_code(c) for c in system_codes]}}])


def _lower_code(system_code: str) -> str:
    system, _, code = system_code.partition("|")
    return f"{system}|{code.lower()}"


def compile_query(
    param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
) -> EsQuery:
    if modifier in ("below", "above"):
        return any_of([_subsumption(param, modifier, v, name) for v in values])
    if modifier in ("in", "not-in"):
        members = any_of([_in(param, v, name) for v in values])
        return members if modifier == "in" else none_of([members])
    check_modifier(MODIFIERS, param, modifier, name)
    if modifier == "text":
        return any_of([_text(param, v, name) for v in values])
    if modifier == "of-type":
        return any_of([_of_type(param, v, name) for v in values])
    clause = any_of([_match(param, v, name) for v in values])
    # :not also returns resources with no value at all (search.html#modifiers).
    return none_of([clause]) if modifier == "not" else clause


def sort(param: SearchParameter, descending: bool) -> list[dict[str, Any]]:
    return keyword_sort(field_name(param, "code"), descending)
