"""The R4 (4.0.1) model, one copy for every layer: XML conversion, validation, ``_summary``.

The data is ``definitions/r4-model.json.gz``, generated from the official StructureDefinitions by
``definitions/build.py`` (see there for the short keys). It is read once per process, on first use, and each type's
elements are turned into :class:`ElementDef` records only when that type is first asked for. fhirpathpy keeps its own
bundled model for FHIRPath type resolution (``fhirpath.py``); this module is the model of everything else.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

__all__ = ["ElementDef", "TypeDef", "children", "codesystems", "element", "extensions", "primitive_json_kinds",
           "resource_types", "type_def", "type_names", "validated_types", "valuesets"]

#: JSON representation of the primitives that are not JSON strings (json.html#primitive).
_JSON_KIND = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer",
              "decimal": "decimal"}


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One snapshot element, with what conversion, validation and ``_summary`` read."""

    path: str  # ``Patient.deceased[x]``
    min: int
    max: int | None  # None = unbounded (``*``)
    types: tuple[str, ...]  # type codes, in definition order (System types as their FHIR type)
    targets: tuple[str, ...] = ()  # target profiles of Reference/canonical types, short names for core ones
    content_ref: str | None = None  # path whose definition this element reuses (``Questionnaire.item.item``)
    binding: tuple[str, str] | None = None  # (strength, value set url without version)
    constraints: tuple[tuple[str, str, str, str], ...] = ()  # (key, severity, human, FHIRPath); ele-1 left out
    fixed: tuple[str, Any] | None = None  # (type suffix, value)
    pattern: tuple[str, Any] | None = None
    modifier: bool = False
    summary: bool = False
    xml_attr: bool = False  # written as an XML attribute (``Element.id``, ``Extension.url``)
    slice_name: str | None = None
    id: str | None = None  # element id, kept only when it names a slice (``Extension.extension:foo``)

    @property
    def name(self) -> str:
        """The JSON/XML name, choice stem for a choice element (``deceased``)."""
        return self.path.rsplit(".", 1)[-1].removesuffix("[x]")

    @property
    def choice(self) -> bool:
        return self.path.endswith("[x]")

    @property
    def many(self) -> bool:
        """A JSON array: max other than 0 or 1."""
        return self.max is None or self.max > 1

    @property
    def sliced(self) -> bool:
        return self.slice_name is not None or (self.id is not None and ":" in self.id)


@dataclass(frozen=True, slots=True)
class TypeDef:
    name: str
    kind: str  # primitive-type, complex-type or resource
    abstract: bool
    base: str  # short name of the base type, "" for Base/Element roots
    regex: str | None  # primitives: the regex of their value
    elements: tuple[ElementDef, ...]  # snapshot order (the XML order), the root element first
    children: Mapping[str, tuple[ElementDef, ...]]  # path -> its direct children in order (unsliced)


@cache
def _raw() -> dict[str, Any]:
    data = resources.files("fhir_common").joinpath("definitions/r4-model.json.gz").read_bytes()
    raw: dict[str, Any] = orjson.loads(gzip.decompress(data))
    return raw


def _element(el: Mapping[str, Any]) -> ElementDef:
    return ElementDef(
        path=el["p"], min=el["n"], max=None if el["x"] == "*" else int(el["x"]),
        types=tuple(t[0] for t in el.get("t", ())),
        targets=tuple(sorted({x for t in el.get("t", ()) if len(t) > 1 for x in t[1]})),
        content_ref=el.get("cr"),
        binding=(el["b"][0], el["b"][1]) if "b" in el else None,
        constraints=tuple((c[0], c[1], c[2], c[3]) for c in el.get("c", ())),
        fixed=(el["f"][0], el["f"][1]) if "f" in el else None,
        pattern=(el["pt"][0], el["pt"][1]) if "pt" in el else None,
        modifier=bool(el.get("m")), summary=bool(el.get("sum")), xml_attr=bool(el.get("xa")),
        slice_name=el.get("s"), id=el.get("id"))


@cache
def type_def(name: str) -> TypeDef | None:
    """A primitive, complex or resource type by name (abstract ones included); None if R4 has no such type."""
    raw = _raw()["types"].get(name)
    if raw is None:
        return None
    elements = tuple(_element(el) for el in raw["e"])
    kids: dict[str, list[ElementDef]] = {}
    for el in elements[1:]:
        if not el.sliced:
            kids.setdefault(el.path.rsplit(".", 1)[0], []).append(el)
    return TypeDef(name, raw["k"], bool(raw.get("a")), raw.get("base", ""), raw.get("re"), elements,
                   {path: tuple(els) for path, els in kids.items()})


def type_names() -> tuple[str, ...]:
    """Every R4 type name (primitives, complex types, resources, abstract ones)."""
    return tuple(_raw()["types"])


@cache
def resource_types() -> frozenset[str]:
    """The concrete resource types."""
    return frozenset(n for n, t in _raw()["types"].items() if t["k"] == "resource" and not t.get("a"))


@cache
def primitive_json_kinds() -> dict[str, str]:
    """Primitive type code -> JSON kind (``boolean``, ``integer``, ``decimal`` or ``string``)."""
    return {n: _JSON_KIND.get(n, "string") for n, t in _raw()["types"].items() if t["k"] == "primitive-type"}


def children(path: str) -> tuple[ElementDef, ...] | None:
    """The children, in order, of a type (``HumanName``) or a backbone element (``Patient.contact``); None if
    ``path`` is not an element of R4 (a primitive type has its ``id``/``extension``/``value``)."""
    typedef = type_def(path.split(".", 1)[0])
    if typedef is None or (path != typedef.name and element(path) is None):
        return None
    return typedef.children.get(path, ())


@cache
def element(path: str) -> ElementDef | None:
    """The element at a snapshot path (``Patient.contact.name``, ``Observation.value[x]``), or None."""
    typedef = type_def(path.split(".", 1)[0])
    return None if typedef is None else next((e for e in typedef.elements if e.path == path and not e.sliced), None)


def validated_types() -> tuple[str, ...]:
    """The types the validation engine compiles: the served resources and every type they reach."""
    return tuple(_raw()["validated"])


def extensions() -> dict[str, Any]:
    """Core extension definitions by url, compact (``ctx`` contexts, ``v`` value, ``sub`` sub-extensions)."""
    exts: dict[str, Any] = _raw()["extensions"]
    return exts


def valuesets() -> dict[str, dict[str, list[str]]]:
    """Expansions (``url -> system -> codes``) of the value sets bound in the validated types."""
    vs: dict[str, dict[str, list[str]]] = _raw()["valuesets"]
    return vs


def codesystems() -> dict[str, list[str]]:
    """Complete R4 code systems behind those value sets: ``url -> codes``."""
    cs: dict[str, list[str]] = _raw()["codesystems"]
    return cs
