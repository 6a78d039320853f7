"""Import rules between the packages, read from the source (no import is executed).

``fhir_common`` is the leaf every package may use; ``search`` and ``profiles`` never import ``fhir_server`` (the
one exception, ``profiles`` → ``fhir_server.errors`` for ``Issue``, predates this rule and is a leaf of
dataclasses); fhirpathpy is called through one adapter; XML from clients is parsed by one hardened parser."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fhir_common", "fhir_server", "profiles", "search")
BUILD_TOOLS = ("fhir_server/formats/definitions", "profiles/tools")  # offline generators reading trusted files


def _imports() -> Iterator[tuple[str, str]]:
    """(module file relative to the root, absolute module it imports) for every import of the packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    yield from ((rel, alias.name) for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield rel, node.module


def _within(module: str, *roots: str) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def test_the_shared_leaf_imports_none_of_the_packages() -> None:
    assert [(f, m) for f, m in _imports()
            if f.startswith("fhir_common/") and _within(m, "fhir_server", "profiles", "search")] == []


def test_search_and_profiles_do_not_import_the_server() -> None:
    bad = [(f, m) for f, m in _imports() if f.startswith(("search/", "profiles/")) and _within(m, "fhir_server")
           and m != "fhir_server.errors"]
    assert bad == []
    assert [(f, m) for f, m in _imports() if f.startswith("search/") and _within(m, "profiles")] == []


def test_fhirpathpy_is_called_through_one_adapter() -> None:
    assert {f for f, m in _imports() if _within(m, "fhirpathpy")} == {"fhir_common/fhirpath.py"}


def test_client_xml_is_parsed_by_the_hardened_parser_only() -> None:
    users = {f for f, m in _imports() if _within(m, "xml.etree", "xml.dom", "xml.sax", "lxml")
             and not f.startswith(BUILD_TOOLS)}
    assert users == set()


def test_development_tooling_stays_out_of_the_runtime_package() -> None:
    """The managed Elasticsearch node (Maven, a JVM, ``setpriv``) is ``fhir_devtools``: the runtime package only
    reaches it from the CLI, for ``serve``/``es`` without ``FHIR_ES_URL``."""
    assert sorted({f for f, m in _imports() if _within(m, "fhir_devtools")}) == ["fhir_server/cli.py"]
    tooling = [rel for p in sorted((ROOT / "fhir_server").rglob("*.py"))
               if not (rel := p.relative_to(ROOT).as_posix()).startswith(BUILD_TOOLS)
               and any(word in p.read_text(encoding="utf-8") for word in ("setpriv", "mvn ", "dependency:copy"))]
    assert tooling == []
