"""Interoperability: the server driven by fhir-kit-client, a JavaScript FHIR client, in Node.

``tests/interop/js`` pins fhir-kit-client in a committed package-lock.json; the session installs it with ``npm ci``
into ``tests/interop/js/node_modules`` (kept between runs, reinstalled when the lockfile changes), then
``node scenario.mjs`` runs every step against a real server over HTTP (JSON, the library's only format).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RunningServer
from tests.interop import Steps, failed, ok, parse_steps, require_tool, run_checked, server_errors

PROJECT = Path(__file__).parent / "interop" / "js"
INSTALLED = PROJECT / "node_modules" / ".package-lock.json"  # written by npm ci: what is installed
MIN_NODE = 20  # fhir-kit-client 2.x declares node >= 20
INSTALL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120
STEPS = ("capabilities", "create", "conditional_create_existing", "conditional_create_new", "read", "update",
         "conditional_update", "vread", "search_identifier", "search_name", "search_post", "transaction", "history",
         "delete", "read_deleted", "search_deleted")
SYSTEM = "urn:oid:1.2.250.1.213.1.4.11"  # scenario.mjs SYSTEM
RUN = "r" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def node_command() -> list[str]:
    """``node scenario.mjs``, after ``npm ci`` when node_modules is missing or older than the lockfile."""
    node = require_tool("node", f"Node.js >= {MIN_NODE} runs the fhir-kit-client scenario")
    npm = require_tool("npm", "npm installs fhir-kit-client")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE:
        message = f"Node.js {version} found, fhir-kit-client needs >= {MIN_NODE}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    lock = PROJECT / "package-lock.json"
    if not INSTALLED.exists() or INSTALLED.stat().st_mtime < lock.stat().st_mtime:
        run_checked([npm, "ci", "--no-audit", "--no-fund"], PROJECT, INSTALL_TIMEOUT_S,
                    "npm ci in tests/interop/js")
    return [node, "scenario.mjs"]


@pytest.fixture(scope="module")
def steps(server: RunningServer, node_command: list[str]) -> Iterator[Steps]:
    out = run_checked([*node_command, server.base_url, RUN], PROJECT, RUN_TIMEOUT_S, "the fhir-kit-client scenario")
    yield parse_steps(out)


def test_every_step_ran_and_no_server_error(steps: Steps) -> None:
    assert set(steps) == {("json", step) for step in STEPS}
    assert server_errors(steps) == []


def test_capabilities(steps: Steps) -> None:
    line = ok(steps, "json", "capabilities")
    assert line["fhirVersion"] == "4.0.1"
    assert {"Patient", "Immunization"} <= set(line["types"])


def test_create_read_update_vread(steps: Steps) -> None:
    created = ok(steps, "json", "create")
    assert created["status"] == 201
    assert created["version"] == "1"

    read = ok(steps, "json", "read")
    assert read["id"] == created["id"]
    assert read["version"] == "1"
    assert read["family"] == f"Kit{RUN}"
    assert read["given"] == ["Zoé"]
    assert read["identifier"] == [{"system": SYSTEM, "value": f"js-{RUN}"}]
    assert read["lastUpdated"]

    updated = ok(steps, "json", "update")
    assert (updated["status"], updated["id"], updated["version"], updated["gender"]) == \
        (200, created["id"], "2", "male")

    v1 = ok(steps, "json", "vread")
    assert (v1["version"], v1["gender"]) == ("1", "female")


def test_conditional_create_and_update(steps: Steps) -> None:
    """fhir-kit-client passes If-None-Exist through as given (the relative ``identifier=s|v`` form)."""
    first = ok(steps, "json", "create")
    existing = ok(steps, "json", "conditional_create_existing")
    assert existing["http"][0]["if_none_exist"] == f"identifier={SYSTEM}|js-{RUN}"
    assert (existing["status"], existing["id"], existing["version"]) == (200, first["id"], "1")

    new = ok(steps, "json", "conditional_create_new")
    assert new["status"] == 201
    assert new["id"] != first["id"]

    # PUT Patient?identifier=s|v: one match, updated in place
    cond = ok(steps, "json", "conditional_update")
    assert cond["http"][-1]["method"] == "PUT" and "/Patient?identifier=" in cond["http"][-1]["url"]
    assert (cond["status"], cond["id"], cond["version"], cond["birthDate"]) == (200, first["id"], "3", "1984-03-07")


def test_search_get_post_and_paging(steps: Steps) -> None:
    first = ok(steps, "json", "create")["id"]
    second = ok(steps, "json", "conditional_create_new")["id"]

    by_ident = ok(steps, "json", "search_identifier")
    assert (by_ident["type"], by_ident["total"], by_ident["ids"]) == ("searchset", 1, [first])

    by_post = ok(steps, "json", "search_post")
    assert by_post["http"][0]["method"] == "POST" and by_post["http"][0]["url"].endswith("/Patient/_search")
    assert by_post["ids"] == [first]

    # name=zoe AND family, _count=1, followed through nextPage
    by_name = ok(steps, "json", "search_name")
    assert by_name["pages"] == 2
    assert sorted(by_name["ids"]) == sorted([first, second])


def test_transaction(steps: Steps) -> None:
    tx = ok(steps, "json", "transaction")
    assert tx["type"] == "transaction-response"
    assert tx["statuses"] == ["201 Created", "201 Created", "200 OK"]
    assert tx["imm_patient"] == f"Patient/{tx['tx_patient']}"
    assert tx["imm_search"] == [tx["imm_id"]]
    assert tx["resolved"] == tx["imm_patient"]  # client.resolve() on the rewritten reference
    first = ok(steps, "json", "create")["id"]
    assert tx["locations"][2].startswith(f"Patient/{first}/_history/")


def test_history_and_delete(steps: Steps) -> None:
    history = ok(steps, "json", "history")
    assert (history["type"], history["versions"]) == ("history", ["3", "2", "1"])

    assert ok(steps, "json", "delete")["status"] in (200, 204)
    gone = failed(steps, "json", "read_deleted")
    assert gone["status"] == 410
    assert gone["body"]["resourceType"] == "OperationOutcome"
    assert gone["body"]["issue"][0]["code"] == "deleted"
    assert ok(steps, "json", "search_deleted")["ids"] == []
