"""Shape limits the interactions enforce themselves, whatever the transport: nesting depth of a resource,
and the cost of a search's parameters (count, chain depth, ``_has`` nesting). The HTTP-only limits (URL
length, Bundle size, body size) are in :mod:`fhir_server.api.limits`; the values are settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server.errors import FHIRError
from fhir_server.settings import Settings

#: JSON nesting depth of a resource: past it a body is refused (400) and a patch result too (422)
MAX_DEPTH = 64


def depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` levels (iteratively: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def chain_depth(name: str) -> int:
    """Links of a chained parameter name: ``subject:Patient.organization.name`` has 2."""
    return name.count(".")


def has_depth(name: str) -> int:
    """Nesting of reverse chains: ``_has:A:p:_has:B:q:code`` has 2."""
    return name.count("_has:")


def check_search_params(params: Sequence[tuple[str, str]], settings: Settings) -> None:
    """400 ``too-costly`` for a search whose parameters exceed the count, chain or ``_has`` limits."""
    if len(params) > settings.max_query_params:
        raise FHIRError(400, "too-costly", f"More than {settings.max_query_params} search parameters")
    for name, _ in params:
        if chain_depth(name) > settings.max_chain_depth:
            raise FHIRError(400, "too-costly", f"Chain {name!r} is longer than {settings.max_chain_depth} links",
                            (name,))
        if has_depth(name) > settings.max_has_depth:
            raise FHIRError(400, "too-costly", f"_has nested deeper than {settings.max_has_depth} levels in "
                            f"{name!r}", (name,))
