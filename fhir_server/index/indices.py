"""Physical indices and their aliases: one alias per resource type.

Searches and the indexer only ever use the alias (``fhir-patient``); the
physical index behind it (``fhir-patient-<timestamp>``) is replaced by a
reindex without downtime. Each physical index records in ``_meta`` the
fingerprint of the search parameters it was built with, so a stale index is
detectable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from fhir_server.registry import RESOURCE_TYPES
from fhir_server.settings import Settings
from search.mapping import index_mapping, index_settings
from search.registry import SearchParameterRegistry

log = logging.getLogger(__name__)


class IndexManager:
    def __init__(self, es: Elasticsearch, registry: SearchParameterRegistry, settings: Settings) -> None:
        self.es = es
        self.registry = registry
        self.settings = settings

    def alias(self, resource_type: str) -> str:
        return f"{self.settings.es_index_prefix}{resource_type.lower()}"

    def searchable_types(self) -> list[str]:
        return [rt.name for rt in RESOURCE_TYPES.values() if rt.searchable]

    def create_physical(self, resource_type: str, *, loading: bool = False) -> str:
        """A new empty physical index with the current mapping (not yet behind the alias).

        ``loading``: no refresh and no replica until :meth:`loaded` (a bulk copy writes faster without them).
        """
        name = f"{self.alias(resource_type)}-{time.time_ns() // 1000}"
        settings = index_settings(self.settings.es_shards, 0 if loading else self.settings.es_replicas)
        if loading:
            settings = {"index": {**settings["index"], "refresh_interval": "-1"}}
        self.es.indices.create(index=name, settings=settings, mappings=index_mapping(self.registry, resource_type))
        return name

    def loaded(self, name: str) -> None:
        """The configured refresh and replicas of an index created ``loading``, and a refresh."""
        self.es.indices.put_settings(index=name, settings={"index.refresh_interval": None,
                                                           "index.number_of_replicas": self.settings.es_replicas})
        self.es.indices.refresh(index=name)

    def physical(self, resource_type: str) -> list[str]:
        try:
            return sorted(self.es.indices.get_alias(name=self.alias(resource_type)).body)
        except NotFoundError:
            return []

    def ensure(self, resource_type: str) -> None:
        """Create the alias and its first index if missing; warn when the mapping is stale."""
        current = self.physical(resource_type)
        if not current:
            name = self.create_physical(resource_type)
            try:
                self.es.indices.put_alias(index=name, name=self.alias(resource_type))
            except Exception:
                self.es.indices.delete(index=name, ignore_unavailable=True)
                raise
            log.info("created index %s behind alias %s", name, self.alias(resource_type))
            return
        if self.stored_fingerprint(current[0]) != self.registry.fingerprint(resource_type):
            log.warning("index %s was built with other search parameters: run `fhir-server reindex`", current[0])

    def ensure_all(self) -> None:
        for resource_type in self.searchable_types():
            self.ensure(resource_type)

    def stale_types(self) -> list[str]:
        """Types whose live index was built with another parameter set or extraction (reindex them)."""
        out = []
        for resource_type in self.searchable_types():
            current = self.physical(resource_type)
            if current and self.stored_fingerprint(current[0]) != self.registry.fingerprint(resource_type):
                out.append(resource_type)
        return out

    def stored_fingerprint(self, index: str) -> str | None:
        body: dict[str, Any] = self.es.indices.get_mapping(index=index).body
        meta = body.get(index, {}).get("mappings", {}).get("_meta", {})
        value = meta.get("fingerprint")
        return str(value) if value is not None else None

    def swap(self, resource_type: str, new_index: str) -> list[str]:
        """Point the alias at ``new_index`` atomically; returns the indices it left."""
        old = self.physical(resource_type)
        actions: list[dict[str, Any]] = [{"add": {"index": new_index, "alias": self.alias(resource_type)}}]
        actions += [{"remove": {"index": o, "alias": self.alias(resource_type)}} for o in old if o != new_index]
        self.es.indices.update_aliases(actions=actions)
        return [o for o in old if o != new_index]

    def drop_all(self) -> None:
        """Delete every index of this prefix (tests, ``reindex --from-scratch``)."""
        self.es.indices.delete(index=f"{self.settings.es_index_prefix}*", ignore_unavailable=True,
                               allow_no_indices=True, expand_wildcards="all")
