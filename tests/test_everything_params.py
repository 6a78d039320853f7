"""Property tests of the $everything parameter readers: anything a client sends is a value or a 400, never a 500,
and a date parameter never carries a search list, prefix or escape into the searches it builds."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhir_server.errors import FHIRError
from fhir_server.interactions.everything import _date, parameters_of

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=12)


@given(st.text(max_size=40))
def test_a_date_parameter_is_one_date_or_a_400(value: str) -> None:
    try:
        out = _date([("start", value)], "start")
    except FHIRError as err:
        assert err.status == 400 and err.expression == ("start",)
        return
    assert out == value and value[:4].isdigit() and not set(value) & set(",|$\\ ")


@given(st.dictionaries(st.sampled_from(["resourceType", "parameter", "id"]),
                       st.just("Parameters") | st.lists(_json, max_size=4) | _json, max_size=3))
def test_parameters_are_name_value_pairs_or_a_400(body: dict[str, Any]) -> None:
    try:
        out = parameters_of(body)
    except FHIRError as err:
        assert err.status == 400
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out)
