"""The narrative ``div``: XHTML embedded as such in XML, a string in JSON (narrative.html#xhtml).

Going to XML the JSON string is embedded verbatim once it is known to be a well-formed XHTML ``div``; coming from
XML the reader slices the ``div``'s own bytes back out. The string therefore round-trips exactly, character
references and attribute quoting included. Whether a string is such a ``div`` is decided by
:mod:`fhir_common.narrative`, on the same hardened parser as the validator's narrative check. :class:`XhtmlSerializer`
is the fallback for XML whose ``div`` cannot be sliced (its namespace or a prefix declared on an ancestor).
"""

from __future__ import annotations

import logging
import re

from fhir_common.narrative import is_div, numeric_entities
from fhir_common.safexml import XMLFormatError

from .model import XHTML_NS

log = logging.getLogger(__name__)

XML_NS = "http://www.w3.org/XML/1998/namespace"
_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>\s*")
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_TEXT_SPECIAL = re.compile(r"[&<>]")
_ATTR_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
_ATTR_SPECIAL = re.compile(r'[&<>"\t\n\r]')


def escape_text(value: str) -> str:
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group(0)], value)


def escape_attr(value: str) -> str:
    return _ATTR_SPECIAL.sub(lambda m: _ATTR_ESCAPES[m.group(0)], value)


def element_span(data: bytes, start: int, end_event: int) -> tuple[int, int]:
    """Byte span of the element whose start tag begins at ``start`` (expat's index at its start event) and whose
    end event came at ``end_event`` (the ``</`` of its end tag, or just past an empty-element tag)."""
    m = _START_TAG.match(data, start)
    if m is None:  # pragma: no cover - expat accepted the tag, so it matches
        raise XMLFormatError("Cannot locate the narrative's start tag")
    if m.group(1):
        return start, m.end()
    return start, data.index(b">", end_event) + 1


def embeddable(div: str) -> str:
    """The JSON ``div`` as an XHTML fragment to write verbatim into an XML document.

    Unchanged when it is a well-formed XHTML ``div`` (the normal case). Otherwise, in order: an XML declaration is
    dropped, HTML named entities (``&nbsp;``) become character references, a missing XHTML namespace is added;
    text that still is not XML is written escaped inside a ``div`` (content kept as text, markup lost) rather than
    producing a document no client can parse.
    """
    if is_div(div):
        return div
    fixed = numeric_entities(_XML_DECL.sub("", div).strip())
    if is_div(fixed):
        return fixed
    if fixed.startswith("<div") and fixed[4:5] in (" ", ">", "/", "\t", "\n", "\r"):
        namespaced = f'<div xmlns="{XHTML_NS}"' + fixed[4:]
        if is_div(namespaced):
            return namespaced
    log.warning("narrative div is not well-formed XHTML; written as escaped text")
    return f'<div xmlns="{XHTML_NS}">{escape_text(div)}</div>'


class XhtmlSerializer:
    """Rebuilds a ``div`` from parser events, with the XHTML namespace declared on the ``div`` itself."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.defaults: list[str] = [""]
        self.open = False  # a start tag is written but not yet closed with ">" (it may become "/>")

    def _close_start(self) -> None:
        if self.open:
            self.parts.append(">")
            self.open = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self._close_start()
        uri, local = name.split(" ")[:2] if " " in name else ("", name)
        decls: dict[str, str] = {}
        if uri != self.defaults[-1]:
            decls["xmlns"] = uri
        self.defaults.append(uri)
        written = []
        for key, value in attrs.items():
            parts = key.split(" ")
            if len(parts) == 1:
                written.append((key, value))
            elif parts[0] == XML_NS:
                written.append((f"xml:{parts[1]}", value))
            else:
                pfx = parts[2] if len(parts) > 2 else f"ns{len(decls)}"
                decls[f"xmlns:{pfx}"] = parts[0]
                written.append((f"{pfx}:{parts[1]}", value))
        self.parts.append(f"<{local}")
        for key, value in [*decls.items(), *written]:
            self.parts.append(f' {key}="{escape_attr(value)}"')
        self.open = True

    def text(self, data: str) -> None:
        self._close_start()
        self.parts.append(escape_text(data))

    def end(self, name: str) -> None:
        self.defaults.pop()
        if self.open:
            self.parts.append("/>")
            self.open = False
        else:
            local = name.split(" ")[1] if " " in name else name
            self.parts.append(f"</{local}>")

    def result(self) -> str:
        return "".join(self.parts)
