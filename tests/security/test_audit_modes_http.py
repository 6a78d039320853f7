"""FHIR_AUDIT_MODE=async and FHIR_AUDIT=off: the switches do what the settings say."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from fhir_server.storage.audit import AuditLog
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server


def _count(srv: RunningServer) -> int:
    if srv.ctx.audit is not None:
        srv.ctx.audit.wait_applied()
    return AuditLog.of(srv.ctx.store.url).total()


def test_async_mode_records_without_holding_the_answer(es_url: str, tmp_path: Path) -> None:
    srv = start_server(make_settings(es_url, tmp_path, audit="on", audit_mode="async"))
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            assert c.get("/Patient/unknown").status_code == 404
            deadline = time.monotonic() + 10
            while _count(srv) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _count(srv) == 1
            srv.uvicorn_server.config.app.state.audit.stop()  # type: ignore[union-attr]
            assert c.get("/Patient/unknown").status_code == 404  # answered; the failure is logged
    finally:
        srv.stop()


def test_audit_off_writes_nothing(es_url: str, tmp_path: Path) -> None:
    srv = start_server(make_settings(es_url, tmp_path, audit="off"))
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            assert c.get("/Patient/unknown").status_code == 404
        assert _count(srv) == 0
    finally:
        srv.stop()
