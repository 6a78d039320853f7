"""Interoperability with clients in other languages: each runs a scenario program and prints one JSON line per step.

A line holds ``step`` (and ``enc`` for clients run in several formats), the facts its test asserts, ``http`` (every
exchange of the step: method, url, status, response type, If-None-Exist when sent) and ``error`` when the client
threw. The programs assert nothing themselves, so one failing step does not hide the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

Steps = dict[tuple[str, str], dict[str, Any]]


def require_tool(name: str, why: str) -> str:
    """Path of ``name``; missing, the test skips on a developer's machine and fails in CI, where it must run."""
    path = shutil.which(name)
    if path is None:
        missing = f"'{name}' not found on PATH: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (.ci/run installs it)")
        pytest.skip(missing)
    return path


def run_checked(cmd: list[str], cwd: Path, timeout: float, what: str) -> str:
    """Run ``cmd``; its stdout, or the test fails with the command's output (never hangs past ``timeout``)."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish within {timeout:.0f} s: {' '.join(cmd)}\n{exc.stdout!s:.3000}")
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                    f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


def parse_steps(stdout: str, default_enc: str = "json") -> Steps:
    """The scenario's lines keyed by (encoding, step); other output (logs) is ignored."""
    steps: Steps = {}
    for raw in stdout.splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            steps[(line.get("enc", default_enc), line["step"])] = line
    return steps


def ok(steps: Steps, enc: str, step: str) -> dict[str, Any]:
    """The line of a step that must have succeeded; fails with the client's error and the exchanges otherwise."""
    line = steps.get((enc, step))
    assert line is not None, f"the scenario printed no line for {enc}/{step}"
    assert "error" not in line, \
        f"{enc}/{step} failed: {json.dumps(line['error'])}\nexchanges: {json.dumps(line['http'])}"
    return line


def failed(steps: Steps, enc: str, step: str) -> dict[str, Any]:
    """The error of a step that must have failed (e.g. reading a deleted resource)."""
    line = steps[(enc, step)]
    assert "error" in line, f"{enc}/{step} was expected to fail: {json.dumps(line)}"
    error: dict[str, Any] = line["error"]
    return error


def server_errors(steps: Steps) -> list[dict[str, Any]]:
    """Every exchange answered with a 5xx (nothing a client sends may produce one)."""
    return [x for line in steps.values() for x in line["http"] if (x.get("status") or 0) >= 500]
