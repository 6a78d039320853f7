"""``date`` parameters: FHIR dates are *ranges*, and prefixes compare ranges.

Stored values
    Every value becomes a half-open UTC range ``[lo, hi)`` from its precision:
    ``2020`` -> [2020-01-01, 2021-01-01), ``2020-03`` -> one month, ``2020-03-04`` -> one
    day, ``…T10:00`` -> one minute, ``…T10:00:05`` -> one second, ``…T10:00:05.12`` -> 10 ms.
    A Period spans from the start of ``start``'s range to the end of ``end``'s range; a missing
    bound is unbounded (an ongoing Period has no upper bound).  A Timing contributes each
    ``event`` and its ``repeat.boundsPeriod``.  Instants (``meta.lastUpdated``) are dateTimes.

Time zones
    Values *without* a time zone (dates, and dateTimes without an offset, in resources and in
    search values alike) are interpreted in **UTC** (like Blaze): ``birthdate=2020-01-01``
    is [2020-01-01T00:00Z, 2020-01-02T00:00Z).  Values with an offset are converted to UTC.
    In a query string an unencoded ``+01:00`` arrives as `` 01:00``; that space is read as ``+``.

Index fields under ``sp.<code>``
    ``range`` (``long_range`` of microseconds since 1970-01-01T00:00Z, ``{"gte": lo, "lt": hi}``,
    bounds omitted when unbounded) for searching: instants such as ``meta.lastUpdated`` carry
    microseconds, and ES ``date_range`` keeps only milliseconds, which made
    ``_lastUpdated=gt<a resource's own lastUpdated>`` match that resource.  ``lo`` and ``hi``
    (``date``) serve ``_sort`` only, where unbounded ends are stored as 0001-01-01 / 9999-12-31 so
    that ongoing periods sort as the latest (``lo`` floored and ``hi`` ceiled to the millisecond).

Prefixes (search.html#prefix), with S = search range, T = stored range, each an ES ``range``
query on ``range`` with a ``relation``:

    ========  ==========================================  ==================================
    prefix    FHIR meaning                                ES
    ========  ==========================================  ==================================
    eq        S contains T                                within [S.lo, S.hi)
    ne        not (S contains T)                          intersects (<S.lo) OR (>=S.hi)
    gt        T intersects (S.hi, +inf)                   intersects >= S.hi
    lt        T intersects (-inf, S.lo)                   intersects < S.lo
    ge        gt OR eq                                    gt OR eq
    le        lt OR eq                                    lt OR eq
    sa        T starts after S ends                       within >= S.hi
    eb        T ends before S starts                      within < S.lo
    ap        T intersects S widened by 10 % of |now-S|   intersects [S.lo-g, S.hi+g)
    ========  ==========================================  ==================================

``ne`` is written as "T sticks out of S" so that, like every other prefix, it holds when
*some* value of a multi-valued parameter satisfies it, and never matches resources without a
value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fhir_common.types import EsQuery
from search.errors import SearchError
from search.params.base import (
    FhirValue,
    Fields,
    IndexContext,
    QueryContext,
    any_of,
    check_modifier,
    field_name,
    match_nothing,
)
from search.registry import SearchParameter

MODIFIERS: frozenset[str] = frozenset()


def modifiers(param: SearchParameter) -> tuple[str, ...]:
    """The modifiers ``compile_query`` accepts on ``param`` (listed by the CapabilityStatement)."""
    return tuple(sorted(MODIFIERS))
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_SPACE_OFFSET = re.compile(r" (\d{2}:\d{2})$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

SORT_MIN = "0001-01-01T00:00:00.000Z"
SORT_MAX = "9999-12-31T23:59:59.999Z"


@dataclass(frozen=True)
class DateRange:
    """Half-open UTC range ``[lo, hi)``; ``None`` means unbounded on that side."""

    lo: datetime | None
    hi: datetime | None


def _add(dt: datetime | None, delta: timedelta) -> datetime | None:
    if dt is None:
        return None
    try:
        return dt + delta
    except OverflowError:
        return None


def _next_month(y: int, m: int) -> datetime | None:
    if m == 12:
        return datetime(y + 1, 1, 1, tzinfo=UTC) if y < 9999 else None
    return datetime(y, m + 1, 1, tzinfo=UTC)


def parse_date_range(text: str) -> DateRange:
    """The implicit range of a FHIR date/dateTime/instant; ``ValueError`` if malformed."""
    m = _DATE.match(text)
    if not m:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    y = int(m["y"])
    if m["m"] is None:
        year_start = datetime(y, 1, 1, tzinfo=UTC)
        return DateRange(year_start, datetime(y + 1, 1, 1, tzinfo=UTC) if y < 9999 else None)
    month = int(m["m"])
    if m["d"] is None:
        return DateRange(datetime(y, month, 1, tzinfo=UTC), _next_month(y, month))
    day = datetime(y, month, int(m["d"]), tzinfo=UTC)
    if m["H"] is None:
        return DateRange(day, _add(day, timedelta(days=1)))
    frac = m["f"] or ""
    if m["S"] is None:
        width = timedelta(minutes=1)
    elif not frac:
        width = timedelta(seconds=1)
    else:
        width = timedelta(microseconds=10 ** max(0, 6 - len(frac)))
    local = datetime(y, month, day.day, int(m["H"]), int(m["M"]), int(m["S"] or 0), int(frac[:6].ljust(6, "0")))
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = -1 if m["tz"][0] == "-" else 1
        hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
        if hours > 14 or minutes > 59:
            raise ValueError(f"invalid time zone offset in {text!r}")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    lo = _utc(local, tz)
    end = _add(local, width)
    hi = None if end is None else _utc(end, tz)
    # Beyond datetime's range after the shift to UTC (year 1 / 9999 edges): clamp, keeping lo < hi.
    if lo is None and local.year == 9999:
        return DateRange(datetime.max.replace(tzinfo=UTC), None)
    if hi is None and end is not None and end.year == 1:
        return DateRange(None, datetime.min.replace(tzinfo=UTC))
    return DateRange(lo, hi)


def _utc(naive: datetime, tz: timezone) -> datetime | None:
    try:
        return naive.replace(tzinfo=tz).astimezone(UTC)
    except OverflowError:
        return None


def es_date(dt: datetime, *, ceil: bool = False) -> str:
    """UTC ISO string at millisecond precision (``ceil`` rounds up, for exclusive upper bounds)."""
    if ceil and dt.microsecond % 1000:
        bumped = _add(dt, timedelta(microseconds=1000 - dt.microsecond % 1000))
        if bumped is None:
            return SORT_MAX
        dt = bumped
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
        f".{dt.microsecond // 1000:03d}Z"
    )


def micros(dt: datetime) -> int:
    """Microseconds since 1970-01-01T00:00Z: the exact bounds of the ``long_range`` search field."""
    return (dt - _EPOCH) // _MICROSECOND


def mapping(param: SearchParameter) -> dict[str, Any]:
    return {"range": {"type": "long_range"}, "lo": {"type": "date"}, "hi": {"type": "date"}}


def ranges_of(value: FhirValue) -> list[DateRange]:
    """Ranges of one extracted value (date, dateTime, instant, Period, Timing); ``ValueError`` if bad."""
    data = value.data
    if isinstance(data, str):
        if value.type in ("string", "markdown"):
            raise ValueError("free-text string, not a date")
        return [parse_date_range(data)]
    if not isinstance(data, dict):
        raise ValueError(f"unsupported value type {value.type}")
    if value.type == "Timing" or "event" in data or "repeat" in data:
        out = [parse_date_range(e) for e in data.get("event", []) if isinstance(e, str)]
        bounds = (data.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            out.extend(ranges_of(FhirValue("Period", bounds)))
        return out
    start, end = data.get("start"), data.get("end")
    if start is None and end is None:
        return []
    lo = parse_date_range(start).lo if isinstance(start, str) else None
    hi = parse_date_range(end).hi if isinstance(end, str) else None
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"Period start {start} is after its end {end}")
    return [DateRange(lo, hi)]


def index(param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields:
    fields: Fields = {}
    for value in values:
        try:
            ranges = ranges_of(value)
        except ValueError as e:
            ctx.skip(param, value.data, str(e))
            continue
        for r in ranges:
            es_range: dict[str, int] = {}
            if r.lo is not None:
                es_range["gte"] = micros(r.lo)
            if r.hi is not None:
                es_range["lt"] = micros(r.hi)
            if es_range not in fields.setdefault("range", []):
                fields["range"].append(es_range)
                fields.setdefault("lo", []).append(es_date(r.lo) if r.lo is not None else SORT_MIN)
                fields.setdefault("hi", []).append(es_date(r.hi, ceil=True) if r.hi is not None else SORT_MAX)
    return fields


def split_prefix(raw: str) -> tuple[str, str]:
    """``ge2020`` -> (``ge``, ``2020``); no prefix means ``eq``."""
    if raw[:2] in PREFIXES:
        return raw[:2], raw[2:]
    return "eq", raw


def parse_search_value(value: str, name: str) -> DateRange:
    text = _SPACE_OFFSET.sub(r"+\1", value)
    try:
        return parse_date_range(text)
    except ValueError as e:
        expected = "YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|±hh:mm]]]]"
        raise SearchError(f"invalid date value {value!r}: expected {expected}", name) from e


def _range(f: str, relation: str, gte: datetime | None = None, lt: datetime | None = None) -> EsQuery:
    body: dict[str, Any] = {}
    if gte is not None:
        body["gte"] = micros(gte)
    if lt is not None:
        body["lt"] = micros(lt)
    body["relation"] = relation
    return {"range": {f: body}}


def _above(f: str, s: DateRange, relation: str) -> EsQuery:
    return match_nothing() if s.hi is None else _range(f, relation, gte=s.hi)


def _below(f: str, s: DateRange, relation: str) -> EsQuery:
    return match_nothing() if s.lo is None else _range(f, relation, lt=s.lo)


def clause_for(f: str, prefix: str, s: DateRange, now: datetime) -> EsQuery:
    """The ES clause for one prefixed search range on date_range field ``f`` (see module doc)."""
    eq = _range(f, "within", gte=s.lo, lt=s.hi)
    if prefix == "eq":
        return eq
    if prefix == "ne":
        return any_of([c for c in (_below(f, s, "intersects"), _above(f, s, "intersects"))])
    if prefix == "gt":
        return _above(f, s, "intersects")
    if prefix == "lt":
        return _below(f, s, "intersects")
    if prefix == "ge":
        return any_of([_above(f, s, "intersects"), eq])
    if prefix == "le":
        return any_of([_below(f, s, "intersects"), eq])
    if prefix == "sa":
        return _above(f, s, "within")
    if prefix == "eb":
        return _below(f, s, "within")
    # ap: overlap with the search range widened by 10 % of its distance to now
    gap = abs(now - s.lo) / 10 if s.lo is not None else timedelta(0)
    lo = None if s.lo is None else _add(s.lo, -gap)
    hi = None if s.hi is None else _add(s.hi, gap)
    return _range(f, "intersects", gte=lo, lt=hi)


def compile_query(
    param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
) -> EsQuery:
    check_modifier(MODIFIERS, param, modifier, name)
    clauses = []
    for raw in values:
        prefix, text = split_prefix(raw)
        if param.comparator and prefix not in param.comparator and raw[:2] in PREFIXES:
            raise SearchError(f"prefix {prefix} is not allowed on {param.code}", name)
        clauses.append(clause_for(field_name(param, "range"), prefix, parse_search_value(text, name), ctx.now))
    return any_of(clauses)


def sort(param: SearchParameter, descending: bool) -> list[dict[str, Any]]:
    if descending:
        return [{field_name(param, "hi"): {"order": "desc", "mode": "max", "missing": "_last"}}]
    return [{field_name(param, "lo"): {"order": "asc", "mode": "min", "missing": "_last"}}]
