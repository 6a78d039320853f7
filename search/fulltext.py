"""``_text`` (narrative) and ``_content`` (whole resource) full-text search.

Both are top-level ``text`` fields analysed by Elasticsearch's built-in ``standard`` analyzer
(the managed node has no ``asciifolding``), fed with :func:`search.normalize.normalize_string`
output so that matching is case- and accent-insensitive like string search.  A query matches
when every word of the value occurs (``match`` with ``operator: and``); comma-separated values
are ORed as for any parameter.  ``_content`` takes every string of the resource except
base64 ``data`` and the narrative markup itself (the narrative's text is included).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from typing import Any

from fhir_common.types import EsQuery, Resource
from search.errors import SearchError
from search.normalize import normalize_string
from search.params.base import any_of, unescape

FIELDS = {"_text": "narrative", "_content": "content"}
MAPPING: dict[str, Any] = {"type": "text", "analyzer": "standard"}
#: Characters kept per document and field (bounds the index size of huge resources).
MAX_CHARS = 32_000

_TAG = re.compile(r"<[^>]+>")
_SKIP_KEYS = frozenset({"data", "div", "resourceType", "id", "url", "system", "reference", "fullUrl"})


def narrative_text(resource: Resource) -> str:
    """The human-readable text of ``Resource.text.div`` (markup removed, entities decoded)."""
    div = (resource.get("text") or {}).get("div")
    return html.unescape(_TAG.sub(" ", div)) if isinstance(div, str) else ""


def _strings(node: Any, key: str = "") -> Iterator[str]:
    if isinstance(node, str):
        if key not in _SKIP_KEYS:
            yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)


def fields(resource: Resource) -> dict[str, str]:
    """``{"narrative": ..., "content": ...}`` (empty entries left out) for the index document."""
    narrative = normalize_string(narrative_text(resource))[:MAX_CHARS]
    content = normalize_string(" ".join([narrative, *_strings(resource)]))[:MAX_CHARS]
    return {k: v for k, v in (("narrative", narrative), ("content", content)) if v}


def compile_query(code: str, modifier: str | None, values: Sequence[str], name: str) -> EsQuery:
    if modifier is not None:
        raise SearchError(f"modifier :{modifier} is not supported on {code}", name)
    clauses = []
    for raw in values:
        text = normalize_string(unescape(raw))
        if not text:
            raise SearchError(f"empty {code} value", name)
        clauses.append({"match": {FIELDS[code]: {"query": text, "operator": "and"}}})
    return any_of(clauses)
