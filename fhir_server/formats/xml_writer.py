"""FHIR JSON -> FHIR XML (xml.html): element order from the definitions, primitives as ``value`` attributes with
their ``id`` and extensions from the JSON ``_name`` shadow properties, resources wrapped in their type's element,
the narrative embedded as XHTML.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from . import numbers
from .model import COMPLEX, FHIR_NS, RESOURCE, XHTML, Member, TypeInfo, resource_types, type_info
from .numbers import FhirDecimal
from .xhtml import embeddable

log = logging.getLogger(__name__)

_ATTR_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
# the escapes, plus the characters XML 1.0 cannot carry at all (FHIR strings never contain them either)
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]')
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


def _escape(value: str) -> str:
    return _ATTR_SPECIAL.sub(lambda m: _ATTR_ESCAPES.get(m.group(0), "\ufffd"), value)


def lexical(value: Any) -> str:
    """The XML lexical form of a JSON primitive: a float as JSON shows it, a Decimal with its exact digits."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, FhirDecimal):
        return value.text
    if isinstance(value, int | Decimal):
        return str(value)
    return orjson.dumps(value).decode()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _materialise(value: Any) -> Any:
    """Search bundles carry stored resources as pre-serialised ``orjson.Fragment``s (for JSON, bytes copied as
    they are): parsed here, once, the only parse such an entry gets (a search that parsed a resource for its own
    needs, includes or ``_summary``, hands over the parsed form instead)."""
    if isinstance(value, orjson.Fragment):
        return numbers.loads(orjson.dumps(value))
    return value


class _Writer:
    def __init__(self, pretty: bool) -> None:
        self.parts: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
        self.pretty = pretty

    def _nl(self, depth: int) -> str:
        return "\n" + "  " * depth if self.pretty else ""

    def resource(self, res: Any, depth: int, root: bool = False) -> None:
        res = _materialise(res)
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        if not isinstance(rtype, str) or rtype not in resource_types():
            raise ValueError(f"Not a FHIR R4 resource: resourceType {rtype!r}")
        info = type_info(rtype)
        assert info is not None
        self.parts.append(f'{self._nl(depth)}<{rtype} xmlns="{FHIR_NS}"' if root else f"{self._nl(depth)}<{rtype}")
        self._body(rtype, res, info, depth, skip="resourceType")

    def _complex(self, name: str, obj: Any, info: TypeInfo, depth: int) -> None:
        obj = _materialise(obj)
        if not isinstance(obj, dict):  # not valid FHIR JSON; written as a primitive so nothing is lost
            self._generic(name, obj, depth)
            return
        self.parts.append(f"{self._nl(depth)}<{name}")
        for attr in sorted(info.attributes):  # "id", then "url"
            value = obj.get(attr)
            if value is not None:
                self.parts.append(f' {attr}="{_escape(lexical(value))}"')
        self._body(name, obj, info, depth, skip=None)

    def _body(self, name: str, obj: Mapping[str, Any], info: TypeInfo, depth: int, skip: str | None) -> None:
        """The children of an open start tag, in definition order, then the end tag."""
        members = info.members
        names: dict[str, None] = {}
        for key in obj:
            base = key[1:] if key.startswith("_") else key
            if base != skip and base not in info.attributes:
                names[base] = None
        known = sorted((n for n in names if n in members), key=lambda n: members[n].order)
        unknown = [n for n in names if n not in members]
        if not known and not unknown:
            self.parts.append("/>")
            return
        self.parts.append(">")
        for child_name in known:
            self._member(obj, child_name, members[child_name], depth + 1)
        for child_name in unknown:
            log.warning("element %s.%s is not in the R4 definitions; written without type information",
                        info.key, child_name)
            for key in (child_name, "_" + child_name):
                if key in obj:
                    self._generic(child_name, obj[key], depth + 1)
        self.parts.append(f"{self._nl(depth)}</{name}>")

    def _member(self, obj: Mapping[str, Any], name: str, member: Member, depth: int) -> None:
        value = obj.get(name)
        if member.primitive:
            self._primitives(name, value, obj.get("_" + name), depth)
        elif member.child.kind == XHTML:
            if isinstance(value, str):
                self.parts.append(self._nl(depth) + embeddable(value))
        elif member.child.kind == RESOURCE:
            for item in _as_list(value):
                self.parts.append(f"{self._nl(depth)}<{name}>")
                self.resource(item, depth + 1)
                self.parts.append(f"{self._nl(depth)}</{name}>")
        else:
            info = type_info(member.type)
            assert info is not None and member.child.kind in (COMPLEX, "x")
            for item in _as_list(value):
                self._complex(name, item, info, depth)

    def _primitives(self, name: str, value: Any, shadow: Any, depth: int) -> None:
        if shadow is None:  # the common case: values only
            nl = self._nl(depth)
            for v in value if isinstance(value, list) else (value,):
                if v is not None:
                    self.parts.append(f'{nl}<{name} value="{_escape(lexical(v))}"/>')
            return
        values = value if isinstance(value, list) else [value]
        shadows = shadow if isinstance(shadow, list) else [shadow]
        ext_info = type_info("Extension")
        assert ext_info is not None
        for i in range(max(len(values), len(shadows))):
            v = values[i] if i < len(values) else None
            s = shadows[i] if i < len(shadows) else None
            s = s if isinstance(s, dict) else {}
            if v is None and not s:
                continue
            self.parts.append(f"{self._nl(depth)}<{name}")
            if s.get("id") is not None:
                self.parts.append(f' id="{_escape(lexical(s["id"]))}"')
            if v is not None:
                self.parts.append(f' value="{_escape(lexical(v))}"')
            extensions = _as_list(s.get("extension"))
            if not extensions:
                self.parts.append("/>")
                continue
            self.parts.append(">")
            for ext in extensions:
                self._complex("extension", ext, ext_info, depth + 1)
            self.parts.append(f"{self._nl(depth)}</{name}>")

    def _generic(self, name: str, value: Any, depth: int) -> None:
        """Content the definitions do not describe, written by its JSON shape (never reached for valid FHIR)."""
        if not _XML_NAME.match(name):
            log.warning("property %r cannot be an XML element name; left out of the XML form", name)
            return
        value = _materialise(value)
        if isinstance(value, list):
            for item in value:
                self._generic(name, item, depth)
        elif isinstance(value, dict):
            self.parts.append(f"{self._nl(depth)}<{name}>")
            for key, item in value.items():
                self._generic(key, item, depth + 1)
            self.parts.append(f"{self._nl(depth)}</{name}>")
        elif value is not None:
            self.parts.append(f'{self._nl(depth)}<{name} value="{_escape(lexical(value))}"/>')


def to_xml(resource: Mapping[str, Any], *, pretty: bool = False) -> bytes:
    """The XML form (UTF-8 bytes, with XML declaration) of a resource given in its JSON form."""
    writer = _Writer(pretty)
    writer.resource(resource, 0, root=True)
    if pretty:
        writer.parts.append("\n")
    return "".join(writer.parts).encode("utf-8")
