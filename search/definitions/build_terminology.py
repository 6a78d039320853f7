"""Regenerate ``terminology-r4.json``: the R4 code systems and value sets token search can reason about.

Source: the official R4 (4.0.1) content, npm package ``hl7.fhir.r4.examples@4.0.1`` (CC0; see
``fhir_common/definitions/build.py`` for how to fetch it).  Two parts:

* ``codeSystems``: every CodeSystem with ``content = complete``, as ``{url: {code: [parent codes]}}``.
  Parents come from nested ``concept`` elements and from the ``subsumedBy`` / ``parent`` / ``child``
  properties; they back token ``:below`` / ``:above`` (subsumption, search.html#token).  A system
  listed here is "known": subsumption against any other system is refused (400), never guessed.
* ``valueSets``: the official expansions (``Bundle-valueset-expansions.json``) that are complete (no
  ``limitedExpansion`` parameter), as ``{url: {system: [codes]}}``; they back ``:in`` / ``:not-in``
  next to the French JDVs of ``value-sets.json``.
* ``implicitSystems``: ``{type: {parameter: system}}`` for token parameters whose path ends on a
  ``code`` element bound (required) to a value set drawn from one code system (``Patient.gender``):
  such codes carry that system implicitly, so ``gender=http://hl7.org/fhir/administrative-gender|male``
  and ``gender:in=...`` match them.
* ``caseInsensitiveSystems``: the URLs of the CodeSystems that say ``caseSensitive = false`` (whatever
  their ``content``: SNOMED CT's is ``not-present``).  Token codes are compared case-insensitively
  only in those; a system that says ``true``, says nothing, or is unknown is compared exactly
  (``Patient?gender=FEMALE`` does not find ``female``: administrative-gender is case-sensitive).

    .venv/bin/python search/definitions/build_terminology.py /tmp/r4/package [OUTPUT]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path(__file__).with_name("terminology-r4.json")
PARENT_PROPERTIES = ("subsumedBy", "parent")


def _concepts(concepts: list[dict[str, Any]], parent: str | None) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    for c in concepts:
        yield c["code"], parent, c
        yield from _concepts(c.get("concept", []), c["code"])


def code_system(cs: dict[str, Any]) -> dict[str, list[str]]:
    """``{code: [parents]}`` of one complete CodeSystem (nesting and parent/child properties)."""
    parents: dict[str, list[str]] = {}

    def link(child: str, parent: str) -> None:
        bucket = parents.setdefault(child, [])
        if parent != child and parent not in bucket:
            bucket.append(parent)

    for code, parent, concept in _concepts(cs.get("concept", []), None):
        parents.setdefault(code, [])
        if parent is not None:
            link(code, parent)
        for prop in concept.get("property", []):
            value = prop.get("valueCode")
            if not isinstance(value, str):
                continue
            if prop.get("code") in PARENT_PROPERTIES:
                link(code, value)
            elif prop.get("code") == "child":
                link(value, code)
    return {code: sorted(ps) for code, ps in sorted(parents.items())}


def _contains(items: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for c in items:
        if c.get("system") and c.get("code") and not c.get("abstract"):
            yield c["system"], c["code"]
        yield from _contains(c.get("contains", []))


def value_set(expanded: dict[str, Any]) -> dict[str, list[str]] | None:
    """``{system: [codes]}`` of a complete expansion; ``None`` for a truncated one."""
    expansion = expanded.get("expansion") or {}
    if any(p.get("name") == "limitedExpansion" for p in expansion.get("parameter", [])):
        return None
    out: dict[str, list[str]] = {}
    for system, code in _contains(expansion.get("contains", [])):
        bucket = out.setdefault(system, [])
        if code not in bucket:
            bucket.append(code)
    return {s: sorted(cs) for s, cs in sorted(out.items())} or None


def _elements(package: Path) -> dict[str, dict[str, Any]]:
    """``path -> ElementDefinition`` of every resource and datatype snapshot of the package."""
    out: dict[str, dict[str, Any]] = {}
    for path in package.glob("StructureDefinition-*.json"):
        sd = json.loads(path.read_text(encoding="utf-8"))
        if sd.get("derivation") == "constraint" or sd.get("kind") == "logical":
            continue
        for e in (sd.get("snapshot") or {}).get("element", []):
            out.setdefault(e["path"], e)
    return out


def _element_at(elements: dict[str, dict[str, Any]], expression: str) -> dict[str, Any] | None:
    """The element a plain dotted FHIRPath (``Patient.address.use``) ends on, through datatypes."""
    steps = expression.split(".")
    if not all(s.isidentifier() for s in steps):
        return None
    current = steps[0]
    element: dict[str, Any] | None = None
    for step in steps[1:]:
        element = elements.get(f"{current}.{step}")
        if element is None:
            return None
        types = [t["code"] for t in element.get("type", [])]
        nested = len(types) != 1 or types[0] in ("BackboneElement", "Element") or not types[0][0].isupper()
        current = f"{current}.{step}" if nested else types[0]
    return element


def implicit_systems(package: Path, sets: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from search.registry import SearchParameterRegistry

    registry = SearchParameterRegistry.load_default()
    elements = _elements(package)
    out: dict[str, dict[str, str]] = {}
    for rtype in registry.resource_types():
        for code, param in registry.for_type(rtype).items():
            if param.type != "token" or len(param.paths) != 1:
                continue
            element = _element_at(elements, param.paths[0].expression)
            if element is None or [t["code"] for t in element.get("type", [])] != ["code"]:
                continue
            binding = element.get("binding") or {}
            vs = sets.get(str(binding.get("valueSet", "")).split("|")[0])
            if binding.get("strength") == "required" and vs and len(vs) == 1:
                out.setdefault(rtype, {})[code] = next(iter(vs))
    return {t: dict(sorted(v.items())) for t, v in sorted(out.items())}


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def build(package: Path) -> dict[str, Any]:
    systems: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package.glob("CodeSystem-*.json")):
        cs = json.loads(path.read_text(encoding="utf-8"))
        if cs.get("content") == "complete" and cs.get("url") and cs.get("concept"):
            systems[cs["url"]] = code_system(cs)
    insensitive = sorted({cs["url"] for cs in map(_read, package.glob("CodeSystem-*.json"))
                          if cs.get("caseSensitive") is False and cs.get("url")})
    sets: dict[str, dict[str, list[str]]] = {}
    bundle = json.loads((package / "Bundle-valueset-expansions.json").read_text(encoding="utf-8"))
    for entry in bundle.get("entry", []):
        vs = entry.get("resource") or {}
        if vs.get("url") and (codes := value_set(vs)):
            sets[vs["url"]] = codes
    return {"note": "Generated by search/definitions/build_terminology.py from hl7.fhir.r4.examples@4.0.1 "
                    "(CodeSystems with content=complete, complete ValueSet expansions); do not edit by hand.",
            "codeSystems": dict(sorted(systems.items())), "valueSets": dict(sorted(sets.items())),
            "implicitSystems": implicit_systems(package, sets), "caseInsensitiveSystems": insensitive}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    data = build(Path(argv[1]))
    output.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(data['codeSystems'])} code systems and {len(data['valueSets'])} value sets to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
