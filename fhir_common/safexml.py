"""A hardened expat parser: no DTD at all, hence no entity expansion (billion laughs) and no external entity (XXE).

The standard library's expat is used directly rather than through ``defusedxml`` because the reader needs the
parser's byte offsets (to keep a narrative ``div`` exactly as sent) and streams straight into JSON; the protection
is defusedxml's: a document type declaration, an entity declaration or an external reference is refused before
anything is resolved, and parameter entities are never parsed. The XML reader and the narrative check
(:mod:`.narrative`, for JSON and XML input alike) both use it.
"""

from __future__ import annotations

from typing import Any, NoReturn
from xml.parsers import expat

__all__ = ["XMLFormatError", "new_parser", "parse_error"]


class XMLFormatError(ValueError):
    """Input that is not acceptable FHIR XML; ``expression`` is the FHIRPath of the offending element if known."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


def _forbid(what: str) -> Any:
    def handler(*_args: Any) -> NoReturn:
        raise XMLFormatError(f"{what} are not allowed (FHIR XML and narratives have no DTD)")

    return handler


def new_parser() -> expat.XMLParserType:
    """A namespace-aware parser (names as ``uri local [prefix]``) that refuses DTDs and entities."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.namespace_prefixes = True
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _forbid("Document type declarations (DOCTYPE)")
    parser.EntityDeclHandler = _forbid("Entity declarations")
    parser.UnparsedEntityDeclHandler = _forbid("Entity declarations")
    parser.NotationDeclHandler = _forbid("Notation declarations")
    parser.ExternalEntityRefHandler = _forbid("External entities")
    return parser


def parse_error(exc: expat.ExpatError) -> XMLFormatError:
    return XMLFormatError(f"Malformed XML: {expat.errors.messages[exc.code]} "
                          f"(line {exc.lineno}, column {exc.offset})")
