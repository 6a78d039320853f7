"""Import rules between the packages, read from the source (no import is executed).

``fhir_common`` is the leaf every package may use; ``search`` and ``profiles`` never import ``fhir_server``;
fhirpathpy is called through one adapter; XML from clients is parsed by one hardened parser. Inside
``fhir_server`` the layers only look down (docs/architecture.md): no import cycle, no private name imported
from another module. ``make lint`` runs this file."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fhir_common", "fhir_server", "profiles", "search")
BUILD_TOOLS = ("fhir_common/definitions", "profiles/tools")  # offline generators reading trusted files


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
    bad = [(f, m) for f, m in _imports() if f.startswith(("search/", "profiles/")) and _within(m, "fhir_server")]
    assert bad == []
    assert [(f, m) for f, m in _imports() if f.startswith("search/") and _within(m, "profiles")] == []


def _layer_imports(layer: str) -> set[tuple[str, str]]:
    """(module of ``layer``, what it imports) for every import, lazy ones included."""
    return {(a, b) for a, b, _ in _edges() if _within(a, layer)} | {
        (f, m) for f, m in _imports() if _within(f.removesuffix(".py").replace("/", "."), layer)}


def test_interactions_import_neither_the_http_layer_nor_the_audit_trail() -> None:
    """The interactions run the same for HTTP, a Bundle entry or the loader; the audit trail plugs in through
    the type registry (``ResourceType.store``), so it is never reached by name from below."""
    assert {(a, b) for a, b in _layer_imports("fhir_server.interactions")
            if _within(b, "fhir_server.api", "fhir_server.audit", "fhir_server.app", "starlette")} == set()


def test_storage_knows_nothing_of_http_or_the_layers_above() -> None:
    assert {(a, b) for a, b in _layer_imports("fhir_server.storage")
            if _within(b, "starlette", "fhir_server.interactions", "fhir_server.api", "fhir_server.security",
                       "fhir_server.audit", "fhir_server.app")} == set()


def test_security_does_not_import_the_interactions() -> None:
    """The access policy sits below the interactions: they call it (``EntryAccess``), the HTTP layer wires it
    (the search it runs for a Bundle entry is passed in)."""
    assert {(a, b) for a, b in _layer_imports("fhir_server.security")
            if _within(b, "fhir_server.interactions", "fhir_server.api", "fhir_server.app")} == set()


def test_fhirpathpy_is_called_through_one_adapter() -> None:
    assert {f for f, m in _imports() if _within(m, "fhirpathpy")} == {"fhir_common/fhirpath.py"}


def test_client_xml_is_parsed_by_the_hardened_parser_only() -> None:
    users = {f for f, m in _imports() if _within(m, "xml.etree", "xml.dom", "xml.sax", "lxml")
             and not f.startswith(BUILD_TOOLS)}
    assert users == set()


# -- the module graph of fhir_server -----------------------------------------------------------------------

def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(node: ast.AST, base: str, modules: dict[str, Path]) -> Iterator[tuple[str, str | None]]:
    """(imported module, imported name or None) for the imports under ``node``; ``base``: the package that
    relative imports start from."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            continue
        if isinstance(child, ast.Import):
            yield from ((a.name, None) for a in child.names if a.name in modules)
        elif isinstance(child, ast.ImportFrom):
            parts = base.split(".")
            source = ".".join([*parts[:len(parts) - child.level + 1], child.module or ""]).strip(".") \
                if child.level else child.module or ""
            for alias in child.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    yield sub, None
                elif source in modules:
                    yield source, alias.name
        yield from _imported(child, base, modules)


def _edges() -> Iterator[tuple[str, str, str | None]]:
    """(importer, imported module, imported name or None) for every runtime import between the packages'
    modules, relative ones resolved, lazy ones (inside functions) included: a function-level import breaks
    an import-time loop, not the dependency. Imports under ``TYPE_CHECKING`` are annotations only."""
    modules = _modules()
    for module, path in modules.items():
        base = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        yield from ((module, b, n) for b, n in _imported(tree, base, modules) if b != module)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_fhir_server_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _ in _edges():
        if a.startswith("fhir_server") and b.startswith("fhir_server"):
            graph.setdefault(a, set()).add(b)
    assert _cycles(graph) == []


def test_no_private_name_is_imported_across_modules() -> None:
    """A ``_name`` is its module's own: another module needing it means it is public (renamed) or misplaced."""
    assert [(a, b, n) for a, b, n in _edges() if a.startswith("fhir_server") and n is not None
            and n.startswith("_") and not n.startswith("__")] == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_interactions_have_no_audit_event_branch() -> None:
    """AuditEvent is served by the store the audit package plugs into the type registry: no interaction, nor
    the routes, compares a type with its name (policy-specific rules stay in security)."""
    named = set()
    for path in [*(ROOT / "fhir_server/interactions").rglob("*.py"), ROOT / "fhir_server/api/routes.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "AuditEvent":
                named.add(path.relative_to(ROOT).as_posix())
    assert named == set()


def test_exceptions_become_answers_in_one_place() -> None:
    """No exception handler builds an answer itself: it hands the exception to ``exception_response``
    (fhir_server/api/responses.py), the one place a failure becomes an HTTP answer."""
    builders = []
    for path in (ROOT / "fhir_server").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        for handler in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(handler, ast.ExceptHandler) or rel == "fhir_server/api/responses.py":
                continue
            for call in ast.walk(handler):
                func = getattr(call, "func", None)
                name = getattr(func, "id", None) or getattr(func, "attr", None) or ""
                if isinstance(call, ast.Call) and name.endswith("_response") and name != "exception_response":
                    builders.append((rel, call.lineno, name))
    assert builders == []


def test_development_tooling_stays_out_of_the_runtime_package() -> None:
    """The managed Elasticsearch node (Maven, a JVM, ``setpriv``) is ``fhir_devtools``: the runtime package only
    reaches it from the CLI, for ``serve``/``es`` without ``FHIR_ES_URL``."""
    assert sorted({f for f, m in _imports() if _within(m, "fhir_devtools")}) == ["fhir_server/cli.py"]
    tooling = [rel for p in sorted((ROOT / "fhir_server").rglob("*.py"))
               if not (rel := p.relative_to(ROOT).as_posix()).startswith(BUILD_TOOLS)
               and any(word in p.read_text(encoding="utf-8") for word in ("setpriv", "mvn ", "dependency:copy"))]
    assert tooling == []
