"""Regenerate ``r4-elements.json``: the element table that drives FHIR JSON ⇄ XML conversion.

Source: the FHIR R4 (4.0.1) StructureDefinitions ``profiles-types.xml`` and ``profiles-resources.xml`` of the
official specification (HL7, CC0), as redistributed unchanged in the Maven Central artifact
``ca.uhn.hapi.fhir:hapi-fhir-validation-resources-r4:7.4.0`` (``org/hl7/fhir/r4/model/profile/``), because the npm
package ``hl7.fhir.r4.core`` is not served by the npm registry reachable here.

For every primitive type the JSON kind of its value, and for every complex type, resource and backbone element
(keyed by type name or element path) its children in snapshot order, which is the XML order:
``[name, many, kind, types]`` with ``kind`` one of ``p`` primitive, ``c`` complex (``types`` = [type name] or
[backbone path]), ``x`` choice (``types`` = the type codes, ``name`` without ``[x]``), ``r`` a resource
(``contained``, ``Bundle.entry.resource``...), ``h`` the XHTML ``div``, ``a`` an XML attribute (``Element.id``,
``Extension.url``).

Rerun (from the repository root)::

    .venv/bin/python fhir_server/formats/definitions/build.py [JAR]

without ``JAR`` the artifact is fetched with ``mvn dependency:copy`` into a temporary directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

ARTIFACT = "ca.uhn.hapi.fhir:hapi-fhir-validation-resources-r4:7.4.0:jar"
MEMBERS = ("org/hl7/fhir/r4/model/profile/profiles-types.xml", "org/hl7/fhir/r4/model/profile/profiles-resources.xml")
OUTPUT = Path(__file__).with_name("r4-elements.json")
NS = {"f": "http://hl7.org/fhir"}
JSON_KIND = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer",
             "decimal": "decimal"}


def _value(node: ET.Element, name: str) -> str | None:
    child = node.find(f"f:{name}", NS)
    return None if child is None else child.get("value")


def _structure_definitions(jar: Path) -> list[ET.Element]:
    out: list[ET.Element] = []
    with zipfile.ZipFile(jar) as zf:
        for member in MEMBERS:
            root = ET.fromstring(zf.read(member))  # trusted input: the official distribution
            out.extend(root.iterfind("f:entry/f:resource/f:StructureDefinition", NS))
    return out


def _children(elements: list[ET.Element], kind_of: dict[str, str]) -> dict[str, list[list[Any]]]:
    """Children of every complex path in one snapshot, in order."""
    paths = [_value(el, "path") or "" for el in elements]
    has_children = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    table: dict[str, list[list[Any]]] = {}
    for el, path in zip(elements, paths, strict=True):
        if "." not in path:
            table.setdefault(path, [])
            continue
        parent, name = path.rsplit(".", 1)
        if _value(el, "max") == "0":
            continue
        many = _value(el, "max") != "1"
        reps = {r.get("value") for r in el.findall("f:representation", NS)}
        codes = [_value(t, "code") or "" for t in el.findall("f:type", NS)]
        ref = _value(el, "contentReference")
        if "xmlAttr" in reps:
            entry = [name, False, "a", ["string"]]
        elif ref:
            entry = [name, many, "c", [ref.lstrip("#")]]
        elif name.endswith("[x]"):
            entry = [name[:-3], many, "x", codes]
        elif path in has_children:
            entry = [name, many, "c", [path]]
        elif codes == ["xhtml"]:
            entry = [name, many, "h", ["xhtml"]]
        elif codes == ["Resource"]:
            entry = [name, many, "r", ["Resource"]]
        elif len(codes) == 1 and codes[0].startswith("http://hl7.org/fhirpath/System."):
            entry = [name, many, "p", ["id" if path.endswith(".id") else "string"]]
        elif len(codes) == 1:
            entry = [name, many, "p" if kind_of.get(codes[0]) == "primitive-type" else "c", codes]
        else:
            raise ValueError(f"unexpected element {path} {codes}")
        table.setdefault(parent, []).append(entry)
    return table


def build(jar: Path) -> dict[str, Any]:
    sds = _structure_definitions(jar)
    kind_of = {(_value(sd, "type") or ""): (_value(sd, "kind") or "") for sd in sds
               if _value(sd, "derivation") != "constraint"}
    primitives: dict[str, str] = {}
    resources: list[str] = []
    types: dict[str, list[list[Any]]] = {}
    for sd in sds:
        if _value(sd, "derivation") == "constraint" or _value(sd, "kind") == "logical":
            continue
        name = _value(sd, "type") or ""
        kind = _value(sd, "kind")
        if kind == "primitive-type":
            primitives[name] = JSON_KIND.get(name, "string")
            continue
        if kind == "resource" and _value(sd, "abstract") != "true":
            resources.append(name)
        elements = list(sd.iterfind("f:snapshot/f:element", NS))
        types.update(_children(elements, kind_of))
    return {
        "note": ("FHIR R4 4.0.1 element table for JSON/XML conversion, generated by "
                 "fhir_server/formats/definitions/build.py from profiles-types.xml and profiles-resources.xml "
                 f"(HL7 FHIR specification, CC0; Maven Central {ARTIFACT}). Do not edit by hand."),
        "fhirVersion": "4.0.1",
        "primitives": dict(sorted(primitives.items())),
        "resources": sorted(resources),
        "types": types,
    }


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        table = build(Path(argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["mvn", "-q", "dependency:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={tmp}"],
                           check=True)
            table = build(next(Path(tmp).glob("*.jar")))
    text = json.dumps(table, separators=(",", ":"), ensure_ascii=False)
    # one type per line: small diffs when regenerated
    text = text.replace('],"', '],\n"').replace('"types":{', '"types":{\n')
    OUTPUT.write_text(text + "\n", encoding="utf-8")
    print(f"{OUTPUT}: {len(table['types'])} types/paths, {len(table['resources'])} resources, "
          f"{len(table['primitives'])} primitives")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
