"""`fhir-server load` on real export folders: non-FHIR files are skipped with their reason, and every
reject names its file by its path under the folder given (issue 12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from fhir_server.context import ServerContext
from fhir_server.loader import NOT_FHIR, bulk_load, load


def _export(tmp_path: Path, shared_data: Path) -> Path:
    """A Synthea bulk export folder (Patient file + its log.ndjson) and two sub-folders holding a file of
    the same name, each with one invalid resource."""
    root = tmp_path / "export"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    src = shared_data / "synthea" / "10-patients"
    shutil.copy(src / "log.ndjson", root / "log.ndjson")
    shutil.copy(src / "Patient.000.ndjson", root / "Patient.000.ndjson")
    for sub in ("a", "b"):
        bad = {"resourceType": "Patient", "id": f"bad-{sub}", "birthDate": "not-a-date"}
        (root / sub / "same.json").write_bytes(orjson.dumps(bad))
    return root


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


@pytest.mark.parametrize("bulk", [False, True])
def test_log_lines_are_skipped_and_rejects_name_the_path(ctx: ServerContext, tmp_path: Path, shared_data: Path,
                                                         bulk: bool) -> None:
    root = _export(tmp_path, shared_data)
    report = bulk_load(ctx, [root], workers=0) if bulk else load(ctx, [root])
    assert report.loaded == _lines(root / "Patient.000.ndjson")
    assert "None" not in report.skipped and not report.skipped
    assert report.not_fhir == {("log.ndjson", NOT_FHIR): _lines(root / "log.ndjson")}
    assert sorted(source for source, _ in report.rejected) == ["a/same.json", "b/same.json"]
    assert all("Patient.birthDate" in reason for _, reason in report.rejected)


def test_cli_summary_shows_skipped_files_and_reject_paths(es_url: str, tmp_path: Path, shared_data: Path) -> None:
    root = _export(tmp_path, shared_data)
    prefix = f"tloadsrc{os.getpid()}-"
    env = {**os.environ, "FHIR_ES_URL": es_url, "FHIR_DB_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
           "FHIR_ES_INDEX_PREFIX": prefix, "COLUMNS": "200"}
    try:
        proc = subprocess.run([sys.executable, "-m", "fhir_server.cli", "load", str(root)], env=env,
                              capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert f"skipped (log.ndjson: {NOT_FHIR})" in out and "None" not in out
        assert "rejected a/same.json:" in out and "rejected b/same.json:" in out
    finally:
        es = Elasticsearch(es_url)
        es.indices.delete(index=prefix + "*", ignore_unavailable=True, allow_no_indices=True)
        es.close()
