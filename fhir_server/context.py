"""The long-lived collaborators every interaction needs, built once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from elasticsearch import Elasticsearch

from search.extract import IndexDocumentBuilder
from search.registry import SearchParameterRegistry

from .index.client import check_access, es_client
from .index.indexer import Indexer
from .index.indices import IndexManager
from .index.pits import PitPool
from .index.reindex import reindex_types
from .settings import Settings
from .storage import SQLResourceStore, open_store

if TYPE_CHECKING:
    from .audit.writer import AuditWriter

log = logging.getLogger(__name__)


BINARY_BINDING = "binary-security-context"


def bind_legacy_binaries(store: SQLResourceStore, base_url: str) -> None:
    """Once per store: bind the Binaries stored before the server filled ``securityContext`` to the document
    that brought them (``mhd.bind_unbound``); until then only a backend could read them."""
    if store.data_migrated(BINARY_BINDING):
        return
    from .interactions.mhd import bind_unbound  # the composition root may reach the write rules

    bound = bind_unbound(store, base_url, (v for batch in store.iter_current("DocumentReference", 500)
                                           for v in batch))
    store.mark_data_migrated(BINARY_BINDING)
    if bound:
        log.warning("bound %d stored Binaries to the DocumentReference that brought them (securityContext)", bound)


@dataclass
class ServerContext:
    settings: Settings
    store: SQLResourceStore
    es: Elasticsearch
    indices: IndexManager
    indexer: Indexer
    search_parameters: SearchParameterRegistry
    pits: PitPool
    request_es: Elasticsearch | None = None
    audit: AuditWriter | None = None  # set by the app's lifespan when audit is on (readers wait for it)

    @property
    def search_es(self) -> Elasticsearch:
        """The client of searches made for a request: each call bounded by ``es_search_timeout_s``."""
        return self.request_es if self.request_es is not None else self.es

    @property
    def base_url(self) -> str:
        return self.settings.public_base

    @cached_property
    def cursor_key(self) -> bytes:
        """MAC key of the page cursors (:mod:`.interactions.paging`): ``FHIR_CURSOR_SECRET``, else the store's."""
        from .interactions.paging import configured_key, derive_key

        secret = self.settings.cursor_secret
        if secret is not None and secret.get_secret_value():
            return configured_key(secret.get_secret_value())
        return derive_key(self.store.secret("cursor"))

    @classmethod
    def build(cls, settings: Settings, es_url: str, *, start_indexer: bool = True) -> ServerContext:
        store = open_store(settings.db_url, busy_timeout_s=settings.db_busy_timeout_s)
        bind_legacy_binaries(store, settings.public_base)
        es = es_client(settings, es_url, request_timeout=settings.es_timeout_s, retry_on_timeout=True,
                       max_retries=2)
        check_access(es, es_url)
        # what a search waits for: one bounded call, then 503 + Retry-After (writes, indexer, loads keep `es`)
        request_es = es.options(request_timeout=settings.es_search_timeout_s, max_retries=0, retry_on_timeout=False)
        registry = SearchParameterRegistry.load_default()
        indices = IndexManager(es, registry, settings)
        indices.ensure_all()
        builder = IndexDocumentBuilder(registry, base_url=settings.public_base)
        indexer = Indexer(store, es, indices, builder, settings)
        stale = indices.stale_types()
        if stale:  # parameter set changed: rebuild behind the alias before serving (one worker pool for all)
            log.warning("search parameters of %s changed: rebuilding their indexes (alias swap)", ", ".join(stale))
            reindex_types(store, es, indices, builder, list(stale))
        pits = PitPool(request_es, limit=settings.search_pit_max, per_client=settings.search_pit_max_per_client,
                       keep_alive_s=settings.search_pit_keep_alive_s, call_timeout_s=settings.es_search_timeout_s)
        ctx = cls(settings, store, es, indices, indexer, registry, pits, request_es)
        ctx.cursor_key  # noqa: B018 - at start: a too short FHIR_CURSOR_SECRET stops the server, not a request
        if start_indexer:
            indexer.start()
        return ctx

    def close(self) -> None:
        self.pits.close_all()
        self.indexer.stop()
        self.es.close()
        self.store.dispose()
