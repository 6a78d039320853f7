"""The base R4 validator: walks a resource against the compiled definitions of ``model.py``.

One pass over the JSON, in definition order (so the issue order is stable): unknown elements, JSON shapes
(array vs single, ``_x`` primitive companions), cardinality, choice types, primitive formats, bindings against
expanded value sets, reference targets and ``#`` references to contained resources, extensions (known
definitions, contexts, sub-extensions), invariants, narrative safety and the global rules ele-1, ext-1, dom-2..6.
Every issue carries the FHIRPath of the offending element (``Patient.identifier[1].system``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from fhir_common.narrative import check_div
from fhir_common.outcome import Issue
from fhir_common.types import Resource

from . import primitives
from .bundles import bundle_rules
from .model import Binding, Definitions, ExtensionDef, Model, Node, definitions

PRIMITIVE_CHECKS = primitives.CHECKS
PRIMITIVE_TYPES = primitives.PRIMITIVES
# primitives with checks beyond their format: narrative safety, '#' references, outer whitespace
_SPECIAL_PRIMITIVES = frozenset({"xhtml", "uri", "url", "canonical", "string", "markdown"})
_TEXT = frozenset({"string", "markdown"})
_URIS = frozenset({"uri", "url", "canonical"})

_REF_RE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?")
_HL7_EXT = "http://hl7.org/fhir/StructureDefinition/"
_LANGUAGES = "http://hl7.org/fhir/ValueSet/languages"
_MIMETYPES = "http://hl7.org/fhir/ValueSet/mimetypes"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MIME = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"]*\"))*")
_BCP47 = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*|[xX](-[A-Za-z0-9]{1,8})+")
# Extensions without a definition here. The HL7 validator rejects them ("could not be found so is not allowed
# here") unless their URL is an example one or in an allowed domain (its -extension option); ours are the IGs this
# server implements as transcribed rules and the US Core / Synthea extensions of the Synthea data it is loaded with.
EXAMPLE_URLS = ("example.org", "acme.com", "nema.org")
# (plus the cross-version extensions http://hl7.org/fhir/5.0/StructureDefinition/extension-..., which the HL7
# validator generates from the other FHIR versions: FR Core Immunization uses the R5 basedOn one)
EXTENSION_DOMAINS = ("http://hl7.org/fhir/tools/StructureDefinition/", "https://hl7.fr/ig/fhir/",
                     "https://interop.esante.gouv.fr/ig/fhir/", "https://profiles.ihe.net/",
                     "http://hl7.org/fhir/us/core/", "http://synthetichealth.github.io/",
                     "http://hl7.org/fhir/1.0/StructureDefinition/extension-",
                     "http://hl7.org/fhir/3.0/StructureDefinition/extension-",
                     "http://hl7.org/fhir/4.3/StructureDefinition/extension-",
                     "http://hl7.org/fhir/5.0/StructureDefinition/extension-")
# the only R4 core extensions with isModifier = true (StructureDefinition snapshots of hl7.fhir.r4.examples 4.0.1)
MODIFIER_EXTENSIONS = frozenset({_HL7_EXT + "capabilitystatement-prohibited", _HL7_EXT + "request-doNotPerform"})
# elements typed Quantity(SimpleQuantity) in the served types: sqty-1, no comparator
SIMPLE_QUANTITY = frozenset({"Immunization.doseQuantity"})


@dataclass(slots=True)
class Frame:
    """Per-resource state: the resource (for %resource) and its contained ids / local references."""

    resource: Resource
    contained: dict[str, str] = field(default_factory=dict)  # id → resourceType
    local_refs: set[str] = field(default_factory=set)


class Validator:
    """Stateless apart from the compiled definitions; one instance serves every thread."""

    def __init__(self, defs: Definitions | None = None) -> None:
        self.defs = defs or definitions()
        self.resource_types = frozenset(t for t in self.defs.models if self.defs.is_resource(t))

    # -- entry points -------------------------------------------------------------------------------------
    def validate(self, resource: Any) -> list[Issue]:
        issues: list[Issue] = []
        if not isinstance(resource, dict):
            return [Issue("error", "structure", "A resource must be a JSON object", ())]
        rt = resource.get("resourceType")
        self._resource(resource, rt if isinstance(rt, str) else "Resource", issues, None)
        return issues

    # -- resources ----------------------------------------------------------------------------------------
    def _resource(self, obj: Any, path: str, issues: list[Issue], parent: Frame | None,
                  contained: bool = False) -> None:
        if not isinstance(obj, dict):
            issues.append(Issue("error", "structure", "A resource must be a JSON object", (path,)))
            return
        rt = obj.get("resourceType")
        if not isinstance(rt, str):
            issues.append(Issue("error", "required", "resourceType is missing", (f"{path}.resourceType"
                                                                                   if path != "Resource" else
                                                                                   "resourceType",)))
            return
        model = self.defs.models.get(rt)
        if model is None or not self.defs.is_resource(rt):
            self._foreign(obj, rt, path, issues)
            if contained and parent is not None:
                _collect_local_refs(obj, parent.local_refs)
            return
        frame = parent if contained and parent is not None else Frame(obj)
        if not contained:
            for c in obj.get("contained") or ():
                if isinstance(c, dict) and isinstance(c.get("id"), str):
                    frame.contained[c["id"]] = str(c.get("resourceType"))
        rid = obj.get("id")
        if rid is not None and (msg := primitives.check("id", rid)):
            issues.append(Issue("error", "value", f"Resource id {msg}", (f"{path}.id",)))
        self._object(model, obj, path, frame, issues, (rt, *self._bases(rt)), root=True)
        if not contained:
            self._domain_rules(obj, path, frame, issues)
        if rt == "Bundle":
            _bundle_rules(obj, path, issues)
            bundle_rules(obj, path, issues)

    def _foreign(self, obj: dict[str, Any], rt: str, path: str, issues: list[Issue]) -> None:
        """A resource type outside the validated R4 types (``r4model.validated_types``): structural check
        (fhir.resources) only."""
        from .structural import validate_structure

        for issue in validate_structure(obj):
            if issue.code == "structure" and issue.diagnostics.startswith("Unknown resource type"):
                pass
            expr = tuple(path + e[len(rt):] if e.startswith(rt) else f"{path}.{e}" for e in issue.expression)
            issues.append(Issue(issue.severity, issue.code, issue.diagnostics, expr))

    def _bases(self, type_: str) -> list[str]:
        out, base = [], self.defs.bases.get(type_)
        while base:
            out.append(base)
            base = self.defs.bases.get(base)
        return out

    def _domain_rules(self, obj: dict[str, Any], path: str, frame: Frame, issues: list[Issue]) -> None:
        contained = obj.get("contained")
        text = obj.get("text")
        div = text.get("div") if isinstance(text, dict) else None
        div = div if isinstance(div, str) else ""
        if isinstance(contained, list):
            ids: set[str] = set()
            for i, c in enumerate(contained):
                if not isinstance(c, dict):
                    continue
                cpath = f"{path}.contained[{i}]"
                if isinstance(c.get("id"), str):
                    if c["id"] in ids:  # '#id' would name two resources (HL7: RESOURCE_DUPLICATE_CONTAINED_ID)
                        issues.append(Issue("error", "duplicate", f"Duplicate id for contained resource: "
                                                                  f"'{c['id']}'", (f"{cpath}.id",)))
                    ids.add(c["id"])
                if "contained" in c:
                    issues.append(Issue("error", "invariant", "Constraint failed: dom-2: a contained resource SHALL "
                                                              "NOT contain nested resources", (cpath,)))
                meta: dict[str, Any] = c["meta"] if isinstance(c.get("meta"), dict) else {}
                if "versionId" in meta or "lastUpdated" in meta:
                    issues.append(Issue("error", "invariant", "Constraint failed: dom-4: a contained resource SHALL "
                                                              "NOT have a meta.versionId or a meta.lastUpdated",
                                        (f"{cpath}.meta",)))
                if "security" in meta:
                    issues.append(Issue("error", "invariant", "Constraint failed: dom-5: a contained resource SHALL "
                                                              "NOT have a security label", (f"{cpath}.meta.security",)))
                cid = c.get("id")
                if isinstance(cid, str) and cid not in frame.local_refs and "" not in frame.local_refs and (
                        f'"#{cid}"' not in div):
                    issues.append(Issue("error", "invariant", f"Constraint failed: dom-3: the contained resource "
                                                              f"'{cid}' is not referenced from elsewhere in the "
                                                              "resource and does not refer to its container",
                                        (cpath,)))
                elif cid is None:
                    issues.append(Issue("error", "required", "A contained resource must have an id",
                                        (f"{cpath}.id",)))
        if not div and "DomainResource" in self._bases(str(obj.get("resourceType"))):
            # best-practice recommendation: reported as information so that it never reads as a defect
            issues.append(Issue("information", "invariant", "Constraint failed: dom-6: a resource should have "
                                                            "narrative for robust management (best practice)",
                                (path,)))

    # -- complex values -----------------------------------------------------------------------------------
    def _object(self, model: Model, obj: Any, path: str, frame: Frame, issues: list[Issue],
                ctx: tuple[str, ...], *, root: bool = False, ext_def: ExtensionDef | None = None) -> None:
        if not isinstance(obj, dict):
            issues.append(Issue("error", "structure", f"must be a JSON object, not {_json_kind(obj)}", (path,)))
            return
        if not obj:
            issues.append(Issue("error", "invariant", "Constraint failed: ele-1: all FHIR elements must have a "
                                                      "@value or children (empty object)", (path,)))
            return
        found: dict[str, list[Any] | None] = {}
        keys = model.keys
        for key, val in obj.items():
            companion = key[:1] == "_"
            if not companion:
                entry = keys.get(key)
                # the common case, checked at once: a key without a `_key` companion
                if entry is not None and (entry[1] not in PRIMITIVE_TYPES or "_" + key not in obj):
                    node = entry[0]
                    if node.name in found:  # a choice element present under two types
                        issues.append(Issue("error", "structure", f"Only one type of {node.name}[x] may be present",
                                            (f"{path}.{key}",)))
                        continue
                    found[node.name] = None
                    fast = node.fast
                    if fast is None or not fast(val):
                        self._element(node, entry[1], val, None, path, frame, issues, ctx, ext_def)
                    continue
            entry = keys.get(key[1:] if companion else key)
            if entry is None or (companion and entry[1] not in PRIMITIVE_TYPES):
                if not (root and key == "resourceType"):
                    issues.append(Issue("error", "structure", f"Unknown element '{key}'", (f"{path}.{key}",)))
                continue
            node, t = entry
            slot = found.get(node.name)
            if slot is None and node.name not in found:
                slot = found[node.name] = [node, t, None, None]
            elif slot is None or slot[1] != t:
                issues.append(Issue("error", "structure", f"Only one type of {node.name}[x] may be present",
                                    (f"{path}.{key}",)))
                continue
            slot[3 if companion else 2] = val
        # present elements in the order of the JSON (stable for a given input), then the missing required ones
        for slot in found.values():
            if slot is not None:
                self._element(slot[0], slot[1], slot[2], slot[3], path, frame, issues, ctx, ext_def)
        for node in model.required:
            if node.name not in found:
                issues.append(Issue("error", "required", f"Missing required element '{node.name}' "
                                                         f"(minimum {node.min})", (f"{path}.{node.name}",)))
        for inv in model.invariants:
            if inv.check is not None and not inv.check(_aliased(model, obj), frame.resource):
                issues.append(Issue(inv.severity, "invariant", f"Constraint failed: {inv.key}: {inv.human}", (path,)))

    def _element(self, node: Node, t: str, value: Any, companion: Any, parent: str, frame: Frame,
                 issues: list[Issue], ctx: tuple[str, ...], ext_def: ExtensionDef | None) -> None:
        primitive = t in PRIMITIVE_CHECKS or t == "xhtml"
        if node.max == 1 and companion is None and primitive and value is not None and (
                not isinstance(value, list)):  # the common case, kept short: no path string unless needed
            fn = PRIMITIVE_CHECKS.get(t)
            if fn is not None and not node.checks and fn(value) is None and (
                    t not in _SPECIAL_PRIMITIVES or (t in _TEXT and not (value[:1].isspace() or value[-1:].isspace()))
                    or (t in _URIS and value[:1] != "#")):
                return  # valid, nothing else to check
            base = f"{parent}.{node.name}.ofType({t})" if node.choice else f"{parent}.{node.name}"
            self._primitive(node, t, value, None, base, frame, issues)
            if node.checks:
                self._rules(node, t, value, base, frame, issues)
            return
        base = f"{parent}.{node.name}.ofType({t})" if node.choice else f"{parent}.{node.name}"
        if companion is None and not primitive and value:  # complex values without companions: the common case
            many = node.max is None or node.max > 1
            if many and isinstance(value, list):
                n = len(value)
                if node.max is not None and n > node.max:
                    issues.append(Issue("error", "structure", f"'{node.name}' allows at most {node.max}, found {n}",
                                        (base,)))
                if n < node.min:
                    issues.append(Issue("error", "required", f"'{node.name}' requires at least {node.min}, found "
                                                             f"{n}", (base,)))
                for i, v in enumerate(value):
                    self._complex(node, t, v, f"{base}[{i}]", frame, issues, ctx, ext_def)
                return
            if not many and isinstance(value, dict):
                self._complex(node, t, value, base, frame, issues, ctx, ext_def)
                return
        if node.max is None or node.max > 1:
            if value is not None and not isinstance(value, list):
                issues.append(Issue("error", "structure", f"'{node.name}' must be a JSON array (it repeats)",
                                    (base,)))
                return
            if companion is not None and not isinstance(companion, list):
                issues.append(Issue("error", "structure", f"'_{node.name}' must be a JSON array", (base,)))
                return
            if value == [] or companion == []:
                issues.append(Issue("error", "invariant", "Constraint failed: ele-1: an array must not be empty",
                                    (base,)))
                return
            values, companions = value or [], companion or []
            n = max(len(values), len(companions))
            items = [(values[i] if i < len(values) else None, companions[i] if i < len(companions) else None,
                      f"{base}[{i}]") for i in range(n)]
        else:
            if isinstance(value, list) or isinstance(companion, list):
                issues.append(Issue("error", "structure", f"'{node.name}' must not be an array (max 1)", (base,)))
                return
            items = [(value, companion, base)]
        if node.max is not None and len(items) > node.max:
            issues.append(Issue("error", "structure", f"'{node.name}' allows at most {node.max}, found {len(items)}",
                                (base,)))
        if len(items) < node.min:
            issues.append(Issue("error", "required", f"'{node.name}' requires at least {node.min}, found "
                                                     f"{len(items)}", (base,)))
        for v, comp, ipath in items:
            if primitive:
                self._primitive(node, t, v, comp, ipath, frame, issues)
                if node.checks and v is not None:
                    self._rules(node, t, v, ipath, frame, issues)
            elif v is None:
                issues.append(Issue("error", "structure", "null is not allowed here", (ipath,)))
            else:
                self._complex(node, t, v, ipath, frame, issues, ctx, ext_def)

    def _complex(self, node: Node, t: str, v: Any, ipath: str, frame: Frame, issues: list[Issue],
                 ctx: tuple[str, ...], ext_def: ExtensionDef | None) -> None:
        """One non-null value of a complex type: its children, then the datatype's own rules and the element's."""
        if node.model is not None:
            self._object(node.model, v, ipath, frame, issues, node.model.ctx)
        elif t == "Extension":
            self._extension(v, ipath, frame, issues, ctx, ext_def, node.name == "modifierExtension")
            return
        elif t == "Resource" or t in self.resource_types:
            self._resource(v, ipath, issues, frame, contained=node.name == "contained")
            return
        else:
            model = self.defs.models.get(t)
            if model is not None:
                self._object(model, v, ipath, frame, issues, model.ctx)
            if t == "Reference" and isinstance(v, dict):
                self._reference(v, node.targets, ipath, frame, issues)
            elif t == "Coding" and isinstance(v, dict):
                self._coding(v, ipath, issues)
            elif t == "Identifier" and isinstance(v, dict):
                _identifier(v, ipath, issues)
            elif t == "Quantity" and node.path in SIMPLE_QUANTITY and isinstance(v, dict) and "comparator" in v:
                issues.append(Issue("error", "invariant", "Constraint failed: sqty-1: the comparator is not used "
                                                          "on a SimpleQuantity", (f"{ipath}.comparator",)))
        if node.checks:
            self._rules(node, t, v, ipath, frame, issues)

    def _rules(self, node: Node, t: str, v: Any, ipath: str, frame: Frame, issues: list[Issue]) -> None:
        """Binding, fixed/pattern values and invariants of one element value."""
        if node.binding is not None:
            self._binding(node.binding, t, v, ipath, issues)
        if node.fixed is not None and v != node.fixed[1]:
            issues.append(Issue("error", "value", f"Value must be exactly {node.fixed[1]!r}", (ipath,)))
        if node.pattern is not None and not _matches(v, node.pattern[1]):
            issues.append(Issue("error", "value", f"Value must match the pattern {node.pattern[1]!r}", (ipath,)))
        for inv in node.invariants:
            if inv.check is not None and not inv.check(v, frame.resource):
                issues.append(Issue(inv.severity, "invariant", f"Constraint failed: {inv.key}: {inv.human}",
                                    (ipath,)))

    def _primitive(self, node: Node, t: str, v: Any, comp: Any, ipath: str, frame: Frame,
                   issues: list[Issue]) -> None:
        if v is None and comp is None:
            issues.append(Issue("error", "invariant", "Constraint failed: ele-1: a primitive must have a value or "
                                                      "extensions (null)", (ipath,)))
            return
        if v is not None:
            fn = PRIMITIVE_CHECKS.get(t)
            msg = fn(v) if fn is not None else None
            if msg:
                issues.append(Issue("error", "value" if isinstance(v, str) else "structure",
                                    f"{node.name}: {msg}", (ipath,)))
                return
            if t == "xhtml":
                for key, problem in check_div(v):
                    issues.append(Issue("error", "invariant", f"Constraint failed: {key}: {problem}", (ipath,)))
            elif t in ("uri", "canonical", "url") and v.startswith("#"):
                frame.local_refs.add(v[1:])
            elif (t == "string" or t == "markdown") and (v[:1].isspace() or v[-1:].isspace()):
                issues.append(Issue("warning", "value", f"{node.name}: the value should not start or end with "
                                                        "whitespace", (ipath,)))
        if comp is not None:
            model = self.defs.models.get(t)
            if model is not None:
                self._object(model, comp, ipath, frame, issues, (node.path, t, "Element"))

    # -- datatypes with behaviour -------------------------------------------------------------------------
    def _reference(self, v: dict[str, Any], targets: tuple[str, ...], path: str, frame: Frame,
                   issues: list[Issue]) -> None:
        ref = v.get("reference")
        target: str | None = None
        if isinstance(ref, str):
            if ref.startswith("#"):
                frame.local_refs.add(ref[1:])
                if ref != "#":
                    target = frame.contained.get(ref[1:])
                    if target is None:
                        issues.append(Issue("error", "invariant", f"Constraint failed: ref-1: '{ref}' does not name "
                                                                  "a contained resource", (f"{path}.reference",)))
            elif (m := _REF_RE.fullmatch(ref)) and not ref.startswith(("urn:", "#")):
                target = m.group(1)
            elif any(c.isspace() for c in ref):
                issues.append(Issue("error", "structure", f"The reference '{ref}' is not a valid reference",
                                    (f"{path}.reference",)))
        declared = v.get("type")
        open_ = not targets or "Resource" in targets
        if isinstance(declared, str) and "://" not in declared and not open_ and declared not in targets:
            # Reference.type is what the reference claims: the HL7 validator rejects a type the element excludes
            issues.append(Issue("error", "structure", f"The type '{declared}' is not a valid target for this "
                                                      f"element (allowed: {', '.join(targets)})", (f"{path}.type",)))
        elif target and not open_ and target not in targets:
            # the type a literal reference names is outside the element's targetProfile: the HL7 validator rejects
            # it once it resolves the target (Reference_REF_BadTargetType) or, unresolved, when told to trust
            # RESTful references (BadTargetType2); this server stores what it is given, so it is an error here
            issues.append(Issue("error", "structure",
                                f"A reference to {target} is not allowed here (allowed: {', '.join(targets)})",
                                (f"{path}.reference",) if ref else (path,)))

    def _coding(self, v: dict[str, Any], path: str, issues: list[Issue]) -> None:
        """A code of a complete R4 code system must exist in it (any binding strength, or none)."""
        system = v.get("system")
        if isinstance(system, str) and ":" not in system:
            issues.append(Issue("warning", "value", f"Coding.system should be an absolute reference, not a local "
                                                  f"reference ('{system}')", (f"{path}.system",)))
        codes = self.defs.codesystems.get(system) if isinstance(system, str) else None
        code = v.get("code")
        if codes is not None and isinstance(code, str) and code not in codes:
            issues.append(Issue("error", "code-invalid", f"Unknown code '{code}' in the code system "
                                                         f"{v.get('system')}", (f"{path}.code",)))

    def _binding(self, b: Binding, t: str, v: Any, path: str, issues: list[Issue]) -> None:
        if b.url == _LANGUAGES:
            _language(t, v, path, issues)
            return
        if b.url == _MIMETYPES:
            if isinstance(v, str) and not _MIME.fullmatch(v):
                issues.append(Issue("error", "code-invalid", f"'{v}' is not a valid MIME type (type/subtype, e.g. "
                                                             "application/pdf)", (path,)))
            return
        if b.codes is None or b.strength == "example":
            return
        if t == "code":
            if not isinstance(v, str) or v in (b.bare or ()):
                return
            shown = f"'{v}'"
            where = path
        elif t == "Coding":
            if not isinstance(v, dict) or "code" not in v or b.has(v.get("system"), v.get("code")):
                return
            if "system" not in v and v.get("code") in (b.bare or ()):
                return
            shown, where = f"{v.get('system')}#{v.get('code')}", path
        elif t == "CodeableConcept":
            if not isinstance(v, dict):
                return
            codings = [c for c in v.get("coding") or () if isinstance(c, dict) and "code" in c]
            if any(b.has(c.get("system"), c.get("code")) for c in codings):
                return
            if not codings:
                if b.strength == "required":
                    issues.append(Issue("error", "code-invalid", f"No code provided, and a code is required from "
                                                                 f"the value set {b.url}", (path,)))
                return
            shown = ", ".join(f"{c.get('system')}#{c.get('code')}" for c in codings)
            where = f"{path}.coding[0]" if len(codings) == 1 else path
        else:
            return
        if b.strength == "required":
            issues.append(Issue("error", "code-invalid", f"The code {shown} is not in the value set {b.url} "
                                                         "(required binding)", (where,)))
        elif b.strength == "extensible":
            issues.append(Issue("warning", "code-invalid", f"The code {shown} is not in the value set {b.url} "
                                                           "(extensible binding)", (where,)))
        else:
            issues.append(Issue("information", "code-invalid", f"The code {shown} is not in the value set "
                                                               f"{b.url} (preferred binding)", (where,)))

    def _extension(self, ext: Any, path: str, frame: Frame, issues: list[Issue], ctx: tuple[str, ...],
                   parent_def: ExtensionDef | None, modifier: bool = False) -> None:
        model = self.defs.models["Extension"]
        if not isinstance(ext, dict):
            self._object(model, ext, path, frame, issues, ("Extension",))
            return
        url = ext.get("url")
        value_keys = [k for k in ext if k.startswith("value")]
        if ("extension" in ext) == bool(value_keys):
            issues.append(Issue("error", "invariant", "Constraint failed: ext-1: must have either extensions or "
                                                      "value[x], not both", (path,)))
        definition: ExtensionDef | None = None
        value_node: Node | None = None
        known = False
        if parent_def is not None and parent_def.sub and isinstance(url, str) and url in parent_def.sub:
            value_node, known = parent_def.sub[url][2], True
        elif isinstance(url, str) and url in self.defs.extensions:
            definition, known = self.defs.extensions[url], True
            value_node = definition.value
            if definition.contexts and not _context_ok(definition.contexts, ctx):
                issues.append(Issue("error", "structure", f"The extension {url} is not allowed here (contexts: "
                                                          f"{', '.join(definition.contexts)})", (path,)))
            if modifier != (url in MODIFIER_EXTENSIONS) and definition.source == "R4":
                issues.append(Issue("error", "structure", f"The extension {url} must not be used as a "
                                                          "modifierExtension (it is a regular extension)" if modifier
                                    else f"The extension {url} is a modifier: it must be a modifierExtension",
                                    (path,)))
        elif parent_def is not None and parent_def.sub and isinstance(url, str) and "/" not in url:
            issues.append(Issue("error", "structure", f"Unknown sub-extension '{url}' of {parent_def.url}",
                                (f"{path}.url",)))
        elif isinstance(url, str) and url.startswith(_HL7_EXT):
            issues.append(Issue("error", "structure", f"Unknown extension {url}", (f"{path}.url",)))
        elif isinstance(url, str) and ":" in url and not (any(d in url for d in EXAMPLE_URLS) or url.startswith(
                EXTENSION_DOMAINS)):
            issues.append(Issue("error", "structure", f"The extension {url} could not be found so is not allowed "
                                                      "here", (path,)))
        elif isinstance(url, str) and ":" not in url and ctx != ("Extension",):
            issues.append(Issue("error", "value", f"Extension.url must be an absolute URL ('{url}'); only the "
                                                  "sub-extensions of a complex extension use relative names",
                                (f"{path}.url",)))
        self._object(model, ext, path, frame, issues, ("Extension",), ext_def=definition)
        if known:
            self._extension_value(value_node, ext, value_keys, url, path, frame, issues)
            if definition is not None and definition.sub:
                self._sub_cardinality(definition, ext, path, issues)
            for inv in definition.invariants if definition else ():
                if inv.check is not None and not inv.check(ext, frame.resource):
                    issues.append(Issue(inv.severity, "invariant", f"Constraint failed: {inv.key}: {inv.human}",
                                        (path,)))

    def _extension_value(self, node: Node | None, ext: dict[str, Any], value_keys: list[str], url: Any,
                         path: str, frame: Frame, issues: list[Issue]) -> None:
        if node is None:
            if value_keys:
                issues.append(Issue("error", "structure", f"The extension {url} is complex: it takes extensions, "
                                                          "not a value", (f"{path}.{value_keys[0]}",)))
            return
        if not value_keys:
            if node.min > 0 and "extension" not in ext:
                issues.append(Issue("error", "required", f"The extension {url} requires a value", (path,)))
            return
        key = value_keys[0]
        t = key[5:6].lower() + key[6:]
        if t not in node.types and key[5:] not in node.types:
            issues.append(Issue("error", "structure", f"The extension {url} does not allow a value of type {key[5:]} "
                                                      f"(allowed: {', '.join(node.types)})",
                                (f"{path}.value.ofType({t})",)))
            return
        t = t if t in node.types else key[5:]
        v = ext[key]
        vpath = f"{path}.value.ofType({t})"
        if node.binding is not None:
            self._binding(node.binding, t, v, vpath, issues)
        if t == "Reference" and isinstance(v, dict) and node.targets:
            self._reference(v, node.targets, vpath, frame, issues)

    def _sub_cardinality(self, d: ExtensionDef, ext: dict[str, Any], path: str, issues: list[Issue]) -> None:
        subs = ext.get("extension")
        counts: dict[str, int] = {}
        for s in subs if isinstance(subs, list) else ():
            if isinstance(s, dict) and isinstance(s.get("url"), str):
                counts[s["url"]] = counts.get(s["url"], 0) + 1
        for url, (lo, hi, _) in d.sub.items():
            n = counts.get(url, 0)
            if n < lo:
                issues.append(Issue("error", "required", f"The extension {d.url} requires the sub-extension "
                                                         f"'{url}' (minimum {lo})", (path,)))
            elif hi is not None and n > hi:
                issues.append(Issue("error", "structure", f"The extension {d.url} allows at most {hi} '{url}' "
                                                          f"sub-extension(s), found {n}", (path,)))


def _identifier(v: dict[str, Any], path: str, issues: list[Issue]) -> None:
    system = v.get("system")
    if isinstance(system, str) and system and ":" not in system:
        issues.append(Issue("error", "value", f"Identifier.system must be an absolute reference, not a local "
                                              f"reference ('{system}')", (f"{path}.system",)))


def _language(t: str, v: Any, path: str, issues: list[Issue]) -> None:
    """Language codes: not expandable here (all-languages is the max value set), but they must be BCP-47 tags."""
    if t == "code":
        tags = [(v, path)]
    elif t == "CodeableConcept" and isinstance(v, dict):
        tags = [(c.get("code"), f"{path}.coding[{i}].code") for i, c in enumerate(v.get("coding") or ())
                if isinstance(c, dict) and c.get("system") == "urn:ietf:bcp:47"]
    else:
        return
    for tag, where in tags:
        if isinstance(tag, str) and not _BCP47.fullmatch(tag):
            issues.append(Issue("error", "code-invalid", f"'{tag}' is not a valid BCP-47 language tag (e.g. fr, "
                                                         "fr-FR)", (where,)))


_RESTFUL = re.compile(r"(https?://([A-Za-z0-9.:%$]*/)*)?([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}"
                      r"(/_history/[A-Za-z0-9\-.]{1,64})?")
_FULLURL_OPTIONAL = frozenset({"transaction", "transaction-response", "batch", "batch-response"})


def _bundle_rules(bundle: Resource, path: str, issues: list[Issue]) -> None:
    """The HL7 validator's Bundle rules (BundleValidator): an absolute fullUrl, which when it looks like a RESTful
    URL ends with its resource's [type]/[id]; a fullUrl on every entry except in transactions and batches."""
    entries = bundle.get("entry")
    optional = bundle.get("type") in _FULLURL_OPTIONAL
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, dict):
            continue
        where = f"{path}.entry[{i}]"
        full, res = entry.get("fullUrl"), entry.get("resource")
        if not isinstance(full, str) or not full:
            if not optional and full is None:
                issues.append(Issue("error", "invalid", "Except for transactions and batches, each entry in a Bundle "
                                                        "must have a fullUrl which is the identity of the resource in "
                                                        "the entry", (where,)))
            continue
        if ":" not in full:
            issues.append(Issue("error", "invalid", f"The fullUrl '{full}' must be an absolute URL",
                                (f"{where}.fullUrl",)))
            continue
        rt = res.get("resourceType") if isinstance(res, dict) else None
        if not isinstance(res, dict) or not isinstance(rt, str) or not _RESTFUL.fullmatch(full):
            continue
        rid = res.get("id")
        if not isinstance(rid, str):
            issues.append(Issue("error", "invalid", f"The fullUrl '{full}' looks like a RESTful server URL, so the "
                                                    "resource must have an id", (f"{where}.fullUrl",)))
        elif not full.endswith(f"/{rt}/{rid}"):
            issues.append(Issue("error", "invalid", f"The fullUrl '{full}' looks like a RESTful server URL, so it "
                                                    f"must end with the resource's type and id (/{rt}/{rid})",
                                (f"{where}.fullUrl",)))


def _collect_local_refs(value: Any, into: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str) and v.startswith("#"):
                into.add(v[1:])
            else:
                _collect_local_refs(v, into)
    elif isinstance(value, list):
        for v in value:
            _collect_local_refs(v, into)


def _aliased(model: Model, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with choice elements also under their FHIRPath name (``value``), which fhirpathpy cannot infer
    for an element evaluated without its type."""
    extra = {}
    for key in obj:
        entry = model.keys.get(key)
        if entry is not None and entry[0].choice:
            extra[entry[0].name] = obj[key]
    return {**obj, **extra} if extra else obj


@lru_cache(maxsize=4096)
def _context_ok(contexts: tuple[str, ...], ctx: tuple[str, ...]) -> bool:
    names = set(ctx) | {"Element", "Base"}
    return any(c in names or c.split(".", 1)[0] in ("Element",) for c in contexts)


def _matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern is present with that value (arrays: any item)."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        for k, pv in pattern.items():  # noqa: SIM110 (a loop, not all(genexpr): runs for every slice candidate)
            if not _matches(value.get(k), pv):
                return False
        return True
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return bool(value == pattern)


def _json_kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")
