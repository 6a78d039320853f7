"""Elasticsearch as operators run it: security on, the server authenticating with basic auth or an API key.

The secured cluster is a managed node of our own (``es_node`` with a username and password: x-pack security
on, file-realm superuser, HTTP without TLS), started once for the module; hence ``slow``.
"""

from __future__ import annotations

import http.server
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fhir_devtools import es_node
from fhir_server.context import ServerContext
from fhir_server.index.client import connection_options, es_client
from fhir_server.settings import Settings
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server
from tests.security.support import create_as

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get("FHIR_ES_URL")), reason="an external cluster is configured"),
]

USER = "fhir-operator"
PASSWORD = "pw-" + uuid.uuid4().hex
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secured_url() -> Iterator[str]:
    """A node of our own with security on; its data dir outside pytest's tmp (see test_es_node)."""
    data_dir = Path(tempfile.mkdtemp(prefix="fhir-es-secured-test-"))
    settings = Settings(es_username=USER, es_password=PASSWORD)  # type: ignore[arg-type]
    cfg = es_node.NodeConfig.from_settings(settings, port=es_node.free_port(), data_dir=data_dir, name="secured")
    assert cfg.secured and PASSWORD not in repr(cfg)
    try:
        yield es_node.start(cfg, timeout=180)
    finally:
        es_node.stop(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


def _secured_settings(url: str, workdir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"es_username": USER, "es_password": PASSWORD, "metrics_token": METRICS_TOKEN}
    values.update(overrides)
    return make_settings(url, workdir, **values)


def _anonymous_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/_cluster/health", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _secrets_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def _write_and_search(srv: RunningServer) -> None:
    family = f"Secured{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=srv.base_url, timeout=30) as fhir:
        id_ = create_as(fhir, {"resourceType": "Patient", "name": [{"family": family}]})
        found = fhir.get("/Patient", params={"family": family})
    assert found.status_code == 200, found.text
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [id_]


def test_the_node_refuses_anonymous_requests(secured_url: str) -> None:
    assert _anonymous_status(secured_url) == 401


def test_server_with_basic_auth_writes_searches_and_leaks_no_password(
        secured_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with start_server(_secured_settings(secured_url, tmp_path)) as srv:
        _write_and_search(srv)
        with httpx.Client(base_url=srv.base_url.removesuffix("/fhir"), timeout=30) as http:
            ready = http.get("/readyz")
            metrics = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ready.status_code == 200, ready.text
    assert metrics.status_code == 200
    _secrets_absent(metrics.text, PASSWORD)
    _secrets_absent(caplog.text, PASSWORD)


def test_api_key_wiring_against_a_stub(tmp_path: Path) -> None:
    """A WIRING test, not a substitute for a cluster: this distribution cannot mint API keys (creating the
    ``.security`` index fails: "Unknown filter type [pattern_capture] for [email]", no analysis-common module),
    so a stub that refuses everything records what the server's start sends: the key, as ``ApiKey``."""
    key = "a2V5LWlkOmtleS1zZWNyZXQ="  # base64 "key-id:key-secret", the "encoded" form Elasticsearch returns
    seen: list[str | None] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b'{"error":{"type":"security_exception","reason":"unable to authenticate"},"status":401}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_address[1]}"
    try:
        settings = make_settings(url, tmp_path, es_api_key=key, es_username=USER, es_password=PASSWORD)
        with pytest.raises(RuntimeError, match="refused the credentials"):
            ServerContext.build(settings, url, start_indexer=False)
    finally:
        stub.shutdown()
        stub.server_close()
    assert seen and set(seen) == {f"ApiKey {key}"}  # the key wins over a user and password


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's exit(3)
def test_a_wrong_password_stops_the_start_with_a_clear_error(secured_url: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    settings = _secured_settings(secured_url, tmp_path, es_password=wrong)
    with pytest.raises(RuntimeError) as refused:
        ServerContext.build(settings, secured_url, start_indexer=False)
    message = str(refused.value)
    assert "refused the credentials (401" in message and "FHIR_ES_PASSWORD" in message
    _secrets_absent(message, wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuntimeError, match="failed to start"):
        start_server(settings)
    stderr = capfd.readouterr().err  # uvicorn's "Application startup failed", as the operator sees it
    assert "refused the credentials (401" in stderr
    _secrets_absent(stderr + caplog.text, wrong)


def test_readyz_reports_refused_credentials_once_serving(secured_url: str, tmp_path: Path) -> None:
    """A password changed (or a key revoked) while serving: /readyz says so rather than "unreachable"."""
    with start_server(_secured_settings(secured_url, tmp_path)) as srv:
        ctx = srv.ctx
        live = ctx.es
        changed = srv.settings.model_copy(update={"es_password": SecretStr("stale")})
        stale = es_client(changed, secured_url, max_retries=0)
        ctx.es = stale
        try:
            with httpx.Client(base_url=srv.base_url.removesuffix("/fhir"), timeout=30) as http:
                ready = http.get("/readyz")
        finally:
            ctx.es = live
            stale.close()
    assert ready.status_code == 503
    es_issue = next(i for i in ready.json()["issue"] if i["details"]["text"].startswith("elasticsearch"))
    assert es_issue["severity"] == "error" and "credentials refused (401)" in es_issue["diagnostics"]


def test_every_client_option_comes_from_the_settings(tmp_path: Path) -> None:
    """The options themselves (no cluster needed): API key wins over a user, TLS options pass through."""
    ca = tmp_path / "ca.pem"
    both = Settings(es_api_key="k", es_username="u", es_password="p", es_ca_certs=ca,  # type: ignore[arg-type]
                    es_verify_certs=False)
    assert connection_options(both) == {"api_key": "k", "ca_certs": str(ca), "verify_certs": False,
                                        "ssl_show_warn": False}
    basic = Settings(es_username="u", es_password="p")  # type: ignore[arg-type]
    assert connection_options(basic) == {"basic_auth": ("u", "p")}
    assert connection_options(Settings()) == {}
    assert "p" not in repr(basic.es_password)
