"""Running as a service: health probes, Prometheus metrics, request ids in answers, logs and the audit trail."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from elasticsearch import Elasticsearch
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fhir_devtools import es_node
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.storage.audit import AuditLog
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server
from tests.security.support import client_for, create_as, start_secured

FHIR_JSON = {"Content-Type": "application/fhir+json"}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


def _root(srv: RunningServer) -> str:
    return srv.base_url.removesuffix("/fhir")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _checks(resp: httpx.Response) -> dict[str, str]:
    return {i["details"]["text"].split(":")[0]: i["severity"] for i in resp.json()["issue"]}


@pytest.fixture(scope="module")
def lagging(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose indexer is stopped (writes stay in the outbox) and which wants no lag at all."""
    settings = make_settings(es_url, tmp_path_factory.mktemp("lag"), ready_max_outbox_lag_s=0.0,
                             metrics_token=METRICS_TOKEN)
    with start_server(settings) as srv:
        srv.ctx.indexer.stop()
        yield srv


@pytest.fixture
def dead_es(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server started on the shared node, then pointed at a port where no Elasticsearch listens."""
    with start_server(make_settings(es_url, tmp_path_factory.mktemp("dead"))) as srv:
        ctx = srv.ctx
        live, live_request = ctx.es, ctx.request_es
        dead = Elasticsearch(f"http://127.0.0.1:{es_node.free_port()}", request_timeout=2, max_retries=0)
        ctx.es = ctx.request_es = dead
        try:
            yield srv
        finally:
            ctx.es, ctx.request_es = live, live_request
            dead.close()


# -- probes ----------------------------------------------------------------------------------------------


def test_livez_and_readyz_answer_ok_without_touching_fhir(server: RunningServer) -> None:
    with httpx.Client(base_url=_root(server), timeout=30) as http:
        live = http.get("/livez")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert _checks(ready) == {"store": "information", "elasticsearch": "information", "index-lag": "information"}


def test_readyz_is_503_when_elasticsearch_is_unreachable(dead_es: RunningServer) -> None:
    with httpx.Client(base_url=_root(dead_es), timeout=30) as http:
        ready = http.get("/readyz")
        assert http.get("/livez").status_code == 200  # the process is fine: no restart wanted
        before = _samples(http.get("/metrics").text)
        search = http.get("/fhir/Patient", params={"family": "Nobody"})
        after = _samples(http.get("/metrics").text)
    assert ready.status_code == 503 and ready.headers["retry-after"]
    body = ready.json()
    assert body["resourceType"] == "OperationOutcome"
    assert _checks(ready) == {"store": "information", "elasticsearch": "error", "index-lag": "information"}
    assert search.status_code == 503
    key = ("fhir_elasticsearch_errors_total", (("kind", "unavailable"),))
    assert after[key] == before.get(key, 0.0) + 1


def test_readyz_is_503_when_the_index_lags(lagging: RunningServer) -> None:
    with httpx.Client(base_url=lagging.base_url, timeout=30) as fhir:
        create_as(fhir, {"resourceType": "Patient", "name": [{"family": "Lagging"}]})
    with httpx.Client(base_url=_root(lagging), timeout=30) as http:
        ready = http.get("/readyz")
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ready.status_code == 503
    assert _checks(ready) == {"store": "information", "elasticsearch": "information", "index-lag": "error"}
    assert "1 pending" in ready.text
    samples = _samples(scraped.text)
    assert samples[("fhir_index_outbox_depth", ())] == 1 and samples[("fhir_index_lag_seconds", ())] > 0


# -- metrics ---------------------------------------------------------------------------------------------


def test_metrics_has_latency_per_interaction_and_backlog_but_no_ids(server: RunningServer,
                                                                    client: httpx.Client) -> None:
    family = f"Metric{uuid.uuid4().hex[:8]}"
    id_ = create_as(client, {"resourceType": "Patient", "name": [{"family": family}]})
    assert client.get(f"/Patient/{id_}").status_code == 200
    assert client.get("/Patient", params={"family": family}).status_code == 200
    unknown = f"unknown{uuid.uuid4().hex}"
    assert client.get(f"/Patient/{unknown}").status_code == 404
    assert client.get(f"/Patient/{id_}/_history").status_code == 200
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"Patient/{id_}"}}]}
    assert client.post("/", json=bundle, headers=FHIR_JSON).status_code == 200
    with httpx.Client(base_url=_root(server), timeout=30) as http:
        scraped = http.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    samples = _samples(text)
    for interaction, status_class in (("create", "2xx"), ("read", "2xx"), ("read", "4xx"), ("search-type", "2xx"),
                                      ("history", "2xx"), ("batch", "2xx")):
        key = ("fhir_http_request_duration_seconds_count",
               (("interaction", interaction), ("status_class", status_class)))
        assert samples.get(key, 0) >= 1, (interaction, status_class)
    assert ("fhir_index_outbox_depth", ()) in samples and ("fhir_index_lag_seconds", ()) in samples
    assert id_ not in text and unknown not in text and family not in text


def test_validation_rejects_are_counted_per_profile(server: RunningServer, client: httpx.Client) -> None:
    key = ("fhir_validation_rejects_total", (("profile", "http://hl7.org/fhir/StructureDefinition/Patient"),))
    with httpx.Client(base_url=_root(server), timeout=30) as http:
        before = _samples(http.get("/metrics").text).get(key, 0.0)
        resp = client.post("/Patient", json={"resourceType": "Patient", "gender": "sometimes"}, headers=FHIR_JSON)
        assert resp.status_code == 422, resp.text
        after = _samples(http.get("/metrics").text).get(key, 0.0)
    assert after == before + 1


def test_metrics_token_is_required_once_set(lagging: RunningServer) -> None:
    with httpx.Client(base_url=_root(lagging), timeout=30) as http:
        assert http.get("/metrics").status_code == 403
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200


def test_metrics_without_token_are_for_loopback_callers_only() -> None:
    from fhir_server.observability.metrics import metrics_allowed

    assert metrics_allowed("127.0.0.1", None, None) and metrics_allowed("::1", None, None)
    assert not metrics_allowed("10.0.0.5", None, None) and not metrics_allowed(None, None, None)


# -- request ids -----------------------------------------------------------------------------------------


def test_request_id_is_echoed_generated_and_sanitised(server: RunningServer, client: httpx.Client) -> None:
    given = f"client-{uuid.uuid4().hex}"
    assert client.get("/metadata", headers={"X-Request-ID": given}).headers["x-request-id"] == given
    generated = client.get("/Patient/nobody-here").headers["x-request-id"]
    assert UUID_RE.fullmatch(generated)
    assert client.get("/Patient/nobody-here").headers["x-request-id"] != generated  # one per request
    for bad in ("has spaces in it", "x" * 129, "tab\tinside"):
        echoed = client.get("/metadata", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert UUID_RE.fullmatch(echoed), bad
    raw = client.get("/metadata", headers=[(b"X-Request-ID", "r\xe9sum\xe9".encode("latin-1"))])
    assert UUID_RE.fullmatch(raw.headers["x-request-id"])
    with httpx.Client(base_url=_root(server), timeout=30) as http:
        assert http.get("/livez", headers={"X-Request-ID": given}).headers["x-request-id"] == given
        assert UUID_RE.fullmatch(http.get("/nowhere").headers["x-request-id"])


def test_access_log_line_has_request_id_and_route_template_only(client: httpx.Client,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from fhir_server.observability.logs import JsonFormatter

    rid = f"log-{uuid.uuid4().hex}"
    secret = f"Secretname{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.INFO, logger="fhir_server.access"):
        assert client.get("/Patient", params={"family": secret}, headers={"X-Request-ID": rid}).status_code == 200
        assert client.get(f"/Patient/{secret}", headers={"X-Request-ID": rid}).status_code == 404
    mine = [r for r in caplog.records if getattr(r, "request_id", None) == rid and r.name == "fhir_server.access"]
    assert [(r.__dict__["method"], r.__dict__["route"], r.__dict__["status"]) for r in mine] == [
        ("GET", "/fhir/{type}", 200), ("GET", "/fhir/{type}/{id}", 404)]
    for record in mine:
        line = orjson.loads(JsonFormatter().format(record))
        assert line["request_id"] == rid and line["duration_ms"] >= 0
        assert secret not in record.getMessage() and secret not in str(line)


# -- the audit trail -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    dev = DevIssuer(tmp_path_factory.mktemp("issuer"))
    dev.ensure_keys()
    return dev


def _request_ids(event: dict[str, Any]) -> list[str]:
    return [e["what"]["identifier"]["value"] for e in event.get("entity", [])
            if e.get("type", {}).get("code") == "XrequestId"
            and e["type"].get("system") == "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"]


def test_audit_event_names_the_request_id(es_url: str, tmp_path: Path, issuer: DevIssuer) -> None:
    with start_secured(es_url, tmp_path, issuer, audit="on", audit_mode="fail-closed") as srv:
        admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
        with admin, httpx.Client(base_url=_root(srv), timeout=30) as http:
            pid = create_as(admin, {"resourceType": "Patient", "name": [{"family": "Audited"}]})
            assert srv.ctx.audit is not None and srv.ctx.audit.wait_applied()
            total = AuditLog.of(srv.ctx.store.url).total()
            assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200  # no token
            assert http.get("/metrics").status_code == 200
            assert srv.ctx.audit.wait_applied() and AuditLog.of(srv.ctx.store.url).total() == total  # not audited
            rid = f"audit-{uuid.uuid4().hex}"
            assert admin.get(f"/Patient/{pid}", headers={"X-Request-ID": rid}).status_code == 200
            assert srv.ctx.audit.wait_applied()
            recent = AuditLog.of(srv.ctx.store.url).recent(5)
            ids = [id_ for id_, content in recent if rid.encode() in content]
            assert len(ids) == 1
            event = admin.get(f"/AuditEvent/{ids[0]}").json()
    assert event["subtype"][0]["code"] == "read"
    assert _request_ids(event) == [rid]
    assert f"Patient/{pid}" in {e["what"].get("reference") for e in event["entity"]}


@given(st.text(max_size=200) | st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200))
def test_request_id_of_keeps_safe_ids_and_replaces_the_rest(header: str) -> None:
    from fhir_server.observability.logs import request_id_of

    rid = request_id_of(header)
    safe = 0 < len(header) <= 128 and all("!" <= c <= "~" for c in header)
    assert rid == header if safe else UUID_RE.fullmatch(rid)
    assert request_id_of(None) != request_id_of(None)


def test_logging_writes_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run in-process (tests call ``cli.main``) configures the root logger; a stream replaced and
    closed afterwards (pytest's capture) must not make every later record a 'Logging error'."""
    import io

    from fhir_server.observability.logs import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    try:
        configure_logging("text", "INFO")
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("fhir_server.test").warning("after the swap")
        assert "Logging error" not in second.getvalue() and "after the swap" in second.getvalue()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
