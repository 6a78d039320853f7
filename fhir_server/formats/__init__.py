"""FHIR serialisation formats other than the JSON the server stores: XML (xml.html) ⇄ JSON (json.html)."""

from fhir_common.safexml import XMLFormatError

from .xml_reader import from_xml, json_number
from .xml_writer import to_xml

__all__ = ["XMLFormatError", "from_xml", "json_number", "to_xml"]
