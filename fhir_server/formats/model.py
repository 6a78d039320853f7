"""The R4 element table (generated from the StructureDefinitions) as lookups the JSON/XML converters need.

JSON and XML carry the same content but XML has no types: which elements repeat, which primitives are JSON
booleans or numbers, which element name is which choice type, and in which order elements must be written all
come from the definitions (xml.html, json.html). The table is ``definitions/r4-elements.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"

PRIMITIVE = "p"
COMPLEX = "c"
CHOICE = "x"
RESOURCE = "r"
XHTML = "h"
ATTRIBUTE = "a"


@dataclass(frozen=True, slots=True)
class Child:
    """One child element of a type or backbone element, as declared in its definition."""

    name: str  # without ``[x]``
    many: bool  # max > 1: a JSON array
    kind: str  # PRIMITIVE, COMPLEX, CHOICE, RESOURCE, XHTML or ATTRIBUTE
    types: tuple[str, ...]  # type codes; for a backbone element its path, the key of its own TypeInfo


@dataclass(frozen=True, slots=True)
class Member:
    """A concrete element name (``valueQuantity``, ``given``) resolved to its child and single type."""

    child: Child
    type: str
    primitive: bool
    order: int  # position of the child in the definition: the XML order


@dataclass(frozen=True, slots=True)
class TypeInfo:
    key: str
    children: tuple[Child, ...]
    members: dict[str, Member]  # element name (XML) == property name (JSON) -> member
    attributes: frozenset[str]  # children written as XML attributes: ``id`` of elements, ``url`` of Extension


def choice_name(base: str, type_code: str) -> str:
    """``value`` + ``dateTime`` -> ``valueDateTime`` (json.html#choice)."""
    return base + type_code[0].upper() + type_code[1:]


@cache
def _table() -> dict[str, Any]:
    data = resources.files("fhir_server.formats").joinpath("definitions/r4-elements.json").read_bytes()
    table: dict[str, Any] = orjson.loads(data)
    return table


def primitive_kinds() -> dict[str, str]:
    """Primitive type code -> JSON kind (``boolean``, ``integer``, ``decimal`` or ``string``)."""
    kinds: dict[str, str] = _table()["primitives"]
    return kinds


@cache
def resource_types() -> frozenset[str]:
    return frozenset(_table()["resources"])


@cache
def type_info(key: str) -> TypeInfo | None:
    """The children of a datatype, a resource type or a backbone element path; None if unknown."""
    raw = _table()["types"].get(key)
    if raw is None:
        return None
    prims = primitive_kinds()
    children = tuple(Child(name, many, kind, tuple(types)) for name, many, kind, types in raw)
    members: dict[str, Member] = {}
    attributes = set()
    for order, child in enumerate(children):
        if child.kind == ATTRIBUTE:
            attributes.add(child.name)
        elif child.kind == CHOICE:
            for code in child.types:
                members[choice_name(child.name, code)] = Member(child, code, code in prims, order)
        else:
            members[child.name] = Member(child, child.types[0], child.kind == PRIMITIVE, order)
    return TypeInfo(key, children, members, frozenset(attributes))
