"""Tests of the managed Elasticsearch node helpers (one integration test starts a private node)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_devtools import es_node
from fhir_devtools.es_node import NodeConfig
from fhir_server.settings import Settings


def test_find_java_home_is_at_least_21() -> None:
    java_home = es_node.find_java_home()
    major = es_node._java_major(java_home)
    assert major is not None and major >= es_node.MIN_JAVA
    assert (java_home / "bin" / "java").exists()


def test_find_java_home_ignores_too_old_java_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = tmp_path / "jdk17"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "java").touch()
    (old / "release").write_text('JAVA_VERSION="17.0.15"\n')
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.delenv("ES_JAVA_HOME", raising=False)
    assert es_node.find_java_home() != old


def test_find_java_home_error_names_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ES_JAVA_HOME", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(es_node, "JVM_DIRS", (tmp_path,))
    with pytest.raises(RuntimeError, match=r"JDK >= 21"):
        es_node.find_java_home()


def test_java_major_parses_legacy_version(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").touch()
    (tmp_path / "release").write_text('JAVA_VERSION="1.8.0_402"\n')
    assert es_node._java_major(tmp_path) == 8


def test_node_config_from_settings_defaults(tmp_path: Path) -> None:
    settings = Settings(es_home=tmp_path, es_port=9299, es_version="9.2.8", es_heap="256m", es_user="u")
    cfg = NodeConfig.from_settings(settings)
    assert cfg.home == tmp_path
    assert cfg.data_dir == tmp_path / "nodes" / "default"
    assert (cfg.port, cfg.version, cfg.heap, cfg.user, cfg.name) == (9299, "9.2.8", "256m", "u", "default")
    assert cfg.url == "http://127.0.0.1:9299"


def test_node_config_from_settings_overrides(tmp_path: Path) -> None:
    settings = Settings(es_home=tmp_path)
    cfg = NodeConfig.from_settings(settings, port=1234, name="tests")
    assert cfg.data_dir == tmp_path / "nodes" / "tests"
    cfg = NodeConfig.from_settings(settings, port=1234, data_dir=tmp_path / "elsewhere", name="tests")
    assert (cfg.port, cfg.data_dir) == (1234, tmp_path / "elsewhere")


def test_status_of_never_started_node(tmp_path: Path) -> None:
    cfg = NodeConfig.from_settings(Settings(es_home=tmp_path), port=es_node.free_port(), data_dir=tmp_path)
    assert es_node.status(cfg)["running"] is False
    es_node.stop(cfg)  # stopping a stopped node is a no-op


@pytest.fixture
def private_node() -> Iterator[NodeConfig]:
    """A throw-away node on a free port; the distribution itself comes from the shared cache.

    Its data dir is not under pytest's tmp_path: pytest resets ``/tmp/pytest-of-<user>`` to 0700 when
    another session starts, which would lock the node's (non-root) user out of its own directory.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="fhir-es-node-test-"))
    cfg = NodeConfig.from_settings(Settings(), port=es_node.free_port(), data_dir=data_dir, name="test-es-node")
    try:
        yield cfg
    finally:
        es_node.stop(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get("FHIR_ES_URL")), reason="an external cluster is configured; no managed node"
)
def test_started_node_reports_running(private_node: NodeConfig) -> None:
    url = es_node.start(private_node, timeout=90)
    assert url == private_node.url
    st = es_node.status(private_node)
    assert st["running"] is True
    assert st["health"] in ("yellow", "green")
    assert st["url"] == url
    pid = st["pid"]
    assert es_node.start(private_node) == url  # idempotent: same node, no second process
    assert es_node.status(private_node)["pid"] == pid
    es_node.stop(private_node)
    assert es_node.status(private_node)["running"] is False
