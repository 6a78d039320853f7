"""Elasticsearch index mappings and settings, derived from the registry (one index per type).

The mapping is ``dynamic: strict`` so a document that does not match the layout produced by
``search.extract`` is rejected instead of silently growing the mapping; ``_meta.fingerprint``
identifies the parameter set + extraction version the index was built with (compare it with
``registry.fingerprint(type)`` at startup: a difference means the index must be rebuilt).
"""

from __future__ import annotations

from typing import Any

from search import fulltext
from search.extract import TOP_LEVEL
from search.params import handler_for
from search.registry import EXTRACTION_VERSION, FULLTEXT_CODES, SearchParameterRegistry


def index_mapping(registry: SearchParameterRegistry, resource_type: str) -> dict[str, Any]:
    """The ``mappings`` body of the index holding ``resource_type``."""
    sp: dict[str, Any] = {}
    for param in registry.for_type(resource_type).values():
        handler = handler_for(param.type)
        if not param.supported or handler is None or param.code in TOP_LEVEL or param.code in FULLTEXT_CODES:
            continue
        sp[param.code] = {"properties": handler.mapping(param)}
    return {
        "dynamic": "strict",
        "_meta": {
            "resource_type": resource_type,
            "fingerprint": registry.fingerprint(resource_type),
            "extraction_version": EXTRACTION_VERSION,
        },
        "properties": {
            "resource_type": {"type": "keyword"},
            "id": {"type": "keyword"},
            "fingerprint": {"type": "keyword"},
            "meta": {"properties": {"versionId": {"type": "long"}, "lastUpdated": {"type": "date"}}},
            "present": {"type": "keyword"},
            "narrative": fulltext.MAPPING,
            "content": fulltext.MAPPING,
            "sp": {"properties": sp},
        },
    }


def index_settings(shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    """The ``settings`` body: no custom analysis is needed (strings are normalised in Python)."""
    return {"index": {"number_of_shards": shards, "number_of_replicas": replicas}}
