"""Regenerate ``r4-model.json.gz``: the one R4 model every layer reads (through ``fhir_common/r4model.py``).

Provenance: the npm package ``hl7.fhir.r4.examples@4.0.1`` (HL7 FHIR R4 specification content, CC0), which carries
every R4 StructureDefinition (with snapshots), ValueSet, CodeSystem and the ``valueset-expansions`` Bundle.
``hl7.fhir.r4.core`` is not served by the npm registry reachable here; the examples package holds the same
definitions.

Usage (run by a developer, never at run time or test time)::

    mkdir -p /tmp/r4 && cd /tmp/r4 && npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
    .venv/bin/python fhir_common/definitions/build.py /tmp/r4/package

Kept, with short keys, minified and gzipped:

- ``types``: every non-logical R4 type (primitive, complex, resource), its snapshot elements in order (the XML
  order) with what conversion, validation and ``_summary`` read: path ``p``, min ``n``, max ``x``, types ``t``
  (``[code, [target profiles]]``), ``cr`` contentReference, ``b`` binding, ``c`` invariants, ``f``/``pt``
  fixed/pattern, ``m`` isModifier, ``s`` sliceName, ``id`` (sliced ones only), ``sum`` isSummary, ``xa`` XML
  attribute representation;
- ``validated``: the closure of the types the validation engine compiles (the served types and what they use);
- ``extensions``: every core extension definition (compact: contexts, value types, sub-extensions);
- ``valuesets`` / ``codesystems``: the expansions of the value sets bound in the validated closure and the complete
  code systems behind them.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("r4-model.json.gz")
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


def compact_element(el: dict[str, Any]) -> dict[str, Any]:
    """One snapshot element with only what the model's readers use."""
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
    if el.get("isSummary"):
        out["sum"] = 1
    if "xmlAttr" in el.get("representation", []):
        out["xa"] = 1
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
    cons = [c for c in by_id["Extension"].get("c", []) if c[0] != "ext-1"]
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


def _closure(sds: dict[str, dict[str, Any]]) -> set[str]:
    """The ROOTS and every type they reach (bases, element types), recursively."""
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
            todo.extend(_type_code(t) for t in el.get("type", []))
    return seen


def _type(sd: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"k": sd["kind"], "e": [compact_element(el) for el in sd["snapshot"]["element"]]}
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
    return entry


def _expansions(pkg: Path, bound: set[str]) -> dict[str, dict[str, list[str]]]:
    valuesets: dict[str, dict[str, list[str]]] = {}
    exp = json.loads((pkg / "Bundle-valueset-expansions.json").read_text())
    for entry in exp["entry"]:
        vs = entry["resource"]
        if vs["url"] not in bound:
            continue
        codes: dict[str, list[str]] = {}

        def walk(items: list[dict[str, Any]], codes: dict[str, list[str]] = codes) -> None:
            for c in items:
                if "code" in c and not c.get("abstract"):
                    codes.setdefault(c.get("system", ""), []).append(c["code"])
                walk(c.get("contains", []))

        walk(vs.get("expansion", {}).get("contains", []))
        total = sum(len(v) for v in codes.values())
        if 0 < total <= MAX_CODES and not any(p.get("name") == "limitedExpansion"
                                              for p in vs["expansion"].get("parameter", [])):
            valuesets[vs["url"]] = codes
    return valuesets


def _codesystems(pkg: Path, systems: set[str]) -> dict[str, list[str]]:
    """Complete code systems behind the expanded value sets: any Coding in them must use one of their codes."""
    def concepts(items: list[dict[str, Any]]) -> list[str]:
        return [code for c in items for code in [c["code"], *concepts(c.get("concept", []))]]

    out: dict[str, list[str]] = {}
    for f in pkg.glob("CodeSystem-*.json"):
        cs = json.loads(f.read_text())
        if cs.get("url") in systems and cs.get("content") == "complete":
            out[cs["url"]] = sorted(set(concepts(cs.get("concept", []))))
    return out


def build(pkg: Path) -> dict[str, Any]:
    sds: dict[str, dict[str, Any]] = {}
    exts: dict[str, dict[str, Any]] = {}
    for f in pkg.glob("StructureDefinition-*.json"):
        sd = json.loads(f.read_text())
        if sd.get("derivation") == "constraint" and sd.get("type") == "Extension":
            exts[sd["url"]] = sd
        elif sd.get("derivation") in ("specialization", None) and sd["kind"] != "logical":
            sds[sd["type"]] = sd
    types = {name: _type(sds[name]) for name in sorted(sds)}
    validated = sorted(_closure(sds))
    extensions: dict[str, Any] = {}
    for url, sd in sorted(exts.items()):
        compact = [compact_element(el) for el in sd["snapshot"]["element"]]
        extensions[url] = compact_extension([c.get("expression", "") for c in sd.get("context", [])], compact)
    bound = {el["b"][1] for name in validated for el in types[name]["e"] if "b" in el}
    bound |= {el["b"][1] for sd in exts.values() for el in map(compact_element, sd["snapshot"]["element"])
              if "b" in el}
    valuesets = _expansions(pkg, bound)
    return {
        "note": ("FHIR R4 4.0.1 model generated by fhir_common/definitions/build.py from npm "
                 "hl7.fhir.r4.examples@4.0.1 (HL7 FHIR specification, CC0). Do not edit by hand."),
        "fhirVersion": "4.0.1",
        "types": types,
        "validated": validated,
        "extensions": extensions,
        "valuesets": valuesets,
        "codesystems": _codesystems(pkg, {s for vs in valuesets.values() for s in vs}),
    }


def main(argv: list[str]) -> int:
    data = build(Path(argv[1]))
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
    OUTPUT.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))  # mtime 0: same input, same bytes
    print(f"{OUTPUT}: {len(data['types'])} types ({len(data['validated'])} validated), "
          f"{len(data['extensions'])} extensions, {len(data['valuesets'])} value sets, "
          f"{len(data['codesystems'])} code systems, {len(text) // 1024} KiB, "
          f"{OUTPUT.stat().st_size // 1024} KiB gzipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
