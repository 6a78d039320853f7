"""Probes and metrics for an orchestrator, outside the FHIR base: ``/livez``, ``/readyz``, ``/metrics``.

``/livez`` answers while the event loop does (no I/O: restarting a process because Elasticsearch is down
would not help). ``/readyz`` checks what serving needs, each within ``FHIR_READY_TIMEOUT_S``: the store (a
trivial query), Elasticsearch (cluster health not red) and the index lag (the oldest pending outbox row is
younger than ``FHIR_READY_MAX_OUTBOX_LAG_S``); 503 with an OperationOutcome naming each failed check. All
three are public (no token) and not audited (only requests under ``/fhir`` are).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from elasticsearch import AuthenticationException, AuthorizationException
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fhir_server.context import ServerContext
from fhir_server.observability.backlog import outbox_backlog
from fhir_server.observability.metrics import CONTENT_TYPE, exposition, metrics_allowed

Check = tuple[str, bool, str]  # (name, ok, detail)


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def _store(ctx: ServerContext) -> Check:
    with ctx.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "store", True, "reachable"


def _elasticsearch(ctx: ServerContext) -> Check:
    timeout = ctx.settings.ready_timeout_s
    health = ctx.es.options(request_timeout=timeout, max_retries=0, retry_on_timeout=False).cluster.health()
    status = str(health.get("status"))
    return "elasticsearch", status in ("green", "yellow"), f"cluster health {status}"


def _outbox(ctx: ServerContext) -> Check:
    depth, lag = outbox_backlog(ctx.store)
    bound = ctx.settings.ready_max_outbox_lag_s
    return "index-lag", lag <= bound, f"{depth} pending, oldest {lag:.1f} s (bound {bound:g} s)"


async def _run(name: str, check: Callable[[ServerContext], Check], ctx: ServerContext) -> Check:
    """One check in a worker thread, bounded: a hung store or node is a failed check, not a hung probe."""
    try:
        with anyio.fail_after(ctx.settings.ready_timeout_s + 1):
            return await anyio.to_thread.run_sync(check, ctx, abandon_on_cancel=True)
    except TimeoutError:
        return name, False, f"no answer within {ctx.settings.ready_timeout_s:g} s"
    except (AuthenticationException, AuthorizationException) as exc:  # key revoked, password changed
        return name, False, f"credentials refused ({exc.meta.status}): check FHIR_ES_API_KEY or FHIR_ES_USERNAME"
    except Exception as exc:
        return name, False, f"unreachable ({type(exc).__name__})"


async def readyz(request: Request) -> Response:
    ctx: ServerContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        checks: list[Check] = [("startup", False, "the server is starting")]
    else:
        checks = [await _run("store", _store, ctx), await _run("elasticsearch", _elasticsearch, ctx)]
        if checks[0][1]:
            checks.append(await _run("index-lag", _outbox, ctx))
    ready = all(ok for _, ok, _ in checks)
    body: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information" if ok else "error", "code": "informational" if ok else "transient",
                   "details": {"text": f"{name}: {'ok' if ok else 'failed'}"}, "diagnostics": detail}
                  for name, ok, detail in checks],
    }
    return JSONResponse(body, status_code=200 if ready else 503,
                        headers={"Cache-Control": "no-store", **({} if ready else {"Retry-After": "5"})})


async def metrics(request: Request) -> Response:
    settings = request.app.state.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None
    if not metrics_allowed(request.client.host if request.client else None,
                           request.headers.get("authorization"), token):
        return Response(b"forbidden\n", status_code=403, media_type="text/plain")
    body = await anyio.to_thread.run_sync(exposition, request.app.state)
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def health_routes() -> list[Route]:
    return [Route("/livez", livez, methods=["GET"]), Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]
