"""``search.summary.MANDATORY`` against the vendored R4 StructureDefinitions: a view (``_summary``,
``_elements``) never drops a top-level element the resource's definition requires."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_server.registry import RESOURCE_TYPES
from search.summary import MANDATORY

R4 = Path(__file__).resolve().parents[2] / "profiles" / "definitions" / "r4-core.json"


def _required_top_level(type_: str) -> frozenset[str]:
    elements = orjson.loads(R4.read_bytes())["types"][type_]["e"]
    return frozenset(e["p"].split(".")[1].removesuffix("[x]") for e in elements
                     if e["p"].count(".") == 1 and e.get("n", 0) >= 1)


@pytest.mark.parametrize("type_", sorted(t.name for t in RESOURCE_TYPES.values() if t.searchable))
def test_mandatory_elements_match_the_definitions(type_: str) -> None:
    assert MANDATORY.get(type_, frozenset()) == _required_top_level(type_)
