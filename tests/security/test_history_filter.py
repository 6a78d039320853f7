"""Filtered history paging: walking every page yields exactly the visible versions, newest first, once each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.interactions import history


@dataclass
class _Version:
    seq: int


class _Store:
    def __init__(self, n: int) -> None:
        self.versions = [_Version(s) for s in range(n, 0, -1)]  # newest first, as the store answers
        self.read = 0

    def history(self, type_: Any, id_: Any, *, before_seq: int | None, since_us: Any, count: int) -> list[_Version]:
        page = [v for v in self.versions if before_seq is None or v.seq < before_seq][:count]
        self.read += len(page)
        return page


@dataclass
class _Ctx:
    store: _Store


@settings(max_examples=150, deadline=None)
@given(st.lists(st.booleans(), max_size=120), st.integers(min_value=1, max_value=12),
       st.integers(min_value=1, max_value=40))
def test_pages_hold_every_visible_version_once(shown: list[bool], count: int, budget: int) -> None:
    ctx = _Ctx(_Store(len(shown)))
    visible = {i + 1 for i, s in enumerate(shown) if s}
    old_budget = history.SCAN_BUDGET
    history.SCAN_BUDGET = budget
    try:
        got: list[int] = []
        before: int | None = None
        for _ in range(len(shown) + 2):  # every page advances: never more pages than versions
            page, before = history._page(ctx, None, None, before, None, count,  # type: ignore[arg-type]
                                         lambda batch: (v.seq in visible for v in batch))
            assert len(page) <= count
            got += [v.seq for v in page]
            if before is None:
                break
        assert before is None
        assert got == sorted(visible, reverse=True)
    finally:
        history.SCAN_BUDGET = old_budget


def test_without_a_filter_pages_are_the_plain_log() -> None:
    ctx = _Ctx(_Store(7))
    page, before = history._page(ctx, None, None, None, None, 3, None)  # type: ignore[arg-type]
    assert [v.seq for v in page] == [7, 6, 5] and before == 5
    assert ctx.store.read == 4  # one look-ahead row, as before filtering existed
