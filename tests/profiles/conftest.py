"""Fixtures of the validation tests: the shared data directory and a validator (no server, no ES needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.errors import Issue
from profiles import validate

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def errors(resource: Any, **kw: Any) -> list[Issue]:
    return [i for i in validate(resource, **kw) if i.severity in ("error", "fatal")]


def error_paths(resource: Any, **kw: Any) -> set[str]:
    return {e for i in errors(resource, **kw) for e in i.expression}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared test data not found at {SHARED}")
    return SHARED
