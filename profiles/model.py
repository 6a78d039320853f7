"""Compiled validator tree: the R4 StructureDefinition snapshots (``fhir_common.r4model``) and the vendored profile
packages turned, once per process, into nodes the engine walks without looking at a definition again (JSON key →
node lookups, parsed cardinalities, compiled invariants, expanded value sets as sets)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fhir_common import r4model
from fhir_common.r4model import ElementDef

from .invariants import Invariant, compile_invariant
from .primitives import FAST, PRIMITIVES

DEFINITIONS = Path(__file__).resolve().parent / "definitions"
INLINE_TYPES = frozenset({"BackboneElement", "Element"})


@dataclass(slots=True)
class Binding:
    strength: str
    url: str
    codes: frozenset[tuple[str, str]] | None  # (system, code); None = not expandable here
    bare: frozenset[str] | None  # codes regardless of system, for the `code` datatype
    systems: frozenset[str] = frozenset()  # whole code systems included ("*" in a vendored extract)

    def has(self, system: object, code: object) -> bool:
        return (system, code) in (self.codes or ()) or system in self.systems


@dataclass(slots=True)
class Node:
    """One element of a type: its JSON name, cardinality, types and rules."""

    name: str
    path: str
    min: int
    max: int | None  # None = unbounded
    types: tuple[str, ...]
    choice: bool
    targets: tuple[str, ...] = ()
    binding: Binding | None = None
    invariants: tuple[Invariant, ...] = ()
    fixed: tuple[str, Any] | None = None
    pattern: tuple[str, Any] | None = None
    content_ref: str | None = None
    model: Model | None = None  # inline children (BackboneElement)
    checks: bool = False  # has a binding, fixed/pattern value or invariants (set by finish())
    fast: Callable[[object], bool] | None = None  # single primitive without rules: True = valid, nothing else to do

    def finish(self) -> None:
        self.checks = bool(self.binding or self.fixed or self.pattern or any(
            i.check is not None for i in self.invariants))
        self.fast = FAST.get(self.types[0]) if (
            len(self.types) == 1 and not self.choice and self.max == 1 and not self.checks) else None


@dataclass(slots=True)
class Model:
    """The children of a complex type, a resource or a backbone element."""

    type: str
    nodes: list[Node] = field(default_factory=list)
    keys: dict[str, tuple[Node, str]] = field(default_factory=dict)  # JSON key → (node, concrete type)
    invariants: tuple[Invariant, ...] = ()
    ctx: tuple[str, ...] = ()  # names an extension context may use for this element (type, bases, path)
    required: list[Node] = field(default_factory=list)  # nodes with min > 0

    def add(self, node: Node) -> None:
        self.nodes.append(node)
        if node.min > 0:
            self.required.append(node)
        if node.choice:
            for t in node.types:
                self.keys[node.name + t[0].upper() + t[1:]] = (node, t)
        else:
            self.keys[node.name] = (node, node.types[0] if node.types else "")


@dataclass(slots=True)
class ExtensionDef:
    url: str
    contexts: tuple[str, ...]
    value: Node | None  # the value[x] node (None = complex extension, no value)
    sub: dict[str, tuple[int, int | None, Node | None]]  # sub-extension url → (min, max, value node)
    invariants: tuple[Invariant, ...] = ()
    source: str = "R4"


@dataclass(slots=True)
class Definitions:
    models: dict[str, Model]
    kinds: dict[str, str]
    bases: dict[str, str]
    abstract: frozenset[str]
    extensions: dict[str, ExtensionDef]
    valuesets: dict[str, Binding]
    codesystems: dict[str, frozenset[str]] = field(default_factory=dict)  # complete R4 code systems

    def is_resource(self, type_: str) -> bool:
        return self.kinds.get(type_) == "resource" and type_ not in self.abstract


def _max(raw: str) -> int | None:
    return None if raw == "*" else int(raw)


def _binding(raw: Sequence[str] | None, valuesets: dict[str, Any]) -> Binding | None:
    if not raw:
        return None
    strength, url = raw
    vs = valuesets.get(url)
    if vs is None:
        return Binding(strength, url, None, None)
    pairs = frozenset((system, code) for system, codes in vs.items() for code in codes if code != "*")
    systems = frozenset(system for system, codes in vs.items() if "*" in codes)
    return Binding(strength, url, pairs, frozenset(c for _, c in pairs), systems)


def _node(el: ElementDef, valuesets: dict[str, Any]) -> Node:
    node = Node(
        name=el.name, path=el.path, min=el.min, max=el.max, types=el.types, choice=el.choice,
        targets=el.targets, binding=_binding(el.binding, valuesets),
        invariants=tuple(compile_invariant(*c) for c in el.constraints),
        fixed=el.fixed, pattern=el.pattern, content_ref=el.content_ref)
    node.finish()
    return node


def _compile_type(typedef: r4model.TypeDef, valuesets: dict[str, Any], registry: dict[str, Model]) -> Model:
    name, elements = typedef.name, typedef.elements
    root = Model(name, invariants=tuple(compile_invariant(*c) for c in elements[0].constraints))
    by_path: dict[str, Model] = {elements[0].path: root}
    for el in elements[1:]:
        if el.sliced:
            continue  # slices of the base types (none in R4 core resources) are not needed here
        parent = by_path.get(el.path.rsplit(".", 1)[0])
        if parent is None:
            continue
        node = _node(el, valuesets)
        if typedef.kind == "primitive-type" and node.name == "value":
            continue  # the primitive value itself is checked by primitives.py
        parent.add(node)
        if any(t in INLINE_TYPES for t in node.types) and name not in INLINE_TYPES:
            node.model = Model(f"{name}:{el.path}", invariants=node.invariants)
            node.invariants = ()
            by_path[el.path] = node.model
    registry.update(by_path)
    return root


def _extension(url: str, raw: dict[str, Any], valuesets: dict[str, Any], source: str) -> ExtensionDef:
    def value(v: dict[str, Any] | None) -> Node | None:
        if v is None:
            return None
        types = tuple(v["t"])
        targets = tuple(sorted(set(v.get("r", ())))) if v.get("r") else ()
        binding = (v["b"][0], v["b"][1]) if "b" in v else None
        return _node(ElementDef("Extension.value[x]", v["n"], 1, types, targets, binding=binding), valuesets)

    sub = {u: (s["n"], _max(s["x"]), value(s.get("v"))) for u, s in raw.get("sub", {}).items()}
    return ExtensionDef(url, tuple(raw["ctx"]), value(raw.get("v")), sub,
                        tuple(compile_invariant(*c) for c in raw.get("c", [])), source)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEFINITIONS / name).read_text(encoding="utf-8"))
    return data


@cache
def definitions() -> Definitions:
    """The compiled R4 core definitions plus the vendored profile extensions (built once per process)."""
    valuesets: dict[str, Any] = dict(r4model.valuesets())
    extra_ext: dict[str, Any] = {}
    for f in sorted(DEFINITIONS.glob("fr-*.json")):
        pkg = _load(f.name)
        valuesets.update(pkg.get("valuesets", {}))
        for url, ext in pkg.get("extensions", {}).items():
            extra_ext[url] = (ext, pkg.get("source", f.name))
    registry: dict[str, Model] = {}
    typedefs = [t for name in r4model.validated_types() if (t := r4model.type_def(name)) is not None]
    models = {t.name: _compile_type(t, valuesets, registry) for t in typedefs}
    kinds = {t.name: t.kind for t in typedefs}
    bases = {t.name: t.base for t in typedefs}

    def chain(t: str) -> tuple[str, ...]:
        out = [t]
        while bases.get(out[-1]):
            out.append(bases[out[-1]])
        return tuple(out)

    for path, model in registry.items():
        model.ctx = chain(path) if path in models else (path, "BackboneElement", "Element")
        model.invariants = tuple(i for i in model.invariants if i.check is not None)  # the engine runs the others
        for node in model.nodes:
            if node.content_ref and node.model is None:
                node.model = registry.get(node.content_ref)
            node.finish()
    extensions = {url: _extension(url, raw, valuesets, "R4") for url, raw in r4model.extensions().items()}
    for url, (raw, source) in extra_ext.items():
        extensions[url] = _extension(url, raw, valuesets, source)
    bindings = {url: b for url in valuesets if (b := _binding(["required", url], valuesets))}
    return Definitions(
        models=models,
        kinds=kinds,
        bases=bases,
        abstract=frozenset(t.name for t in typedefs if t.abstract),
        extensions=extensions,
        valuesets=bindings,
        codesystems={url: frozenset(codes) for url, codes in r4model.codesystems().items()},
    )


def is_primitive(type_code: str) -> bool:
    return type_code in PRIMITIVES
