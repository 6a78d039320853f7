"""Interoperability: the server driven by the HAPI FHIR generic client (Java), built with Maven.

``tests/interop/hapi`` is a small Maven project (HAPI FHIR 8.8.0 client and R4 structures). The session compiles it
once (the first build on a machine downloads the jars into ~/.m2), then one JVM runs ``interop.Scenario`` against a
real server three times: with HAPI's defaults (JSON bodies, an Accept naming XML and JSON, no ``_format``), with
``setEncoding(JSON)`` and with ``setEncoding(XML)`` (``_format`` on every URL, XML bodies both ways). HAPI parses
every answer with its R4 model classes, so each step is also a conformance check of what the server returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RunningServer
from tests.interop import Steps, failed, ok, parse_steps, require_tool, run_checked, server_errors

PROJECT = Path(__file__).parent / "interop" / "hapi"
CLASSPATH_FILE = PROJECT / "target" / "classpath.txt"
BUILD_TIMEOUT_S = 900  # a first build downloads ~60 jars
RUN_TIMEOUT_S = 300
ENCODINGS = ("default", "json", "xml")
STEPS = ("capabilities", "create", "create_second", "conditional_create_existing", "conditional_create_new",
         "conditional_create_string", "read", "update", "vread", "search_identifier", "search_name", "transaction",
         "conditional_update", "patch_json", "patch_fhirpath", "search_count", "conditional_delete", "history",
         "delete", "read_deleted", "search_deleted")
RUN = "r" + uuid.uuid4().hex[:10]
SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"  # Scenario.SYSTEM
MEDIA = {"json": "application/fhir+json", "xml": "application/fhir+xml"}


@pytest.fixture(scope="session")
def hapi_command() -> list[str]:
    """``java -cp ... interop.Scenario``, after compiling the project and resolving its classpath with Maven."""
    mvn = require_tool("mvn", "Maven builds the HAPI FHIR client scenario")
    java = require_tool("java", "a JDK >= 17 runs the HAPI FHIR client")
    run_checked([mvn, "-q", "-B", "compile", "dependency:build-classpath", f"-Dmdep.outputFile={CLASSPATH_FILE}"],
                PROJECT, BUILD_TIMEOUT_S, "building tests/interop/hapi with Maven")
    classpath = f"{PROJECT / 'target' / 'classes'}:{CLASSPATH_FILE.read_text().strip()}"
    return [java, "-cp", classpath, "interop.Scenario"]


@pytest.fixture(scope="module")
def steps(server: RunningServer, hapi_command: list[str]) -> Iterator[Steps]:
    out = run_checked([*hapi_command, server.base_url, RUN], PROJECT, RUN_TIMEOUT_S, "the HAPI scenario")
    yield parse_steps(out)


def test_every_step_ran_and_no_server_error(steps: Steps) -> None:
    assert set(steps) == {(enc, step) for enc in ENCODINGS for step in STEPS}
    assert server_errors(steps) == []


@pytest.mark.parametrize("enc", ENCODINGS)
def test_capabilities_parse_as_r4(steps: Steps, enc: str) -> None:
    line = ok(steps, enc, "capabilities")
    assert line["fhirVersion"] == "4.0.1"
    assert {"Patient", "Immunization"} <= set(line["types"])


@pytest.mark.parametrize("enc", ("json", "xml"))
def test_format_asked_is_the_format_answered(steps: Steps, enc: str) -> None:
    """With setEncoding HAPI adds ``_format`` to the URLs it builds (and an Accept of that format to every request);
    every answer with a body must come in that format, the pages it reaches through ``next`` links included (the
    server's links keep the search parameters but not ``_format``; HAPI's Accept still asks the format)."""
    for (e, step), line in steps.items():
        if e != enc:
            continue
        for x in line["http"]:
            if "_cursor=" not in x["url"]:
                assert f"_format={enc}" in x["url"], (step, x)
            if x["status"] != 204:
                assert x["response_type"] == MEDIA[enc], (step, x)


def test_default_client_negotiates_by_accept(steps: Steps) -> None:
    """HAPI's default Accept ranks XML and JSON equally: any answer is fine as long as HAPI parsed it (ok)."""
    read = ok(steps, "default", "read")
    (x,) = read["http"]
    assert "_format" not in x["url"]
    assert x["response_type"] in MEDIA.values()


@pytest.mark.parametrize("enc", ENCODINGS)
def test_create_read_update_vread(steps: Steps, enc: str) -> None:
    created = ok(steps, enc, "create")
    assert created["created"] is True
    assert created["version"] == "1"
    assert created["resource_id"] == created["id"]  # HAPI parsed the returned body
    assert created["http"][0]["status"] == 201

    read = ok(steps, enc, "read")
    assert read["id"] == created["id"]
    assert read["version"] == "1"
    assert read["family"] == f"Hapi{enc.capitalize()}{RUN}"
    assert read["given"] == "Zoé"
    assert read["identifier"] == f"{SYSTEM}|{enc}-{RUN}"
    assert read["lastUpdated"] is True

    updated = ok(steps, enc, "update")
    assert updated["id"] == created["id"]
    assert updated["version"] == "2"
    assert updated["read_version"] == "2"
    assert updated["gender"] == "male"

    v1 = ok(steps, enc, "vread")
    assert v1["version"] == "1"
    assert v1["gender"] == "female"


@pytest.mark.parametrize("enc", ENCODINGS)
def test_conditional_create_with_absolute_if_none_exist(steps: Steps, enc: str, server: RunningServer) -> None:
    """HAPI sends ``If-None-Exist`` as an absolute URL, ``[base]/Patient?identifier=...`` (with ``_format`` when
    an encoding is set), even when given the relative ``Patient?identifier=...`` (conditionalByUrl).

    Expected per http.html#ccreate: an existing match answers 200 with it, no match creates (201). Needs the
    server to accept the absolute form of the header (branch conditional-forms): before that it answers 400
    "unknown search parameter http://.../fhir/Patient?identifier".
    """
    first = ok(steps, enc, "create")
    for step in ("conditional_create_existing", "conditional_create_string"):
        header = steps[(enc, step)]["http"][0].get("if_none_exist", "")
        assert header.startswith(f"{server.base_url}/Patient?"), header
        assert "identifier=" in header
        line = ok(steps, enc, step)
        assert line["id"] == first["id"], f"{step} created a duplicate"
        assert line["created"] is not True
        assert line["http"][0]["status"] == 200

    new = ok(steps, enc, "conditional_create_new")
    assert new["created"] is True
    assert new["id"] != first["id"]
    assert new["http"][0]["status"] == 201


@pytest.mark.parametrize("enc", ENCODINGS)
def test_search_by_identifier_and_name_with_paging(steps: Steps, enc: str) -> None:
    first = ok(steps, enc, "create")["id"]
    second = ok(steps, enc, "create_second")["id"]

    by_ident = ok(steps, enc, "search_identifier")
    assert by_ident["type"] == "searchset"
    assert by_ident["total"] == 1
    assert by_ident["ids"] == [first]

    # name=zoe (accent- and case-insensitive) AND family, _sort=identifier, _count=1: two pages through `next`
    by_name = ok(steps, enc, "search_name")
    assert by_name["first_page"] == 1
    assert by_name["pages"] == 2
    assert by_name["ids"] == [first, second]


@pytest.mark.parametrize("enc", ENCODINGS)
def test_transaction(steps: Steps, enc: str) -> None:
    tx = ok(steps, enc, "transaction")
    assert tx["type"] == "transaction-response"
    # POST Patient (urn:uuid), POST Immunization referencing it, POST Patient with ifNoneExist matching `create`
    assert tx["statuses"] == ["201 Created", "201 Created", "200 OK"]
    assert tx["imm_patient"] == f"Patient/{tx['tx_patient']}"  # urn:uuid rewritten
    assert tx["imm_search"] == [tx["imm_id"]]
    first = ok(steps, enc, "create")["id"]
    assert tx["locations"][2].startswith(f"Patient/{first}/_history/")


@pytest.mark.parametrize("enc", ENCODINGS)
def test_conditional_update_patch_count_conditional_delete(steps: Steps, enc: str) -> None:
    """On the second patient: PUT Patient?identifier=.., JSON Patch, FHIRPath Patch (Parameters, in the client's
    format), ``_summary=count``, DELETE Patient?identifier=..."""
    second = ok(steps, enc, "create_second")["id"]
    cond = ok(steps, enc, "conditional_update")
    assert "/Patient?identifier=" in cond["http"][0]["url"]
    assert (cond["id"], cond["version"], cond["resource_version"]) == (second, "2", "2")

    json_patch = ok(steps, enc, "patch_json")
    assert (json_patch["id"], json_patch["version"], json_patch["gender"]) == (second, "3", "other")
    fhirpath_patch = ok(steps, enc, "patch_fhirpath")
    assert (fhirpath_patch["version"], fhirpath_patch["birthDate"], fhirpath_patch["gender"]) == \
        ("4", "1990-01-02", "other")

    # the family prefix matches `create`, `create_second` and the transaction's patient
    count = ok(steps, enc, "search_count")
    assert (count["total"], count["entries"]) == (3, 0)

    deleted = ok(steps, enc, "conditional_delete")
    assert deleted["http"][0]["method"] == "DELETE" and deleted["http"][0]["status"] in (200, 204)
    assert deleted["ids_after"] == []


@pytest.mark.parametrize("enc", ENCODINGS)
def test_history_and_delete(steps: Steps, enc: str) -> None:
    history = ok(steps, enc, "history")
    assert history["type"] == "history"
    assert history["versions"] == ["2", "1"]

    deleted = ok(steps, enc, "delete")
    assert deleted["http"][0]["status"] in (200, 204)

    gone = failed(steps, enc, "read_deleted")
    assert gone["class"] == "ResourceGoneException"
    assert gone["status"] == 410
    assert ok(steps, enc, "search_deleted")["ids"] == []
