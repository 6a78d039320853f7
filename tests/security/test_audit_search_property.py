"""Property tests of the AuditEvent search parser and its SQL, on a real SQLite audit table.

- any value of any parameter is either a result or a 400 naming the parameter, never another error;
- ``date`` prefixes select exactly the recorded instants search.html says (an instant is a point).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.audit import search as audit_search
from fhir_server.errors import FHIRError
from fhir_server.interactions.paging import derive_key
from fhir_server.storage import open_store
from fhir_server.storage.audit import ENTITY, AuditAppender, AuditRow, audit_id
from search.params.date import parse_date_range

BASE = "http://test/fhir"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A context with what the audit search reads: the store, the base URL and page sizes."""
    url = f"sqlite:///{tmp_path_factory.mktemp('audit-prop') / 'store.sqlite3'}"
    store = open_store(url)
    appender = AuditAppender(url)
    rows = []
    for i, recorded in enumerate(RECORDED):
        id_ = audit_id(_us(recorded), b"prop|%d" % i, 0)
        event = {"resourceType": "AuditEvent", "id": id_, "recorded": recorded.isoformat(), "action": "R",
                 "outcome": "0", "entity": [{"what": {"reference": f"Patient/{i % 3}"}}]}
        rows.append(AuditRow(id_, _us(recorded), "R", "0", "read", orjson.dumps(event),
                             ((ENTITY, f"Patient/{i % 3}"),)))
    appender.append(rows)
    appender.dispose()
    return SimpleNamespace(store=store, base_url=BASE, audit=None, cursor_key=derive_key(b"test key"),
                           settings=SimpleNamespace(default_count=1000, max_count=1000))


def _us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


RECORDED = [datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC),
            datetime(2024, 3, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2024, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC),
            datetime(2023, 12, 31, 23, 0, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)]

names = st.sampled_from([*audit_search.PARAMS, "patient:Patient", "patient:missing", "entity.name", "_count",
                         "_sort", "_total", "_summary", "_cursor", "unknown"])
values = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["Patient/1", "1", "ge2024", "lt2024-03-01T00:00:00Z", "R", "0", "-date", "accurate", "count", "a|b", ","])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.lists(st.tuples(names, values), max_size=4), strict=st.booleans())
def test_any_query_is_a_bundle_or_a_400_naming_its_parameter(ctx: Any, params: list[tuple[str, str]],
                                                             strict: bool) -> None:
    try:
        result = audit_search.search(ctx, params, strict=strict)
    except FHIRError as err:
        assert err.status == 400 and err.expression and err.expression[0] in {n for n, _ in params}
        return
    assert result.body is not None and result.body["resourceType"] == "Bundle"


def _fhir(dt: datetime, precision: int, offset_min: int) -> str:
    """``dt`` written at a FHIR precision (year .. fraction), with a time zone when it has a time."""
    if precision <= 2:
        return dt.strftime(("%Y", "%Y-%m", "%Y-%m-%d")[precision])
    local = dt.astimezone(timezone(timedelta(minutes=offset_min)))
    text = local.strftime(("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f")[precision - 3])
    sign = "+" if offset_min >= 0 else "-"
    return text + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


def _expected(prefix: str, value: str, t: int) -> bool:
    """search.html#prefix for a stored point ``t`` and the search range ``[lo, hi)`` of ``value``."""
    rng = parse_date_range(value)
    lo = None if rng.lo is None else _us(rng.lo)
    hi = None if rng.hi is None else _us(rng.hi)
    after_lo = lo is None or t >= lo
    before_hi = hi is None or t < hi
    return {"eq": after_lo and before_hi, "ne": not (after_lo and before_hi), "gt": not before_hi,
            "sa": not before_hi, "lt": not after_lo, "eb": not after_lo, "ge": after_lo, "le": before_hi}[prefix]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(around=st.sampled_from(RECORDED), shift_us=st.integers(-2 * 86_400_000_000, 2 * 86_400_000_000),
       precision=st.integers(0, 5), offset_min=st.sampled_from([0, 60, -300, 330]),
       prefix=st.sampled_from(["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]))
def test_date_prefixes_select_what_search_html_says(ctx: Any, around: datetime, shift_us: int, precision: int,
                                                    offset_min: int, prefix: str) -> None:
    value = _fhir(around + timedelta(microseconds=shift_us), precision, offset_min)
    result = audit_search.search(ctx, [("date", prefix + value)])
    assert result.body is not None
    found = {orjson.loads(orjson.dumps(e["resource"]))["recorded"] for e in result.body.get("entry", [])}
    want = {r.isoformat() for r in RECORDED if _expected(prefix, value, _us(r))}
    assert found == want, (prefix, value)

