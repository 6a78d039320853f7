"""FHIR XML -> FHIR JSON (xml.html, json.html), in one streaming pass of a hardened expat parser.

The definitions supply what XML does not say: which elements are arrays, the JSON type of each primitive
(boolean, number, string), which element name is which choice type. Primitive ``id``s and extensions go to the
JSON ``_name`` shadow properties (arrays of primitives padded with ``null``). Element order is not enforced
(readers are lenient, writers are not); anything the definitions do not know is refused with the FHIRPath of
the element, as is any DTD or entity (see :mod:`fhir_common.safexml`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from fhir_common.safexml import XMLFormatError, new_parser, parse_error

from .model import (
    FHIR_NS,
    RESOURCE,
    XHTML,
    XHTML_NS,
    Member,
    TypeInfo,
    primitive_kinds,
    resource_types,
    type_info,
)
from .numbers import FhirDecimal
from .xhtml import XhtmlSerializer, element_span

MAX_DEPTH = 256
_INTEGER = re.compile(r"[+-]?(0|[1-9][0-9]*)\Z")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")
_PLAIN_INTEGER = re.compile(r"-?[0-9]+\Z")
_INT64 = 2**63


def json_number(text: str) -> int | float:
    """A decimal's JSON value: an int when written without fraction or exponent (``2`` stays ``2``), else a
    :class:`~fhir_server.formats.numbers.FhirDecimal` keeping the exact digits (``1.50``, ``1e2``, 20 digits).
    """
    if _PLAIN_INTEGER.match(text) and text != "-0":
        value = int(text)
        if -_INT64 <= value < _INT64:
            return value
    return FhirDecimal(text)  # ValueError when not finite


PRIMITIVE_FRAME, COMPLEX_FRAME, SLOT_FRAME = 0, 1, 2


class _Frame:
    """One open element. Its FHIRPath is only worked out (from the parents) when an error needs it."""

    __slots__ = ("arrays", "extensions", "info", "kind", "member", "name", "obj", "parent", "resource", "seen",
                 "step", "value")

    def __init__(self, kind: int, name: str, parent: _Frame | None, step: str, info: TypeInfo | None = None,
                 member: Member | None = None, obj: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.name = name  # the XML element name == the JSON property name in the parent
        self.parent = parent
        self.step = step  # this element's part of the FHIRPath (".name[0]"; "" for a resource in its slot)
        self.info = info
        self.member = member
        self.obj: dict[str, Any] = {} if obj is None else obj
        self.seen: set[str] = set()  # children (base names) already present: the max-1 check
        self.arrays: dict[str, tuple[list[Any], list[Any]]] = {}  # repeating primitives: values, shadows
        self.value: Any = None
        self.extensions: list[Any] = []
        self.resource: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        steps = []
        frame: _Frame | None = self
        while frame is not None:
            steps.append(frame.step)
            frame = frame.parent
        return "".join(reversed(steps))


@dataclass(slots=True)
class _Narrative:
    start: int
    raw_ok: bool
    depth: int = 0
    prefixes: set[str] = field(default_factory=lambda: {"xml"})
    serializer: XhtmlSerializer = field(default_factory=XhtmlSerializer)


class _Reader:
    def __init__(self, data: bytes, decimal: Callable[[str], Any]) -> None:
        self.data = data
        self.decimal = decimal
        self.kinds = primitive_kinds()
        self.frames: list[_Frame] = []
        self.result: dict[str, Any] | None = None
        self.narrative: _Narrative | None = None
        self.ns_decls: list[tuple[str | None, str]] = []
        self.parser = new_parser()
        p = self.parser
        p.StartElementHandler = self.start
        p.EndElementHandler = self.end
        p.CharacterDataHandler = self.text
        p.StartNamespaceDeclHandler = self.namespace
        p.XmlDeclHandler = self.declaration

    def parse(self) -> dict[str, Any]:
        try:
            self.parser.Parse(self.data, True)
        except expat.ExpatError as exc:
            raise parse_error(exc) from None
        if self.result is None:  # pragma: no cover - expat requires a root element
            raise XMLFormatError("No resource in the document")
        return self.result

    def _error(self, message: str, path: str | None) -> XMLFormatError:
        return XMLFormatError(f"{message} (line {self.parser.CurrentLineNumber})", path)

    # -- expat handlers -------------------------------------------------------------------------------------

    def declaration(self, _version: str, encoding: str | None, _standalone: int) -> None:
        if encoding and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise self._error(f"FHIR XML must be UTF-8, not {encoding}", None)

    def namespace(self, prefix: str | None, uri: str) -> None:
        self.ns_decls.append((prefix, uri))
        if self.narrative is not None and prefix:
            self.narrative.prefixes.add(prefix)

    def text(self, data: str) -> None:
        if self.narrative is not None:
            self.narrative.serializer.text(data)
        elif data.strip():
            top = self.frames[-1] if self.frames else None
            raise self._error(f"Unexpected text {data.strip()[:40]!r}: FHIR XML carries values in 'value' "
                              "attributes", top.path if top else None)

    def start(self, name: str, attrs: dict[str, str]) -> None:
        decls, self.ns_decls = self.ns_decls, []
        if len(self.frames) >= MAX_DEPTH:
            raise self._error(f"XML nested deeper than {MAX_DEPTH} elements", None)
        if self.narrative is not None:
            self._narrative_start(name, attrs)
            return
        uri, local = name.split(" ")[:2] if " " in name else ("", name)
        top = self.frames[-1] if self.frames else None
        if top is None or top.kind == SLOT_FRAME:
            self._resource_start(uri, local, attrs, top)
            return
        if top.kind == PRIMITIVE_FRAME:
            if uri != FHIR_NS or local != "extension":
                raise self._error(f"'{top.name}' is a primitive: it can contain only extensions, not '{local}'",
                                  top.path)
            ext = type_info("Extension")
            assert ext is not None
            frame = _Frame(COMPLEX_FRAME, "extension", top, f".extension[{len(top.extensions)}]", ext)
            self._attributes(frame, attrs)
            self.frames.append(frame)
            return
        info = top.info
        assert info is not None
        member = info.members.get(local)
        if member is None:
            raise self._error(f"Unknown element '{local}' in {info.key}", f"{top.path}.{local}")
        child = member.child
        if child.kind == XHTML:
            if uri != XHTML_NS or local != "div":
                raise self._error("The narrative must be an XHTML div (namespace http://www.w3.org/1999/xhtml)",
                                  f"{top.path}.div")
            self._take(top, member, local)
            raw_ok = len(name.split(" ")) == 2 and (None, XHTML_NS) in decls
            self.narrative = _Narrative(self.parser.CurrentByteIndex, raw_ok)
            self.narrative.prefixes.update(p for p, _ in decls if p)
            self._narrative_start(name, attrs)
            return
        if uri != FHIR_NS:
            raise self._error(f"Element '{local}' is not in the FHIR namespace ({FHIR_NS})", f"{top.path}.{local}")
        index = self._take(top, member, local)
        step = f".{local}[{index}]" if child.many else f".{local}"
        if member.primitive:
            frame = _Frame(PRIMITIVE_FRAME, local, top, step, member=member)
            for key, value in attrs.items():
                if key == "value":
                    frame.value = self._primitive(member.type, value, frame)
                elif key == "id":
                    frame.obj["id"] = value
                elif " " not in key:
                    raise self._error(f"Unknown attribute '{key}' on '{local}'", frame.path)
        elif child.kind == RESOURCE:
            frame = _Frame(SLOT_FRAME, local, top, step, member=member)
            self._no_attributes(attrs, frame)
        else:
            frame = _Frame(COMPLEX_FRAME, local, top, step, type_info(member.type), member)
            self._attributes(frame, attrs)
        self.frames.append(frame)

    def end(self, name: str) -> None:
        narrative = self.narrative
        if narrative is not None:
            narrative.serializer.end(name)
            narrative.depth -= 1
            if narrative.depth == 0:
                self._narrative_end(narrative)
            return
        frame = self.frames.pop()
        parent = self.frames[-1] if self.frames else None
        if frame.kind == PRIMITIVE_FRAME:
            self._primitive_end(frame, parent)
        elif frame.kind == SLOT_FRAME:
            if frame.resource is None:
                raise self._error(f"'{frame.name}' must contain a resource", frame.path)
            assert parent is not None
            self._attach(parent, frame, frame.resource)
        else:
            self._finish_arrays(frame)
            if parent is None:
                self.result = frame.obj
            elif parent.kind == SLOT_FRAME:
                parent.resource = frame.obj
            elif parent.kind == PRIMITIVE_FRAME:
                parent.extensions.append(frame.obj)
            else:
                self._attach(parent, frame, frame.obj)

    # -- helpers --------------------------------------------------------------------------------------------

    def _resource_start(self, uri: str, local: str, attrs: dict[str, str], slot: _Frame | None) -> None:
        frame = _Frame(COMPLEX_FRAME, local, slot, "" if slot is not None else local, type_info(local),
                       obj={"resourceType": local})
        if uri != FHIR_NS:
            raise self._error(f"Element '{local}' is not in the FHIR namespace ({FHIR_NS})", frame.path)
        if local not in resource_types():
            raise self._error(f"'{local}' is not an R4 resource type", frame.path)
        if slot is not None and slot.resource is not None:
            raise self._error(f"'{slot.name}' contains more than one resource", frame.path)
        self._no_attributes(attrs, frame)
        self.frames.append(frame)

    def _take(self, top: _Frame, member: Member, local: str) -> int:
        """Record one more occurrence of a child; its index among the occurrences."""
        child = member.child
        if child.name in top.seen and not child.many:
            what = f"'{child.name}[x]'" if local != child.name else f"'{local}'"
            raise self._error(f"{what} may occur only once in {top.info.key if top.info else top.name}",
                              f"{top.path}.{local}")
        top.seen.add(child.name)
        if not child.many:
            return 0
        if member.primitive:
            return len(top.arrays[local][0]) if local in top.arrays else 0
        existing = top.obj.get(local)
        return len(existing) if isinstance(existing, list) else 0

    def _attributes(self, frame: _Frame, attrs: dict[str, str]) -> None:
        assert frame.info is not None
        for key, value in attrs.items():
            if key in frame.info.attributes:
                frame.obj[key] = value
            elif " " not in key:  # attributes in other namespaces (xsi:schemaLocation...) are ignored
                raise self._error(f"Unknown attribute '{key}' on '{frame.name}'", frame.path)

    def _no_attributes(self, attrs: dict[str, str], frame: _Frame) -> None:
        for key in attrs:
            if " " not in key:
                raise self._error(f"Unknown attribute '{key}'", frame.path)

    def _primitive(self, type_code: str, text: str, frame: _Frame) -> Any:
        kind = self.kinds.get(type_code, "string")
        if kind == "string":
            return text
        if kind == "boolean":
            if text in ("true", "false"):
                return text == "true"
        elif kind == "integer":
            if _INTEGER.match(text) and -_INT64 <= (number := int(text)) < _INT64:
                return number
        elif _DECIMAL.match(text):
            try:
                return self.decimal(text)
            except (ValueError, ArithmeticError):
                pass
        raise self._error(f"'{text}' is not a valid {type_code}", frame.path)

    def _primitive_end(self, frame: _Frame, parent: _Frame | None) -> None:
        assert parent is not None and frame.member is not None
        shadow: dict[str, Any] = dict(frame.obj)
        if frame.extensions:
            shadow["extension"] = frame.extensions
        if frame.value is None and not shadow:
            raise self._error(f"'{frame.name}' has neither a value nor extensions", frame.path)
        if frame.member.child.many:
            if frame.name not in parent.arrays:
                parent.arrays[frame.name] = ([], [])
                parent.obj[frame.name] = None  # keeps the element's place among the properties
            values, shadows = parent.arrays[frame.name]
            values.append(frame.value)
            shadows.append(shadow or None)
            return
        if frame.value is not None:
            parent.obj[frame.name] = frame.value
        if shadow:
            parent.obj["_" + frame.name] = shadow

    def _finish_arrays(self, frame: _Frame) -> None:
        for name, (values, shadows) in frame.arrays.items():
            if any(v is not None for v in values):
                frame.obj[name] = values
            else:
                del frame.obj[name]
            if any(s is not None for s in shadows):
                frame.obj["_" + name] = shadows

    def _attach(self, parent: _Frame, frame: _Frame, value: Any) -> None:
        assert frame.member is not None
        if frame.member.child.many:
            parent.obj.setdefault(frame.name, []).append(value)
        else:
            parent.obj[frame.name] = value

    def _narrative_start(self, name: str, attrs: dict[str, str]) -> None:
        narrative = self.narrative
        assert narrative is not None
        narrative.depth += 1
        if narrative.depth + len(self.frames) > MAX_DEPTH:
            raise self._error(f"XML nested deeper than {MAX_DEPTH} elements", None)
        parts = name.split(" ")
        if len(parts) > 2 and parts[2] not in narrative.prefixes:
            narrative.raw_ok = False
        for key in attrs:
            bits = key.split(" ")
            if len(bits) > 2 and bits[2] not in narrative.prefixes:
                narrative.raw_ok = False
        narrative.serializer.start(name, attrs)

    def _narrative_end(self, narrative: _Narrative) -> None:
        self.narrative = None
        top = self.frames[-1]
        if narrative.raw_ok:
            start, end = element_span(self.data, narrative.start, self.parser.CurrentByteIndex)
            top.obj["div"] = self.data[start:end].decode("utf-8")
        else:
            top.obj["div"] = narrative.serializer.result()


def from_xml(data: bytes, *, decimal: Callable[[str], Any] = json_number) -> dict[str, Any]:
    """The JSON form of the FHIR XML resource in ``data`` (UTF-8), or :class:`XMLFormatError`."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XMLFormatError(f"FHIR XML must be UTF-8 encoded (invalid byte at offset {exc.start})") from None
    return _Reader(data, decimal).parse()
