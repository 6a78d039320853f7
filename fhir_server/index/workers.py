"""Worker processes for the CPU-bound part of bulk work: the bulk load (parse, validate, build the index
document) and the reindex (build the index document of stored versions).

Index document extraction (FHIRPath) is ~1 ms per resource and holds the GIL, so both spread it over
spawned processes (not forked: the parent holds threads, pooled connections and an ES client), while the
parent keeps the store transactions and a thread sends the Elasticsearch bulk requests. Each worker builds
its :class:`~search.extract.IndexDocumentBuilder` once, from the default search parameter registry.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Generic, TypeVar

from search.extract import IndexDocumentBuilder
from search.registry import SearchParameterRegistry

T = TypeVar("T")
R = TypeVar("R")

#: What :func:`init` set up in this process (a worker, or the parent when it runs the work itself).
STATE: dict[str, Any] = {}


def init(base_url: str | None, required: dict[str, list[str]] | None = None,
         unknown_profile: str = "warning") -> None:
    """Worker initialiser: the index document builder and the validation policy of the server."""
    STATE.update(builder=IndexDocumentBuilder(SearchParameterRegistry.load_default(), base_url=base_url),
                 required=required, unknown_profile=unknown_profile)


def builder() -> IndexDocumentBuilder:
    found: IndexDocumentBuilder = STATE["builder"]
    return found


def reproducible(b: IndexDocumentBuilder) -> bool:
    """Whether :func:`init` in a worker builds the same documents as ``b`` (the default registry and options)."""
    return b.registry is SearchParameterRegistry.load_default() and b.skip_absent


def default_count() -> int:
    return os.cpu_count() or 1


class Pipeline(Generic[T, R]):
    """``fn`` over a stream of inputs in ``workers`` processes (0: in this process), results in input order.

    At most ``2 x workers`` inputs are in flight, so the producer (a file, a store cursor) never runs ahead
    of what the consumer has written. ``initializer(*initargs)`` sets up each worker (and this process when
    ``workers`` is 0, unless ``initializer`` is None).
    """

    def __init__(self, fn: Callable[[T], R], workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self._fn = fn
        self._workers = workers
        self._initializer = initializer
        self._initargs = initargs
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: deque[Future[R]] = deque()

    def __enter__(self) -> Pipeline[T, R]:
        if self._workers > 0:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=self._initializer, initargs=self._initargs)
        elif self._initializer is not None:
            self._initializer(*self._initargs)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def submit(self, item: T) -> list[R]:
        """Queue ``item``; returns the results now due (the oldest ones, once too many are in flight)."""
        if self._pool is None:
            return [self._fn(item)]
        self._inflight.append(self._pool.submit(self._fn, item))
        due: list[R] = []
        while len(self._inflight) > 2 * self._workers:
            due.append(self._inflight.popleft().result())
        return due

    def drain(self) -> list[R]:
        """Every result still in flight, in order."""
        due = [f.result() for f in self._inflight]
        self._inflight.clear()
        return due
