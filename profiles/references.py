"""Conditional references (``Patient?identifier=s|v``) outside the Bundles that resolve them.

A conditional reference is a search the server runs to find the target; only a transaction or batch Bundle does
that, before it validates and writes its entries (http.html#trules; inside any other Bundle the HL7 validator
rejects it too: Reference_REF_Format2). Written on its own, the resource would be stored with a query for a
reference. Kept out of the base R4 engine: it is a policy of the caller (``profiles.validate``'s
``conditional_references``), since bulk exports (Synthea ndjson) carry such references their exporter could not
resolve.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_common.outcome import Issue

_CONDITIONAL = re.compile(r"[A-Z][A-Za-z]+\?")  # [type]?[search parameters]
RESOLVING_BUNDLES = frozenset({"transaction", "batch"})


def conditional_references(resource: Any) -> list[Issue]:
    """An error for each conditional reference of ``resource``, except inside transaction and batch Bundles."""
    issues: list[Issue] = []
    if not isinstance(resource, dict):
        return issues
    rt = resource.get("resourceType")
    stack: list[tuple[Any, str]] = [(resource, rt if isinstance(rt, str) else "Resource")]
    while stack:  # iterative: the depth of a body is bounded by the parser, not by this walk
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
            continue
        if not isinstance(node, dict):
            continue
        if node.get("resourceType") == "Bundle" and node.get("type") in RESOLVING_BUNDLES:
            continue
        ref = node.get("reference")
        if isinstance(ref, str) and _CONDITIONAL.match(ref):
            issues.append(Issue("error", "invalid", f"The conditional reference '{ref}' is only resolved in a "
                                                    "transaction or batch Bundle (http.html#trules); written on "
                                                    "its own, a reference must name its target (Type/id)",
                                (f"{path}.reference",)))
        stack.extend((v, f"{path}.{k}") for k, v in reversed(node.items()) if isinstance(v, dict | list))
    return issues
