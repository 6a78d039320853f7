"""Systematic mutations of every example in scope (R4 spec + the valid French examples), generated from the
compiled definitions: each mutation must produce an error at exactly the mutated element's FHIRPath."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiles.model import definitions

from .conftest import SHARED, error_paths, load
from .test_base_r4 import EXAMPLES
from .test_french import VALID, example

STRINGY = ("string", "code", "uri", "url", "canonical", "id", "markdown", "date", "dateTime", "instant", "oid")


def _examples() -> list[tuple[str, dict[str, Any]]]:
    out = [(p.name, load(p)) for p in EXAMPLES]
    out += [(name, example(name)) for name in sorted(VALID)]
    return out


def mutations(r: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(what, mutated resource, expected FHIRPath) for the root elements of ``r``."""
    rt = r["resourceType"]
    model = definitions().models[rt]
    m = copy.deepcopy(r)
    m["zzUnknown"] = True
    yield "unknown element", m, f"{rt}.zzUnknown"
    for node in model.required:
        if node.name in r:
            m = copy.deepcopy(r)
            del m[node.name]
            yield f"required {node.name} removed", m, f"{rt}.{node.name}"
    for key, value in r.items():
        entry = model.keys.get(key)
        if entry is None:
            continue
        node, t = entry
        where = f"{rt}.{node.name}.ofType({t})" if node.choice else f"{rt}.{node.name}"
        if t in STRINGY and isinstance(value, str):
            m = copy.deepcopy(r)
            m[key] = ""
            yield f"empty {key}", m, where
            m = copy.deepcopy(r)
            m[key] = 42
            yield f"wrong type for {key}", m, where
            if t == "code" and node.binding is not None and node.binding.strength == "required" and \
                    node.binding.codes is not None:
                m = copy.deepcopy(r)
                m[key] = "not-a-code"
                yield f"wrong code for {key}", m, where
        elif t == "boolean" and isinstance(value, bool):
            m = copy.deepcopy(r)
            m[key] = "true"
            yield f"string for boolean {key}", m, where
        elif isinstance(value, dict) and node.max == 1:
            m = copy.deepcopy(r)
            m[key] = {}
            yield f"empty object {key}", m, where
        elif isinstance(value, list) and value:
            m = copy.deepcopy(r)
            m[key] = []
            yield f"empty array {key}", m, where


PER_EXAMPLE = 8  # keeps the suite fast; the kinds come first, so every kind is exercised on every example


def _cases() -> list[tuple[str, dict[str, Any], str]]:
    out = []
    for name, r in _examples():
        seen_kinds: set[str] = set()
        picked = []
        for what, m, where in mutations(r):
            kind = what.split(" ")[0]
            if kind not in seen_kinds or len(picked) < PER_EXAMPLE:
                seen_kinds.add(kind)
                picked.append((f"{name}: {what}", m, where))
        out.extend(picked)
    return out


CASES = _cases()


def test_enough_mutations() -> None:
    assert len(CASES) > 600


@pytest.mark.parametrize(("case", "mutated", "expression"), CASES, ids=[c[0] for c in CASES])
def test_systematic_mutation(case: str, mutated: dict[str, Any], expression: str) -> None:
    assert expression in error_paths(mutated), case


def test_paths_are_relative_to_the_repository() -> None:
    assert Path(SHARED).name == "data"
