from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from search.errors import SearchError
from search.params.base import FhirValue
from search.params.date import (
    DateRange,
    clause_for,
    es_date,
    micros,
    parse_date_range,
    parse_search_value,
    ranges_of,
)
from tests.search.es_sim import matches
from tests.search.test_extract import us

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def r(text: str) -> tuple[str | None, str | None]:
    dr = parse_date_range(text)
    return (es_date(dr.lo) if dr.lo else None, es_date(dr.hi, ceil=True) if dr.hi else None)


def test_precisions() -> None:
    assert r("2020") == ("2020-01-01T00:00:00.000Z", "2021-01-01T00:00:00.000Z")
    assert r("2020-02") == ("2020-02-01T00:00:00.000Z", "2020-03-01T00:00:00.000Z")
    assert r("2020-12") == ("2020-12-01T00:00:00.000Z", "2021-01-01T00:00:00.000Z")
    assert r("2020-02-28") == ("2020-02-28T00:00:00.000Z", "2020-02-29T00:00:00.000Z")
    assert r("2020-03-04T10:20") == ("2020-03-04T10:20:00.000Z", "2020-03-04T10:21:00.000Z")
    assert r("2020-03-04T10:20:30Z") == ("2020-03-04T10:20:30.000Z", "2020-03-04T10:20:31.000Z")
    assert r("2020-03-04T10:20:30.5Z") == ("2020-03-04T10:20:30.500Z", "2020-03-04T10:20:30.600Z")
    assert r("2020-03-04T10:20:30.1234Z") == ("2020-03-04T10:20:30.123Z", "2020-03-04T10:20:30.124Z")


def test_time_zones_converted_and_default_utc() -> None:
    assert r("2020-01-01T00:30:00+01:00") == ("2019-12-31T23:30:00.000Z", "2019-12-31T23:30:01.000Z")
    assert r("2020-01-01T00:30:00-05:30") == ("2020-01-01T06:00:00.000Z", "2020-01-01T06:00:01.000Z")
    assert r("2020-01-01T00:30:00") == ("2020-01-01T00:30:00.000Z", "2020-01-01T00:30:01.000Z")
    # DST is irrelevant: offsets are explicit, naive values are UTC
    assert r("2021-03-28T02:30:00") == ("2021-03-28T02:30:00.000Z", "2021-03-28T02:30:01.000Z")


def test_edges_of_representable_range() -> None:
    assert parse_date_range("9999").hi is None
    assert parse_date_range("9999-12-31").hi is None
    assert parse_date_range("0001-01-01T00:00+01:00").lo is None


@pytest.mark.parametrize(
    "bad", ["", "20", "2020-13", "2020-02-30", "2020-01-01T25:00Z", "2020-01-01T10:00+15:00", "2020/01/01", "x"]
)
def test_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_date_range(bad)
    with pytest.raises(SearchError):
        parse_search_value(bad, "date")


def test_search_value_plus_decoded_as_space() -> None:
    assert parse_search_value("2020-01-01T10:00:00 01:00", "date") == parse_date_range("2020-01-01T10:00:00+01:00")


def test_period_and_timing() -> None:
    (p,) = ranges_of(FhirValue("Period", {"start": "2020-01-01", "end": "2020-01"}))
    assert p == DateRange(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC))
    (ongoing,) = ranges_of(FhirValue("Period", {"start": "2020"}))
    assert ongoing.hi is None
    (until,) = ranges_of(FhirValue("Period", {"end": "2020"}))
    assert until.lo is None
    assert ranges_of(FhirValue("Period", {})) == []
    with pytest.raises(ValueError):
        ranges_of(FhirValue("Period", {"start": "2021", "end": "2020"}))
    with pytest.raises(ValueError):
        ranges_of(FhirValue("string", "last spring"))
    timing = ranges_of(FhirValue("Timing", {"event": ["2020-01-01"], "repeat": {"boundsPeriod": {"start": "2021"}}}))
    assert [t.lo for t in timing] == [datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)]


# --- property tests on the parser -------------------------------------------------------------

dates = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
offsets = st.one_of(st.none(), st.just("Z"), st.integers(-14 * 60, 14 * 60).map(lambda m: m - m % 15))


def _tz(offset: int | str | None) -> str:
    if offset is None or isinstance(offset, str):
        return offset or ""
    sign = "-" if offset < 0 else "+"
    return f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


@st.composite
def fhir_dates(draw: Any) -> str:
    dt = draw(dates)
    precision = draw(st.sampled_from(["Y", "M", "D", "m", "s", "f"]))
    if precision in "YMD":
        return {"Y": f"{dt.year:04d}", "M": f"{dt.year:04d}-{dt.month:02d}", "D": dt.date().isoformat()}[precision]
    time = {"m": "%H:%M", "s": "%H:%M:%S", "f": "%H:%M:%S"}[precision]
    frac = "." + draw(st.text("0123456789", min_size=1, max_size=9)) if precision == "f" else ""
    return f"{dt.date().isoformat()}T{dt.strftime(time)}{frac}{_tz(draw(offsets))}"


@given(fhir_dates())
def test_range_is_non_empty(text: str) -> None:
    dr = parse_date_range(text)
    assert dr.lo is not None
    if dr.hi is None:  # only when the range runs past 9999-12-31T23:59:59.999999Z
        assert text.startswith("9999")
        return
    assert dr.lo < dr.hi
    assert es_date(dr.lo) < es_date(dr.hi, ceil=True)


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9998, 12, 31)),
    st.sampled_from(["-%m-%dT%H:%M:%S", "-%m-%dT%H:%M", "-%m-%d", "-%m"]),
)
def test_precisions_nest(dt: datetime, fmt: str) -> None:
    """Dropping precision (no time zone) widens the range: 2020-03-04 lies inside 2020-03 and 2020."""
    text = f"{dt.year:04d}" + dt.strftime(fmt)
    inner = parse_date_range(text)
    for coarse in {text[:4], text[:7], text[:10], text}:
        outer = parse_date_range(coarse)
        assert outer.lo is not None and outer.hi is not None and inner.lo is not None and inner.hi is not None
        assert outer.lo <= inner.lo < inner.hi <= outer.hi


@given(dates)
def test_round_trip_to_seconds(dt: datetime) -> None:
    text = f"{dt.year:04d}" + dt.replace(microsecond=0).isoformat()[4:] + "Z"
    dr = parse_date_range(text)
    assert dr.lo == dt.replace(microsecond=0, tzinfo=UTC)
    assert dr.hi == dr.lo + timedelta(seconds=1)


# --- prefix semantics: compiled ES clause vs the spec, on stored ranges -----------------------


def _spec(prefix: str, s: DateRange, t: DateRange) -> bool:
    """search.html#prefix, on half-open ranges, with None = unbounded (stored values only)."""
    assert s.lo is not None and s.hi is not None
    t_lo = t.lo or datetime.min.replace(tzinfo=UTC)
    t_hi = t.hi or datetime.max.replace(tzinfo=UTC)
    eq = t.lo is not None and t.hi is not None and s.lo <= t_lo and t_hi <= s.hi
    gt = t.hi is None or t_hi > s.hi
    lt = t.lo is None or t_lo < s.lo
    return {
        "eq": eq,
        "ne": not eq,
        "gt": gt,
        "lt": lt,
        "ge": gt or eq,
        "le": lt or eq,
        "sa": t.lo is not None and t_lo >= s.hi,
        "eb": t.hi is not None and t_hi <= s.lo,
    }[prefix]


def _doc(t: DateRange) -> dict[str, Any]:
    rng: dict[str, int] = {}
    if t.lo is not None:
        rng["gte"] = micros(t.lo)
    if t.hi is not None:
        rng["lt"] = micros(t.hi)
    return {"sp": {"date": {"range": [rng]}}}


coarse_dates = st.builds(
    lambda dt, p: dt.strftime({"Y": "%Y", "M": "%Y-%m", "D": "%Y-%m-%d", "s": "%Y-%m-%dT%H:%M:%SZ"}[p]),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 12, 31)),
    st.sampled_from("YMDs"),
)


@st.composite
def stored(draw: Any) -> DateRange:
    kind = draw(st.sampled_from(["point", "period", "open-start", "open-end"]))
    a, b = parse_date_range(draw(coarse_dates)), parse_date_range(draw(coarse_dates))
    assert a.lo is not None and a.hi is not None and b.lo is not None and b.hi is not None
    if kind == "point":
        return a
    lo, hi = min(a.lo, b.lo), max(a.hi, b.hi)
    return DateRange(None if kind == "open-start" else lo, None if kind == "open-end" else hi)


@given(st.sampled_from(["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]), coarse_dates, stored())
def test_prefix_semantics(prefix: str, search: str, target: DateRange) -> None:
    s = parse_date_range(search)
    assert matches(_doc(target), clause_for("sp.date.range", prefix, s, NOW)) == _spec(prefix, s, target)


@pytest.mark.parametrize(
    ("prefix", "search", "stored", "expected"),
    [
        ("ge", "2020", "2020-06-01", True),  # the HAPI-ES regression: ge = gt OR S contains T
        ("le", "2020", "2020-06-01", True),
        ("eq", "2020", "2020-06-01", True),
        ("eq", "2020-06-01", "2020", False),
        ("gt", "2020", "2020-06-01", False),
        ("ne", "2020-06", "2020-06-15", False),
        ("ne", "2020-06", "2020-07-01", True),
        ("eq", "2018-10-29T12:00:00Z", {"start": "2018-10-29", "end": "2018-10-30"}, False),
        ("gt", "2030", {"start": "2020"}, True),  # an ongoing period is after any later date
        ("sa", "2030", {"start": "2020"}, False),
        ("eb", "2030", {"start": "2020"}, False),
        ("lt", "2000", {"end": "2020"}, True),
        ("ap", "2025-05", "2025-05-20", True),
        ("ap", "2025-05", "2024-01-01", False),
        ("ap", "2015", "2014-02-01", True),  # 10 % of ten years
    ],
)
def test_prefix_cases(prefix: str, search: str, stored: Any, expected: bool) -> None:
    value = FhirValue("Period", stored) if isinstance(stored, dict) else FhirValue("dateTime", stored)
    (t,) = ranges_of(value)
    clause = clause_for("sp.date.range", prefix, parse_date_range(search), NOW)
    assert matches(_doc(t), clause) is expected


def test_clause_shapes() -> None:
    s = parse_date_range("2020")
    assert clause_for("f", "eq", s, NOW) == {
        "range": {"f": {"gte": us("2020-01-01T00:00:00Z"), "lt": us("2021-01-01T00:00:00Z"), "relation": "within"}}
    }
    assert clause_for("f", "sa", s, NOW) == {"range": {"f": {"gte": us("2021-01-01T00:00Z"), "relation": "within"}}}
    assert clause_for("f", "lt", s, NOW) == {
        "range": {"f": {"lt": us("2020-01-01T00:00:00.000Z"), "relation": "intersects"}}
    }
