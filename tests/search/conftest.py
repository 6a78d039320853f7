from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from search.extract import IndexDocumentBuilder
from search.registry import SearchParameterRegistry

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared beside the clone
BASE = "http://localhost:8080/fhir"


def load(relative: str) -> dict[str, Any]:
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def registry() -> SearchParameterRegistry:
    return SearchParameterRegistry.load_default()


@pytest.fixture(scope="session")
def builder(registry: SearchParameterRegistry) -> IndexDocumentBuilder:
    return IndexDocumentBuilder(registry, base_url=BASE)
