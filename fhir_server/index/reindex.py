"""Rebuild a type's index from the store into a new physical index, then swap the alias.

No downtime: searches keep using the old index until the atomic alias swap. The copy runs like a bulk
load: the current versions are read from the store by pages, their documents are built in worker
processes (:mod:`.workers`, as the bulk load's) and sent in large bulk requests by a thread
(:class:`.bulk.IndexCopier`) into the new index, created with no refresh and no replica.

Writes that land during the rebuild are caught up from the version log (``seq`` > the mark taken before
the copy) twice: before the swap into the new index, and after it for writes that hit the old index in
between. External versions make every replay idempotent.

Failing loudly, never half: an Elasticsearch error or a refused document during the copy stops it, the
new index is deleted and :class:`ReindexError` is raised, so the alias keeps its complete old index. After
the swap, writes the second catch-up could not copy are queued in the outbox (the indexer applies them)
before it raises. A resource whose document cannot be built (an extraction bug) does not stop the
rebuild: it is queued in the outbox too, where the indexer parks it in ``index_error`` with its reason,
as for any write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from elasticsearch import Elasticsearch

from fhir_server.formats import numbers
from fhir_server.storage import SQLResourceStore, StoredVersion
from search.extract import IndexDocumentBuilder

from . import workers as worker_pool
from .bulk import IndexCopier, IndexItem
from .indices import IndexManager

log = logging.getLogger(__name__)

#: Current resources of a type from which worker processes are worth their start (~1 s each).
POOL_MIN = 5000

_Row = tuple[int, str, str, int, bytes]  # seq, type, id, version, content
_Built = tuple[list[IndexItem], list[tuple[str, str]]]  # documents, (id, error) of those that failed


class ReindexError(RuntimeError):
    """The rebuild of a type failed; the message says where its alias points."""


def _documents(rows: list[_Row], builder: IndexDocumentBuilder | None = None) -> _Built:
    """Worker (or this process, with ``builder``): the index document of each stored version."""
    b = builder if builder is not None else worker_pool.builder()
    items: list[IndexItem] = []
    failed: list[tuple[str, str]] = []
    for seq, type_, id_, version, content in rows:
        try:
            doc = numbers.dumps(b.build(numbers.loads(content)))
        except Exception as exc:  # as the indexer: one bad resource never blocks the others
            log.exception("reindex: cannot build the index document of %s/%s", type_, id_)
            failed.append((id_, f"extraction failed: {exc}"))
            continue
        items.append(IndexItem(seq, type_, id_, version, doc))
    return items, failed


def _rows(versions: list[StoredVersion]) -> list[_Row]:
    return [(v.seq, v.type, v.id, v.version, v.content) for v in versions if v.content is not None]


def _worker_count(store: SQLResourceStore, builder: IndexDocumentBuilder, types: list[str],
                  requested: int | None) -> int:
    if requested is not None:
        return requested
    if not worker_pool.reproducible(builder):  # a worker could not build the same documents
        return 0
    return worker_pool.default_count() if sum(store.count_current(t) for t in types) >= POOL_MIN else 0


_Pipe = worker_pool.Pipeline[list[_Row], _Built]


def _pipeline(builder: IndexDocumentBuilder, n_workers: int) -> _Pipe:
    if n_workers:
        return worker_pool.Pipeline(_documents, n_workers, worker_pool.init, (builder.base_url,))
    return worker_pool.Pipeline(partial(_documents, builder=builder), 0)


def _copy(store: SQLResourceStore, copier: IndexCopier, pipe: _Pipe, type_: str, batch: int,
          progress: Callable[[int], None] | None, failed: list[tuple[str, str]]) -> int:
    """Every current version of the type into the copier's index; returns how many were sent."""
    sent = 0

    def take(results: list[_Built]) -> None:
        nonlocal sent
        for items, bad in results:
            copier.submit(items)
            failed.extend(bad)
            sent += len(items)

    for versions in store.iter_current(type_, batch):
        take(pipe.submit(_rows(versions)))
        if progress:
            progress(len(versions))
    take(pipe.drain())
    return sent


def _catch_up(store: SQLResourceStore, copier: IndexCopier, builder: IndexDocumentBuilder, type_: str, since: int,
              failed: list[tuple[str, str]]) -> int:
    """The current state of every resource of the type written after ``since`` (deletions included)."""
    ids = [id_ for t, id_ in store.changed_since(since) if t == type_]
    sent = 0
    for i in range(0, len(ids), 500):
        found = list(store.read_many(type_, ids[i:i + 500]).values())
        items, bad = _documents(_rows([v for v in found if not v.deleted]), builder)
        items += [IndexItem(v.seq, type_, v.id, v.version, None) for v in found if v.deleted]
        copier.submit(items)
        failed.extend(bad)
        sent += len(items)
    return sent


def reindex_types(store: SQLResourceStore, es: Elasticsearch, indices: IndexManager, builder: IndexDocumentBuilder,
                  types: list[str], *, batch: int = 2000, progress: Callable[[str, int], None] | None = None,
                  workers: int | None = None) -> list[dict[str, Any]]:
    """Rebuild each type's index behind its alias, in order, with one pool of worker processes for all.

    ``workers``: processes building the documents; default one per CPU from :data:`POOL_MIN` current
    resources (fewer are faster in this process), 0 = in this process. ``progress(type, n)`` after each page.
    Raises :class:`ReindexError` at the first type that fails (its alias unchanged; the types before it are
    rebuilt, the ones after it untouched).
    """
    with _pipeline(builder, _worker_count(store, builder, types, workers)) as pipe:
        return [_rebuild(store, es, indices, builder, pipe, t, batch, partial(progress, t) if progress else None)
                for t in types]


def reindex_type(store: SQLResourceStore, es: Elasticsearch, indices: IndexManager, builder: IndexDocumentBuilder,
                 type_: str, *, batch: int = 2000, progress: Callable[[int], None] | None = None,
                 workers: int | None = None) -> dict[str, Any]:
    """:func:`reindex_types` of one type; ``progress(n)`` after each page."""
    return reindex_types(store, es, indices, builder, [type_], batch=batch, workers=workers,
                         progress=(lambda _type, n: progress(n)) if progress else None)[0]


def _rebuild(store: SQLResourceStore, es: Elasticsearch, indices: IndexManager, builder: IndexDocumentBuilder,
             pipe: _Pipe, type_: str, batch: int, progress: Callable[[int], None] | None) -> dict[str, Any]:
    mark = store.max_seq()
    new_index = indices.create_physical(type_, loading=True)
    failed: list[tuple[str, str]] = []
    try:
        with IndexCopier(es, indices, new_index) as copier:
            copied = _copy(store, copier, pipe, type_, batch, progress, failed)
            caught = _catch_up(store, copier, builder, type_, mark, failed)
        indices.loaded(new_index)
        old = indices.swap(type_, new_index)
    except BaseException as exc:
        try:
            es.indices.delete(index=new_index, ignore_unavailable=True)
        except Exception as cleanup:  # ES down: an orphan index, never behind the alias
            log.error("reindex %s: could not delete the incomplete index %s: %s", type_, new_index, cleanup)
        if isinstance(exc, Exception):
            raise ReindexError(f"reindex of {type_} failed, its alias is unchanged: {exc}") from exc
        raise
    try:
        with IndexCopier(es, indices, new_index) as copier:  # writes that reached the old index meanwhile
            caught += _catch_up(store, copier, builder, type_, mark, failed)
        es.indices.refresh(index=new_index)
    except Exception as exc:
        store.outbox.enqueue([(t, id_) for t, id_ in store.changed_since(mark) if t == type_])
        raise ReindexError(f"{type_} is now served from {new_index}, but writes made during the rebuild could not "
                           f"all be copied into it ({exc}); they are queued in the outbox for the indexer") from exc
    if failed:
        log.error("reindex %s: %d documents could not be built (queued for the indexer, then index_error): %s",
                  type_, len(failed), failed[:3])
        store.outbox.enqueue([(type_, id_) for id_, _ in failed])
    for o in old:
        es.indices.delete(index=o, ignore_unavailable=True)
    log.info("reindex %s: %d copied, %d caught up, %d not buildable, now %s (dropped %s)", type_, copied, caught,
             len(failed), new_index, old)
    return {"type": type_, "index": new_index, "copied": copied, "caught_up": caught, "not_buildable": len(failed),
            "dropped": old}
