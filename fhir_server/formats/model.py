"""The R4 element table (generated from the StructureDefinitions) as lookups the JSON/XML converters need.

JSON and XML carry the same content but XML has no types: which elements repeat, which primitives are JSON
booleans or numbers, which element name is which choice type, and in which order elements must be written all
come from the definitions (xml.html, json.html), read from the one R4 model (``fhir_common.r4model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from fhir_common import r4model

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


def primitive_kinds() -> dict[str, str]:
    """Primitive type code -> JSON kind (``boolean``, ``integer``, ``decimal`` or ``string``)."""
    return r4model.primitive_json_kinds()


def resource_types() -> frozenset[str]:
    return r4model.resource_types()


def _child(el: r4model.ElementDef, has_children: bool) -> Child:
    """How an element is written: its JSON/XML name, whether it repeats, its kind and the key of its type(s)."""
    if el.xml_attr:
        return Child(el.name, False, ATTRIBUTE, ("string",))
    if el.content_ref:
        return Child(el.name, el.many, COMPLEX, (el.content_ref,))
    if el.choice:
        return Child(el.name, el.many, CHOICE, el.types)
    if has_children:
        return Child(el.name, el.many, COMPLEX, (el.path,))  # a backbone element: keyed by its path
    if el.types == ("xhtml",):
        return Child(el.name, el.many, XHTML, el.types)
    if el.types == ("Resource",):
        return Child(el.name, el.many, RESOURCE, el.types)
    if el.name == "id" and el.path.count(".") == 1:  # Resource.id: System.String in the snapshots, an id
        return Child("id", False, PRIMITIVE, ("id",))
    if len(el.types) != 1:
        raise ValueError(f"unexpected element {el.path} {el.types}")
    return Child(el.name, el.many, PRIMITIVE if el.types[0] in primitive_kinds() else COMPLEX, el.types)


@cache
def type_info(key: str) -> TypeInfo | None:
    """The children of a datatype, a resource type or a backbone element path; None if unknown."""
    if key in primitive_kinds():
        return None  # a primitive's value is text or a JSON value, not elements
    elements = r4model.children(key)
    if elements is None or ("." in key and not elements):
        return None
    prims = primitive_kinds()
    children = tuple(_child(el, bool(r4model.children(el.path))) for el in elements if el.max != 0)
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
