"""The Elasticsearch points-in-time (PITs) of search paging, bounded per process and per client.

A PIT pins the segments of an index for its keep-alive; unbounded, one per first page, a flood of
``GET /Patient?_count=1`` kept 122,377 of them open on the node (heap 60-86 %). Here every PIT the
server opens is registered, and none is opened past ``limit`` live ones in the process or
``per_client`` for one client: the caller then pages without a snapshot (keyset on current data),
so a link never fails for want of a PIT. The pool's count is an upper bound on its PITs alive in
Elasticsearch: a PIT is registered before it is opened, and its local deadline is set after each
call that uses it returns (Elasticsearch restarts the keep-alive when it runs the call, earlier),
plus the search timeout for a call that timed out here and might still run there.

Only PIT ids of this pool are ever sent to Elasticsearch: a cursor is client input, and a forged
one naming another index's PIT (another type, another tenant of the cluster) is not read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError

log = logging.getLogger(__name__)


@dataclass
class _Pit:
    alias: str
    client: str
    deadline: float  # time.monotonic() after which Elasticsearch has freed it
    users: int = 0  # requests reading it now: never dropped as expired while read


class PitPool:
    def __init__(self, es: Elasticsearch, *, limit: int, per_client: int, keep_alive_s: int,
                 call_timeout_s: float) -> None:
        self.es = es
        self.limit = limit
        self.per_client = per_client
        self.keep_alive = f"{keep_alive_s}s"
        self._ttl = keep_alive_s + call_timeout_s
        self._lock = threading.Lock()
        self._live: dict[str, _Pit] = {}
        self._clients: Counter[str] = Counter()  # live and being opened, per client
        self._opening = 0
        self.opened = 0  # totals since start, for benchmarks and operators
        self.refused = 0

    def open_count(self) -> int:
        """PITs of this pool that may be alive in Elasticsearch (opened and not known freed)."""
        with self._lock:
            self._purge(time.monotonic())
            return len(self._live) + self._opening

    def open(self, alias: str, client: str) -> str | None:
        """A new PIT on ``alias`` charged to ``client``; None when the process or the client is at its cap."""
        with self._lock:
            self._purge(time.monotonic())
            if len(self._live) + self._opening >= self.limit or self._clients[client] >= self.per_client:
                self.refused += 1
                return None
            self._opening += 1
            self._clients[client] += 1
        pit_id: str | None = None
        try:
            pit_id = str(self.es.open_point_in_time(index=alias, keep_alive=self.keep_alive).body["id"])
        finally:
            with self._lock:
                self._opening -= 1
                if pit_id is None:
                    self._uncharge(client)
                else:
                    self._live[pit_id] = _Pit(alias, client, time.monotonic() + self._ttl)
                    self.opened += 1
        return pit_id

    @contextmanager
    def reading(self, pit_id: str, alias: str) -> Iterator[bool]:
        """Whether ``pit_id`` is a live PIT of this pool on ``alias``; while True, it is not dropped,
        and on exit its deadline restarts (the call made inside extended its keep-alive)."""
        with self._lock:
            self._purge(time.monotonic())
            pit = self._live.get(pit_id)
            if pit is not None and pit.alias != alias:
                pit = None
            if pit is not None:
                pit.users += 1
        try:
            yield pit is not None
        finally:
            if pit is not None:
                with self._lock:
                    pit.users -= 1
                    pit.deadline = time.monotonic() + self._ttl

    def forget(self, pit_id: str) -> None:
        """Elasticsearch no longer has ``pit_id`` (it answered 404): stop counting it."""
        with self._lock:
            self._drop(pit_id)

    def close(self, pit_id: str) -> None:
        """Free ``pit_id`` now (the last page was served); best effort, it expires anyway."""
        with self._lock:
            if not self._drop(pit_id):
                return
        try:
            self.es.close_point_in_time(id=pit_id)
        except NotFoundError:
            pass
        except (ApiError, TransportError) as exc:
            log.warning("could not close a point-in-time (it expires with its keep-alive): %s", exc)

    def close_all(self) -> None:
        with self._lock:
            ids = list(self._live)
        for pit_id in ids:
            self.close(pit_id)

    def _drop(self, pit_id: str) -> bool:
        pit = self._live.pop(pit_id, None)
        if pit is None:
            return False
        self._uncharge(pit.client)
        return True

    def _uncharge(self, client: str) -> None:
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]

    def _purge(self, now: float) -> None:
        for pit_id in [k for k, p in self._live.items() if p.deadline <= now and p.users == 0]:
            self._drop(pit_id)
