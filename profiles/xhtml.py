"""Narrative safety (txt-1, txt-2 of narrative.html): well-formed XHTML, a ``div`` root, only the basic
formatting elements and attributes, no active content, some non-whitespace content.

Parsed with the standard library (``xml.etree``): HTML named entities are declared first since the spec
examples use ``&nbsp;`` and friends, which the HL7 validator accepts.
"""

from __future__ import annotations

import html.entities
import re
import xml.etree.ElementTree as ET

XHTML_NS = "{http://www.w3.org/1999/xhtml}"
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


def _replace_entity(m: re.Match[str]) -> str:
    name = m.group(1)
    if name in _XML_ENTITIES:
        return m.group(0)
    cp = html.entities.name2codepoint.get(name)
    return f"&#{cp};" if cp is not None else m.group(0)


def check_div(div: str) -> list[tuple[str, str]]:
    """Problems as (constraint key, message); empty when the narrative is acceptable."""
    try:
        root = ET.fromstring(_ENTITY.sub(_replace_entity, div))
    except ET.ParseError as exc:
        return [("txt-1", f"The narrative is not well-formed XHTML: {exc}")]
    problems: list[tuple[str, str]] = []
    if root.tag != XHTML_NS + "div":
        problems.append(("txt-1", "The narrative root must be a <div> in the XHTML namespace "
                                  "(xmlns=\"http://www.w3.org/1999/xhtml\")"))
    for el in root.iter():
        tag = el.tag
        local = tag[len(XHTML_NS):] if tag.startswith(XHTML_NS) else tag
        if not tag.startswith(XHTML_NS) or local not in ALLOWED:
            problems.append(("txt-1", f"The narrative contains the element <{local}>, which is not allowed"))
            continue
        for attr, value in el.attrib.items():
            name = attr.rsplit("}", 1)[-1]
            if attr.startswith("{http://www.w3.org/XML/1998/namespace}"):
                name = "xml:" + name
            if name not in ALLOWED_ATTRS:
                problems.append(("txt-1", f"The narrative element <{local}> has the attribute '{name}', "
                                          "which is not allowed"))
            elif name in ("href", "src") and value.strip().lower().startswith(("javascript:", "vbscript:")):
                problems.append(("txt-1", f"The narrative has an active '{name}' ({value[:40]})"))
    if not "".join(root.itertext()).strip() and not any(e.tag == XHTML_NS + "img" for e in root.iter()):
        problems.append(("txt-2", "The narrative must have some non-whitespace content"))
    return problems
