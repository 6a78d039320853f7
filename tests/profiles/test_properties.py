"""Property tests: primitive parsing agrees with the standard library, and the engine never raises."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from profiles import validate
from profiles.french import nir_key_ok
from profiles.primitives import check

from .conftest import SHARED


@given(st.dates(min_value=dt.date(1, 1, 1)))
def test_every_calendar_date_is_a_valid_date(d: dt.date) -> None:
    text = d.isoformat()
    if d.year >= 1:
        assert check("date", text) is None
        assert check("dateTime", text) is None
        assert check("date", text[:7]) is None


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), timezones=st.timezones()))
def test_zoned_datetimes_are_valid_instants(d: dt.datetime) -> None:
    text = d.isoformat(timespec="seconds")
    if d.utcoffset() is not None and abs(d.utcoffset() or dt.timedelta()) <= dt.timedelta(hours=14) and \
            (d.utcoffset() or dt.timedelta()).seconds % 60 == 0:
        assert check("instant", text) is None
        assert check("dateTime", text) is None
    assert check("instant", d.replace(tzinfo=None).isoformat(timespec="seconds")) is not None


@given(st.integers(min_value=1, max_value=12), st.integers(min_value=29, max_value=31))
def test_impossible_days_are_rejected(month: int, day: int) -> None:
    try:
        dt.date(2021, month, day)
        valid = True
    except ValueError:
        valid = False
    assert (check("date", f"2021-{month:02d}-{day:02d}") is None) == valid


@given(st.text())
def test_code_never_has_outer_or_double_whitespace(text: str) -> None:
    ok = check("code", text) is None
    if ok:
        assert text == text.strip() and "  " not in text and text


@given(st.integers())
def test_integer_ranges(n: int) -> None:
    assert (check("integer", n) is None) == (-(2**31) <= n <= 2**31 - 1)
    assert (check("positiveInt", n) is None) == (1 <= n <= 2**31 - 1)
    assert (check("unsignedInt", n) is None) == (0 <= n <= 2**31 - 1)


@given(st.integers(min_value=1_000_000_000_000, max_value=2_999_999_999_999))
def test_nir_key(body: int) -> None:
    key = 97 - body % 97
    assert nir_key_ok(f"{body}{key:02d}")
    assert not nir_key_ok(f"{body}{(key % 97) + 1:02d}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "name", "family", "given", "extension", "url", "valueString", "coding", "system",
                         "code", "reference", "contained", "resourceType", "_birthDate", "birthDate", "meta",
                         "profile", "text", "div", "status", "entry", "resource", "identifier", "value", "x"]),
        children, max_size=6),
    max_leaves=30)

_PATIENT = json.loads((SHARED / "r4-examples" / "Patient-example.json").read_text())


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["Patient", "Bundle", "DocumentReference", "Immunization", "List", "Binary", "Nope", 3]),
       st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_engine_never_raises_on_arbitrary_json(rt: Any, body: dict[str, Any]) -> None:
    validate({"resourceType": rt, **body})


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(_PATIENT)), json_values)
def test_engine_never_raises_on_mutated_example(key: str, value: Any) -> None:
    validate({**_PATIENT, key: value})


@given(json_values)
def test_engine_never_raises_on_any_json_value(value: Any) -> None:
    validate(value)
