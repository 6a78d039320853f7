"""The narrative ``div`` (narrative.html#xhtml), read one way for the validator and for the XML writer.

Both parse it with the hardened parser (:mod:`.safexml`: no DTD, no entity declaration), so what the validator
accepts from a JSON client is exactly what the XML writer can embed as XHTML: a narrative that brings its own DTD
(``<!DOCTYPE div [<!ENTITY ...>]>``) used to pass ``xml.etree`` here and be refused there, so XML clients got it
as escaped text while JSON clients got the markup.

* :func:`check_div` - txt-1/txt-2 (well-formed XHTML, one ``div`` root, only the basic formatting elements and
  attributes, no active content, some content). HTML named entities (``&nbsp;``) are read as the characters they
  name, as the HL7 validator does; an XML declaration before the ``div`` is tolerated (the writer drops it).
* :func:`is_div` - whether a string is one well-formed XHTML ``div`` and nothing else, to be written verbatim.
"""

from __future__ import annotations

import html.entities
import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from .safexml import XMLFormatError, new_parser, parse_error

__all__ = ["ALLOWED", "ALLOWED_ATTRS", "XHTML_NS", "check_div", "is_div", "numeric_entities"]

XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"
ALLOWED = frozenset({
    "a", "abbr", "acronym", "b", "big", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd", "dfn",
    "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "q",
    "samp", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt",
    "ul", "var"})
ALLOWED_ATTRS = frozenset({
    "title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex", "href", "name", "src", "alt",
    "span", "colspan", "rowspan", "width", "height", "border", "cellpadding", "cellspacing", "align", "valign", "char",
    "charoff", "abbr", "axis", "headers", "scope", "frame", "rules", "summary", "start", "type", "value", "compact"})
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})


def numeric_entities(text: str) -> str:
    """HTML named entities (``&nbsp;``) as character references, which XML reads without a DTD."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        cp = html.entities.name2codepoint.get(name)
        return f"&#{cp};" if cp is not None and name not in _XML_ENTITIES else m.group(0)

    return _ENTITY.sub(repl, text)


@dataclass
class _Outline:
    """What one pass of the hardened parser saw."""

    error: str | None = None
    roots: list[tuple[str, str]] = field(default_factory=list)  # (namespace, local name) of each top element
    declaration: bool = False  # an XML declaration
    outside: str | None = None  # a comment or processing instruction next to the root
    problems: list[tuple[str, str]] = field(default_factory=list)  # txt-1 element and attribute findings
    text: bool = False  # some non-whitespace text, or an image
    depth: int = 0


def _split(name: str) -> tuple[str, str]:
    """(namespace, local) of an expat name (``uri local [prefix]``, or ``local`` without a namespace)."""
    parts = name.split(" ")
    return (parts[0], parts[1]) if len(parts) > 1 else ("", name)


def _outline(text: str) -> _Outline:
    out = _Outline()
    parser = new_parser()

    def start(name: str, attrs: dict[str, str]) -> None:
        ns, local = _split(name)
        if out.depth == 0:
            out.roots.append((ns, local))
        out.depth += 1
        if ns != XHTML_NS or local not in ALLOWED:
            out.problems.append(("txt-1", f"The narrative contains the element <{local}>, which is not allowed"))
            return
        out.text = out.text or local == "img"
        for key, value in attrs.items():
            a_ns, a_local = _split(key)
            attr = f"xml:{a_local}" if a_ns == XML_NS else a_local
            if attr not in ALLOWED_ATTRS:
                out.problems.append(("txt-1", f"The narrative element <{local}> has the attribute '{attr}', "
                                              "which is not allowed"))
            elif attr in ("href", "src") and value.strip().lower().startswith(("javascript:", "vbscript:")):
                out.problems.append(("txt-1", f"The narrative has an active '{attr}' ({value[:40]})"))

    def end(_name: str) -> None:
        out.depth -= 1

    def chars(data: str) -> None:
        out.text = out.text or (out.depth > 0 and bool(data.strip()))

    def declaration(*_args: Any) -> None:
        out.declaration = True

    def comment(_data: str) -> None:
        if out.depth == 0:
            out.outside = out.outside or "a comment"

    def instruction(_target: str, _data: str) -> None:
        if out.depth == 0:
            out.outside = out.outside or "a processing instruction"

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.XmlDeclHandler = declaration
    parser.CommentHandler = comment
    parser.ProcessingInstructionHandler = instruction
    try:
        parser.Parse(text, True)
    except XMLFormatError as exc:  # a DTD, an entity declaration
        out.error = exc.message
    except expat.ExpatError as exc:
        out.error = parse_error(exc).message
    except UnicodeEncodeError:  # a lone surrogate: JSON and XML input cannot carry one, a caller can
        out.error = "not valid Unicode"
    return out


def check_div(div: str) -> list[tuple[str, str]]:
    """Problems as (constraint key, message); empty when the narrative is acceptable."""
    out = _outline(numeric_entities(div))
    if out.error is not None:
        return [("txt-1", f"The narrative is not well-formed XHTML: {out.error}")]
    problems: list[tuple[str, str]] = []
    if out.roots != [(XHTML_NS, "div")]:
        problems.append(("txt-1", "The narrative root must be a <div> in the XHTML namespace "
                                  "(xmlns=\"http://www.w3.org/1999/xhtml\")"))
    if out.outside is not None:
        problems.append(("txt-1", f"The narrative must be a single <div> element; {out.outside} is outside it"))
    problems += out.problems
    if not out.text:
        problems.append(("txt-2", "The narrative must have some non-whitespace content"))
    return problems


def is_div(text: str) -> bool:
    """A single XHTML ``div`` element and nothing around it, well-formed, without DTD or entities."""
    if not text.startswith("<") or not text.endswith(">"):
        return False
    out = _outline(text)
    return out.error is None and out.roots == [(XHTML_NS, "div")] and out.outside is None and not out.declaration
