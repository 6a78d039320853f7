"""R4 primitive datatypes: JSON representation, lexical regex (datatypes.html) and calendar validity.

``check(type_code, value)`` returns None when ``value`` is a valid JSON value of that primitive, else a message.
The regexes are the ones of the R4 StructureDefinitions (``value`` element, regex extension), compiled once;
dates are also checked against the calendar (the regex accepts 2021-02-31).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import date

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_TZ = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATE_RE = re.compile(_YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?")
_DATETIME_RE = re.compile(_YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T" + _TIME + _TZ + r")?)?)?")
_INSTANT_RE = re.compile(_YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T" + _TIME + _TZ)
_TIME_RE = re.compile(_TIME)
_CODE_RE = re.compile(r"[^\s]+( [^\s]+)*")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OID_RE = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_UUID_RE = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_URI_RE = re.compile(r"\S+")
_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_B64_STRIP = re.compile(r"\s+")
MAX_STRING = 1024 * 1024
INT32 = (-(2**31), 2**31 - 1)

PRIMITIVES = frozenset({"boolean", "integer", "positiveInt", "unsignedInt", "decimal", "string", "markdown", "code",
                        "id", "uri", "url", "canonical", "oid", "uuid", "date", "dateTime", "instant", "time",
                        "base64Binary", "xhtml"})


def _calendar(value: str) -> str | None:
    parts = value[:10].split("-")
    if len(parts) == 3:
        try:
            date(int(parts[0]), int(parts[1]), int(parts[2]))
        except ValueError:
            return f"'{value}' is not a valid calendar date"
    return None


def _string(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a JSON string"
    if value == "":
        return "must not be empty"
    if len(value) > MAX_STRING:
        return "is longer than 1 MB"
    return None


def _regex(pattern: re.Pattern[str], what: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if not isinstance(value, str):
            return "must be a JSON string"
        if not pattern.fullmatch(value):
            return f"'{value}' is not a valid {what}"
        return None

    return check


def _dated(pattern: re.Pattern[str], what: str) -> Callable[[object], str | None]:
    base = _regex(pattern, what)

    def check(value: object) -> str | None:
        return base(value) or (_calendar(value) if isinstance(value, str) else None)  # base accepts strings only

    return check


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be a JSON boolean (true or false)"


def _integer(low: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a JSON integer (no fraction, no quotes)"
        if not (max(low, INT32[0]) <= value <= INT32[1]):
            return f"{value} is out of range (>= {low})" if low > INT32[0] else f"{value} is not a 32-bit integer"
        return None

    return check


def _decimal(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a JSON number"
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return "must be a finite number"
    return None


def _base64(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a JSON string"
    compact = _B64_STRIP.sub("", value)
    if not compact:
        return "must not be empty"
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64"
    return None


def _uri(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a JSON string"
    if not _URI_RE.fullmatch(value):
        return f"'{value}' is not a valid URI (empty or with whitespace)"
    if value[:8] == "urn:oid:" and not _OID_RE.fullmatch(value):
        return f"'{value}' is not a valid OID (urn:oid: then dot-separated numbers)"
    if value[:9] == "urn:uuid:" and not _UUID_RE.fullmatch(value):
        return f"'{value}' is not a valid UUID (urn:uuid: then a lower-case UUID)"
    return None


CHECKS: dict[str, Callable[[object], str | None]] = {
    "boolean": _boolean,
    "integer": _integer(INT32[0]),
    "positiveInt": _integer(1),
    "unsignedInt": _integer(0),
    "decimal": _decimal,
    "string": _string,
    "markdown": _string,
    "xhtml": _string,
    "code": _regex(_CODE_RE, "code (no leading, trailing or double whitespace)"),
    "id": _regex(_ID_RE, "id (1-64 of A-Z a-z 0-9 - .)"),
    "uri": _uri,
    "url": _uri,
    "canonical": _uri,
    "oid": _regex(_OID_RE, "oid (urn:oid:...)"),
    "uuid": _regex(_UUID_RE, "uuid (urn:uuid:, lower case)"),
    "date": _dated(_DATE_RE, "date (YYYY, YYYY-MM or YYYY-MM-DD)"),
    "dateTime": _dated(_DATETIME_RE, "dateTime (a time needs seconds and a time zone)"),
    "instant": _dated(_INSTANT_RE, "instant (full date, time and time zone)"),
    "time": _regex(_TIME_RE, "time (hh:mm:ss)"),
    "base64Binary": _base64,
}


def _fast(type_code: str) -> Callable[[object], bool]:
    fn = CHECKS[type_code]
    if type_code in ("string", "markdown"):
        return lambda v: fn(v) is None and isinstance(v, str) and not (v[:1].isspace() or v[-1:].isspace())
    if type_code in ("uri", "url", "canonical"):
        return lambda v: fn(v) is None and isinstance(v, str) and v[:1] != "#"
    return lambda v: fn(v) is None


# True when a value of the type is valid and needs nothing more (no whitespace warning, no '#' reference): the
# engine's shortcut for the single primitive elements without rules, the bulk of any resource
FAST: dict[str, Callable[[object], bool]] = {t: _fast(t) for t in CHECKS if t != "xhtml"}


def check(type_code: str, value: object) -> str | None:
    """None if ``value`` is valid for the primitive ``type_code``, else why not."""
    fn = CHECKS.get(type_code)
    return fn(value) if fn else None


def has_outer_whitespace(value: object) -> bool:
    return isinstance(value, str) and value != value.strip()
