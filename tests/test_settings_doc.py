"""``docs/configuration.md`` is generated from the settings model: it cannot drift from the code, and no setting
goes undocumented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fhir_devtools import settings_doc
from fhir_server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_reference_is_the_generators_output() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == settings_doc.render(), "run: python -m fhir_devtools.settings_doc"


def test_every_setting_has_a_description_and_a_row() -> None:
    text = settings_doc.render()
    rows = [line for line in text.splitlines() if line.startswith("| `FHIR_")]
    assert len(rows) == len(Settings.model_fields)
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no Field(description=...)"
        assert f"| `FHIR_{name.upper()}` |" in text


def test_the_reference_names_no_machine_specific_path() -> None:
    """The managed node's home defaults under the user's home: written ``~``, so the file is the same everywhere."""
    text = settings_doc.render()
    assert str(Path.home()) not in text
    assert "| `FHIR_ES_HOME` | Path | `~/.cache/fhir-server` |" in text


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(settings_doc, "OUTPUT", stale)
    assert settings_doc.main(["--check"]) == 1
    assert settings_doc.main([]) == 0
    assert settings_doc.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == settings_doc.render()


def test_the_module_runs_as_a_command() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "fhir_devtools.settings_doc", "--check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
