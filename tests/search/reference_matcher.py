"""An obviously-correct FHIR search matcher over raw resources (no index, no query compiler).

Written straight from search.html for the Patient parameters the property test generates:
string (``family``, ``given``: starts-with / ``:exact`` / ``:contains`` after case and accent
folding, ``:text``: every word of the query starts a word of the value), token (``gender``,
``identifier``, ``email``, ``_security``: the four ``system|code`` forms, ``:not``, ``:missing``,
codes exact (administrative-gender and v3-ActReason say ``caseSensitive``), e-mail addresses
case-insensitive, identifiers exact; ``gender`` carries the implicit system
of its required binding; ``:in`` / ``:not-in`` on the administrative-gender value set; ``:below`` /
``:above`` in a hand-copied part of the v3-ActReason hierarchy) and date (``birthdate``: ranges from
precision, the nine prefixes as defined by the spec, ``ap`` excluded as it depends on the clock; also
``death-date`` dateTimes with offsets and ``_lastUpdated`` instants to the microsecond) and
reference (``organization``: ``Type/id``, bare id, ``:Type``, ``:missing``; ``:text``: the display starts with
the value, case- and accent-insensitively, as string search).
Its slowness and repetition are deliberate: it must be easy to check by reading.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

GENDER = "http://hl7.org/fhir/administrative-gender"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
#: child -> parent, from the v3-ActReason page of the R4 specification (PurposeOfUse branch)
ACT_REASON_PARENT = {"TREAT": "PurposeOfUse", "ETREAT": "TREAT", "POPHLTH": "TREAT", "HRESCH": "PurposeOfUse",
                     "CLINTRCH": "HRESCH", "HMARKT": "PurposeOfUse"}


def fold(s: str) -> str:
    decomposed = unicodedata.normalize("NFKD", s.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


def _names(resource: dict[str, Any], part: str) -> list[str]:
    out: list[str] = []
    for name in resource.get("name", []):
        value = name.get(part)
        out += value if isinstance(value, list) else [value] if value else []
    return out


def _words(s: str) -> list[str]:
    return re.split(r"[^a-z0-9]+", fold(s))


def match_string(values: list[str], modifier: str | None, query: str) -> bool:
    if modifier == "text":
        wanted = [w for w in _words(query) if w]
        return any(all(any(word.startswith(w) for word in _words(v)) for w in wanted) for v in values)
    if modifier == "exact":
        return any(unicodedata.normalize("NFC", v) == unicodedata.normalize("NFC", query) for v in values)
    if modifier == "contains":
        return any(fold(query) in fold(v) for v in values)
    return any(fold(v).startswith(fold(query)) for v in values)


def _date_range(text: str) -> tuple[datetime, datetime]:
    """[lo, hi) in UTC of a date, dateTime or instant, from its precision (values without a zone are UTC)."""
    if "T" not in text:
        parts = [int(p) for p in text.split("-")]
        if len(parts) == 1:
            return _utc(parts[0], 1, 1), _utc(parts[0] + 1, 1, 1)
        if len(parts) == 2:
            y, m = parts
            return _utc(y, m, 1), _utc(y + (m == 12), m % 12 + 1, 1)
        lo = _utc(*parts)
        return lo, lo + timedelta(days=1)
    day, clock = text.split("T")
    zone = "+00:00"
    for sign in ("Z", "+", "-"):
        if sign in clock:
            clock, zone = clock.split(sign)[0], (sign + clock.split(sign)[1]) if sign != "Z" else "+00:00"
    seconds = clock.split(":")[2] if clock.count(":") == 2 else None
    fraction = seconds.split(".")[1] if seconds and "." in seconds else ""
    width = timedelta(minutes=1) if seconds is None else timedelta(seconds=10 ** -len(fraction))
    lo = datetime.fromisoformat(f"{day}T{clock}{zone}").astimezone(UTC)
    return lo, lo + width


def _utc(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def match_date(stored: str | None, prefix: str, query: str) -> bool:
    if stored is None:
        return False
    t_lo, t_hi = _date_range(stored)
    s_lo, s_hi = _date_range(query)
    contains = s_lo <= t_lo and t_hi <= s_hi  # the search range fully contains the target
    after = t_hi > s_hi  # the target has a part after the search range
    before = t_lo < s_lo
    return {
        "eq": contains,
        "ne": not contains,
        "gt": after,
        "lt": before,
        "ge": after or contains,
        "le": before or contains,
        "sa": t_lo >= s_hi,
        "eb": t_hi <= s_lo,
    }[prefix]


def _tokens(resource: dict[str, Any], code: str) -> list[tuple[str | None, str, bool]]:
    """(system, value, case_sensitive) of each token value."""
    if code == "gender":  # a code: its system is implied by the binding, and it is also searchable without
        return [(GENDER, resource["gender"], True), (None, resource["gender"], True)] if resource.get("gender") \
            else []
    if code == "email":
        return [("email", t["value"], False) for t in resource.get("telecom", []) if t.get("system") == "email"]
    if code == "_security":
        return [(c["system"], c["code"], True) for c in resource.get("meta", {}).get("security", [])]
    return [(i.get("system"), i["value"], True) for i in resource.get("identifier", []) if i.get("value")]


def _ancestors(code: str) -> list[str]:
    out = [code]
    while out[-1] in ACT_REASON_PARENT:
        out.append(ACT_REASON_PARENT[out[-1]])
    return out


def match_subsumption(values: list[tuple[str | None, str, bool]], modifier: str, query: str) -> bool:
    """``:below``: a value is the code or a descendant; ``:above``: a value is the code or an ancestor."""
    system, code = query.split("|", 1)
    for s, v, _ in values:
        if s != system:
            continue
        if not code or (code in _ancestors(v) if modifier == "below" else v in _ancestors(code)):
            return True
    return False


def match_token(values: list[tuple[str | None, str, bool]], query: str) -> bool:
    def same(a: str, b: str, exact: bool) -> bool:
        return a == b if exact else a.lower() == b.lower()

    if "|" not in query:
        return any(same(v, query, cs) for _, v, cs in values)
    system, code = query.split("|", 1)
    if system and code:
        return any(s == system and same(v, code, cs) for s, v, cs in values)
    if system:
        return any(s == system for s, _, _ in values)
    return any(s is None and same(v, code, cs) for s, v, cs in values)


def match_reference(resource: dict[str, Any], modifier: str | None, query: str) -> bool:
    if modifier == "text":
        display = (resource.get("managingOrganization") or {}).get("display")
        return bool(display) and match_string([display], None, query)
    ref = (resource.get("managingOrganization") or {}).get("reference")
    if not ref:
        return False
    if modifier:  # :Organization
        return ref == f"{modifier}/{query}" or ref == query
    return ref == query or ref.split("/", 1)[1] == query


#: date parameters -> their (single) stored value
DATE_ELEMENTS = {
    "birthdate": lambda r: r.get("birthDate"),
    "death-date": lambda r: r.get("deceasedDateTime"),
    "_lastUpdated": lambda r: r.get("meta", {}).get("lastUpdated"),
}


def matches(resource: dict[str, Any], params: list[tuple[str, str]]) -> bool:
    """AND over parameters, OR over comma-separated values (no escapes are generated)."""
    for name, value in params:
        code, _, modifier = name.partition(":")
        alternatives = value.split(",")
        if modifier == "missing":
            present = bool(_tokens(resource, code) if code in ("gender", "identifier", "email", "_security") else
                           DATE_ELEMENTS[code](resource) if code in DATE_ELEMENTS else
                           _names(resource, code) if code in ("family", "given") else
                           resource.get("managingOrganization") if code == "organization" else
                           resource.get("birthDate"))
            if present == (value == "true"):
                return False
            continue
        if code in ("family", "given"):
            ok = any(match_string(_names(resource, code), modifier or None, q) for q in alternatives)
        elif code in ("gender", "identifier", "email", "_security") and modifier in ("below", "above"):
            ok = any(match_subsumption(_tokens(resource, code), modifier, q) for q in alternatives)
        elif code in ("gender", "identifier", "email", "_security") and modifier in ("in", "not-in"):
            assert alternatives == [GENDER_VS], alternatives
            members = [f"{GENDER}|{g}" for g in ("male", "female", "other", "unknown")]
            ok = any(match_token(_tokens(resource, code), q) for q in members)
            if modifier == "not-in":
                ok = not ok
        elif code in ("gender", "identifier", "email", "_security"):
            ok = any(match_token(_tokens(resource, code), q) for q in alternatives)
            if modifier == "not":
                ok = not ok
        elif code == "organization":
            ok = any(match_reference(resource, modifier or None, q) for q in alternatives)
        elif code in DATE_ELEMENTS:
            stored = DATE_ELEMENTS[code](resource)
            ok = any(match_date(stored, q[:2] if q[:2].isalpha() else "eq",
                                q[2:] if q[:2].isalpha() else q) for q in alternatives)
        else:
            raise ValueError(name)
        if not ok:
            return False
    return True
