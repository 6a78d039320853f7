"""Regenerate ``profiles/definitions/r4-core.json`` from the official R4 (4.0.1) spec content.

Provenance: the npm package ``hl7.fhir.r4.examples@4.0.1`` (HL7 FHIR R4 specification content, CC0), which carries
every R4 StructureDefinition (with snapshots), ValueSet, CodeSystem and the ``valueset-expansions`` Bundle.
``hl7.fhir.r4.core`` is not served by the npm registry reachable here; the examples package holds the same
definitions.

Usage (run by a developer, never at run time or test time)::

    mkdir -p /tmp/r4 && cd /tmp/r4 && npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
    python profiles/tools/build_r4_definitions.py /tmp/r4/package

Only the closure of the served types (their elements' datatypes, recursively), every core extension definition
(compact: context, value types, sub-extensions) and the expansions of the value sets bound by those elements are
kept, with short keys, minified.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = ["Patient", "DocumentReference", "Immunization", "Binary", "List", "Bundle", "OperationOutcome", "Consent",
         # resources the French profiles contain or reference inline (PDSm authors, custodians, sources)
         "Practitioner", "PractitionerRole", "Organization", "Device", "RelatedPerson",
         "Parameters", "Resource", "DomainResource", "Extension", "Narrative"]
MAX_CODES = 3000  # larger value sets are left unexpanded (validated as "not checkable")
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"


def _type_code(t: dict[str, Any]) -> str:
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return "string"
    return str(code)


def _short(url: str) -> str:
    return url.rsplit("/", 1)[-1] if url.startswith("http://hl7.org/fhir/StructureDefinition/") else url


def compact_element(el: dict[str, Any], sd_type: str) -> dict[str, Any]:
    """One snapshot element with only what validation reads."""
    out: dict[str, Any] = {"p": el["path"], "n": el["min"], "x": el["max"]}
    types = []
    for t in el.get("type", []):
        entry: list[Any] = [_type_code(t)]
        targets = [_short(p) for p in t.get("targetProfile", [])]
        if targets:
            entry.append(targets)
        types.append(entry)
    if types:
        out["t"] = types
    if "contentReference" in el:
        out["cr"] = el["contentReference"].lstrip("#")
    b = el.get("binding")
    if b and b.get("valueSet"):
        out["b"] = [b["strength"], b["valueSet"].split("|")[0]]
    cons = [[c["key"], c["severity"], c["human"], c.get("expression", "")] for c in el.get("constraint", [])
            if c["key"] != "ele-1" and c.get("expression")]
    if cons:
        out["c"] = cons
    for k, v in el.items():
        if k.startswith("fixed"):
            out["f"] = [k[5:], v]
        elif k.startswith("pattern"):
            out["pt"] = [k[7:], v]
    if el.get("isModifier"):
        out["m"] = 1
    if ":" in el["id"]:
        out["id"] = el["id"]
    if el.get("sliceName"):
        out["s"] = el["sliceName"]
    return out


def _value(el: dict[str, Any] | None) -> dict[str, Any] | None:
    if el is None or el["x"] == "0":
        return None
    out = {"t": [t[0] for t in el.get("t", [])], "n": el["n"]}
    targets = sorted({x for t in el.get("t", []) if len(t) > 1 for x in t[1]})
    if targets:
        out["r"] = targets
    if "b" in el:
        out["b"] = el["b"]
    return out


def compact_extension(ctx: list[str], els: list[dict[str, Any]]) -> dict[str, Any]:
    """An extension definition as the engine reads it: contexts, value types, one level of sub-extensions."""
    by_id = {el.get("id", el["p"]): el for el in els}
    out: dict[str, Any] = {"ctx": ctx, "v": _value(by_id.get("Extension.value[x]"))}
    cons = by_id["Extension"].get("c", [])
    cons = [c for c in cons if c[0] != "ext-1"]
    if cons:
        out["c"] = cons
    sub = {}
    for el in els:
        if el["p"] == "Extension.extension" and "s" in el:
            prefix = f"Extension.extension:{el['s']}"
            url_el = by_id.get(prefix + ".url", {})
            sub[url_el.get("f", [None, el["s"]])[1]] = {
                "n": el["n"], "x": el["x"], "v": _value(by_id.get(prefix + ".value[x]"))}
    if sub:
        out["sub"] = sub
    return out


def main(pkg: Path, out: Path) -> None:
    sds: dict[str, dict[str, Any]] = {}
    exts: dict[str, dict[str, Any]] = {}
    for f in pkg.glob("StructureDefinition-*.json"):
        sd = json.loads(f.read_text())
        if sd.get("derivation") == "constraint" and sd.get("type") == "Extension":
            exts[sd["url"]] = sd
        elif sd.get("derivation") in ("specialization", None) and sd["kind"] != "logical":
            sds[sd["type"]] = sd
    # closure of types
    todo, seen = list(ROOTS), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in sds:
            continue
        seen.add(name)
        base = sds[name].get("baseDefinition")
        if base:
            todo.append(_short(base))
        for el in sds[name]["snapshot"]["element"]:
            for t in el.get("type", []):
                todo.append(_type_code(t))
    types: dict[str, Any] = {}
    bound: set[str] = set()
    for name in sorted(seen):
        sd = sds[name]
        elements = [compact_element(el, name) for el in sd["snapshot"]["element"]]
        for el in elements:
            if "b" in el:
                bound.add(el["b"][1])
        entry: dict[str, Any] = {"k": sd["kind"], "e": elements}
        if sd["kind"] == "primitive-type":
            for el in sd["snapshot"]["element"]:
                if el["path"].endswith(".value"):
                    for ext in el["type"][0].get("extension", []):
                        if ext["url"] == REGEX_EXT:
                            entry["re"] = ext["valueString"]
        if sd.get("abstract"):
            entry["a"] = 1
        if sd.get("baseDefinition"):
            entry["base"] = _short(sd["baseDefinition"])
        types[name] = entry
    extensions: dict[str, Any] = {}
    for url, sd in sorted(exts.items()):
        els = sd["snapshot"]["element"]
        ctx = [c.get("expression", "") for c in sd.get("context", [])]
        compact = [compact_element(el, "Extension") for el in els]
        for el in compact:
            if "b" in el:
                bound.add(el["b"][1])
        extensions[url] = compact_extension(ctx, compact)
    valuesets: dict[str, Any] = {}
    exp = json.loads((pkg / "Bundle-valueset-expansions.json").read_text())
    for entry in exp["entry"]:
        vs = entry["resource"]
        if vs["url"] not in bound:
            continue
        contains = vs.get("expansion", {}).get("contains", [])
        codes: dict[str, list[str]] = {}

        def walk(items: list[dict[str, Any]], codes: dict[str, list[str]] = codes) -> None:
            for c in items:
                if "code" in c and not c.get("abstract"):
                    codes.setdefault(c.get("system", ""), []).append(c["code"])
                walk(c.get("contains", []))

        walk(contains)
        total = sum(len(v) for v in codes.values())
        if 0 < total <= MAX_CODES and not any(p.get("name") == "limitedExpansion"
                                              for p in vs["expansion"].get("parameter", [])):
            valuesets[vs["url"]] = codes
    # complete code systems behind those value sets: any Coding in them must use one of their codes
    systems = {system for vs in valuesets.values() for system in vs}
    codesystems: dict[str, list[str]] = {}

    def concepts(items: list[dict[str, Any]]) -> list[str]:
        return [code for c in items for code in [c["code"], *concepts(c.get("concept", []))]]

    for f in pkg.glob("CodeSystem-*.json"):
        cs = json.loads(f.read_text())
        if cs.get("url") in systems and cs.get("content") == "complete":
            codesystems[cs["url"]] = sorted(set(concepts(cs.get("concept", []))))
    data = {
        "source": "npm hl7.fhir.r4.examples@4.0.1 (HL7 FHIR R4 4.0.1, CC0)",
        "types": types,
        "extensions": extensions,
        "valuesets": valuesets,
        "codesystems": codesystems,
    }
    out.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True))
    print(f"{out}: {len(types)} types, {len(extensions)} extensions, {len(valuesets)} value sets, "
          f"{len(codesystems)} code systems, "
          f"{out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "definitions" / "r4-core.json")
