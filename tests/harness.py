"""Running the real ASGI app under uvicorn in a thread, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from fhir_server.api.transport import uvicorn_options
from fhir_server.app import create_app
from fhir_server.context import ServerContext
from fhir_server.index.client import es_client
from fhir_server.settings import Settings


@dataclass
class RunningServer:
    settings: Settings
    uvicorn_server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return self.settings.public_base

    @property
    def ctx(self) -> ServerContext:
        ctx: ServerContext = self.uvicorn_server.config.app.state.ctx  # type: ignore[union-attr]
        return ctx

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.uvicorn_server.should_exit = True
        self.thread.join(timeout=30)
        es = es_client(self.settings, self.settings.es_url or "")
        es.indices.delete(index=f"{self.settings.es_index_prefix}*", ignore_unavailable=True,
                          allow_no_indices=True, expand_wildcards="all")
        es.close()


def start_server(settings: Settings) -> RunningServer:
    app = create_app(lambda: ServerContext.build(settings, settings.es_url or ""), settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on",
                            **uvicorn_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{settings.port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server failed to start")
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start within 60 s")
        time.sleep(0.02)
    return RunningServer(settings, server, thread)


def in_parallel(n: int, fn: Callable[[httpx.Client, int], Any], base_url: str) -> list[Any]:
    """``fn(client, i)`` for i in range(n), each on its own thread and client, released together by a barrier;
    the results in order. A request that never finishes fails the test (deadlock) instead of hanging it."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        with httpx.Client(base_url=base_url, timeout=120) as c:
            barrier.wait()
            results[i] = fn(c, i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
        assert not t.is_alive(), "a request never finished (deadlock?)"
    return results


PG_URL = os.environ.get("FHIR_TEST_PG_URL")


@contextlib.contextmanager
def pg_schema_url(prefix: str) -> Iterator[str]:
    """A PostgreSQL store URL on a fresh schema of its own, dropped afterwards (the storage tests empty the
    default one). Skips without ``FHIR_TEST_PG_URL``, fails in CI: the PostgreSQL tests must run there."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("FHIR_TEST_PG_URL must be set in CI")
        pytest.skip("FHIR_TEST_PG_URL not set")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


class EsProxy:
    """A TCP proxy to Elasticsearch for outage tests, without touching the shared node: :meth:`cut` closes open
    connections and drops new ones (an unreachable cluster); while ``stalled`` is set every answer is held back
    (a hung cluster, deterministically: requests reach ES, responses do not come back until released)."""

    def __init__(self, target: str) -> None:
        url = httpx.URL(target)
        self.target = (url.host, url.port or 9200)
        self.cut_off = threading.Event()
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while chunk := src.recv(65536):
                while answers and self.stalled.is_set():
                    time.sleep(0.02)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.cut_off.set()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._open.clear()

    def restore(self) -> None:
        self.cut_off.clear()

    def close(self) -> None:
        self.stalled.clear()
        self.listener.close()
