"""Names for the shapes that cross every layer, so a signature says which JSON it means.

They are aliases, not new types: a ``Resource`` is any ``dict[str, Any]`` and mypy treats them as such. What they
buy is reading: ``def read(...) -> Resource`` rather than one more ``dict[str, Any]`` among cursors, claims and
Elasticsearch bodies.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Resource: TypeAlias = dict[str, Any]
"""A FHIR resource (or a Bundle, an OperationOutcome...) as parsed JSON: ``{"resourceType": ..., ...}``."""

SearchParams: TypeAlias = list[tuple[str, str]]
"""Search parameters as the client sent them, in order and repeated names kept: ``[("name", "smith"), ...]``."""

EsQuery: TypeAlias = dict[str, Any]
"""An Elasticsearch query clause or request body (``{"bool": {...}}``, ``{"query": ..., "sort": ...}``)."""

EsResponse: TypeAlias = dict[str, Any]
"""The JSON body Elasticsearch answered (``{"hits": {"hits": [...]}, ...}``)."""
