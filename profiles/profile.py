"""Profiles (constraint StructureDefinitions) as compact data: the differential rules of each profile, in a form
the engine reads directly, applied on top of the base R4 validation.

A vendored file ``definitions/fr-*.json`` holds ``profiles`` (each with canonical ``url``, ``version``, ``source``,
``type``, optional ``parent`` profile url), the ``extensions`` those profiles define and the ``valuesets`` they
bind (extracts). A profile is a tree of element rules::

    {"path": "identifier", "min": 1, "max": "*", "types": [...], "fixed": ..., "pattern": ...,
     "binding": ["required", vs-url], "targets": [...], "absent": true,
     "elements": [...rules applied to each item...],
     "slices": [{"name": "INS-NIR", "match": {pattern}, "min": 0, "max": "1", "elements": [...]}],
     "closed": true, "ordered": true}

``path`` is one element name relative to the item of the enclosing rule (``value[x]`` names match any type).
Slices are matched by their discriminators: ``match`` is a pattern (the value/pattern discriminators of the
sources: ``system``, ``url``, ``use``, ``type``); ``exists`` ({path: true|false}), ``type`` ({path: type name}, a
resource's resourceType or a choice element's type) and ``profile`` ({path: canonical}, the value conforms to that
vendored profile or base type) are the other discriminator kinds; a path is dotted from the item, ``$this`` the item
itself. ``closed`` slicing rejects items no slice matches; ``ordered`` slicing wants items in slice order.
``constraints`` are FHIRPath invariants (key, severity, human, expression, optional context path), run with
fhirpathpy, compiled once. Parents are applied first.

Why not full snapshots: the French IG packages are not reachable here (see ../shared/docs/french-profiles.md §6), so
the rules are transcribed from the FSH sources, with each profile's source recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir_common import r4model
from fhir_common.outcome import Issue
from fhir_common.types import Resource

from .engine import Validator, _matches
from .invariants import Invariant, compile_invariant
from .model import DEFINITIONS, Binding, Definitions, _binding, _load, _max, definitions


@dataclass(slots=True)
class Rule:
    name: str
    min: int | None = None
    max: int | None = None
    has_max: bool = False
    types: tuple[str, ...] = ()
    fixed: Any = None
    pattern: Any = None
    binding: Binding | None = None
    targets: tuple[str, ...] = ()
    elements: list[Rule] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    closed: bool = False
    ordered: bool = False
    invariants: tuple[Invariant, ...] = ()
    regex: re.Pattern[str] | None = None  # primitive value format
    contained: bool = False  # references must be to contained resources (aggregation = contained)
    profile: str | None = None  # a resource item must conform to this profile too


@dataclass(slots=True)
class Slice:
    name: str
    match: Any
    min: int
    max: int | None
    elements: list[Rule]
    exists: dict[str, bool] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Profile:
    url: str
    version: str
    name: str
    type: str
    source: str
    parent: str | None
    rules: list[Rule]
    invariants: tuple[Invariant, ...]
    extra: dict[str, Any]  # profile-specific switches read by custom checks (e.g. NIR key)


def _rule(raw: dict[str, Any], valuesets: dict[str, Any]) -> Rule:
    name = raw["path"]
    return Rule(
        name=name[:-3] if name.endswith("[x]") else name,
        min=raw.get("min"),
        max=_max(raw["max"]) if "max" in raw else (0 if raw.get("absent") else None),
        has_max="max" in raw or bool(raw.get("absent")),
        types=tuple(raw.get("types", ())),
        fixed=raw.get("fixed"),
        pattern=raw.get("pattern"),
        binding=_binding(raw.get("binding"), valuesets),
        targets=tuple(raw.get("targets", ())),
        elements=[_rule(e, valuesets) for e in raw.get("elements", ())],
        slices=[Slice(s["name"], s.get("match", {}), s.get("min", 0), _max(s.get("max", "*")),
                      [_rule(e, valuesets) for e in s.get("elements", ())], dict(s.get("exists", {})),
                      dict(s.get("type", {})), dict(s.get("profile", {}))) for s in raw.get("slices", ())],
        closed=bool(raw.get("closed")),
        ordered=bool(raw.get("ordered")),
        regex=re.compile(raw["regex"]) if "regex" in raw else None,
        contained=bool(raw.get("contained")),
        profile=raw.get("profile"),
        invariants=tuple(_constraint(c) for c in raw.get("constraints", ())),
    )


def _constraint(raw: dict[str, Any]) -> Invariant:
    """A profile invariant; ``native`` names a Python equivalent of the FHIRPath (french.NATIVE_INVARIANTS)."""
    inv = compile_invariant(raw["key"], raw["severity"], raw["human"], raw["expression"])
    if raw.get("native"):
        from .french import NATIVE_INVARIANTS

        inv = Invariant(inv.key, inv.severity, inv.human, inv.expression, NATIVE_INVARIANTS[raw["native"]])
    return inv


@cache
def registry() -> dict[str, Profile]:
    """Every vendored profile by canonical url (also ``url|version``)."""
    out: dict[str, Profile] = {}
    for f in sorted(DEFINITIONS.glob("fr-*.json")):
        pkg = _load(f.name)
        valuesets = {**r4model.valuesets(), **pkg.get("valuesets", {})} if pkg.get("profiles") else {}
        for raw in pkg.get("profiles", ()):
            p = Profile(url=raw["url"], version=raw["version"], name=raw["name"], type=raw["type"],
                        source=raw["source"], parent=raw.get("parent"),
                        rules=[_rule(r, valuesets) for r in raw.get("elements", ())],
                        invariants=tuple(_constraint(c) for c in raw.get("constraints", ())),
                        extra=raw.get("extra", {}))
            out[p.url] = p
            out[f"{p.url}|{p.version}"] = p
    return out


def lookup(canonical: str) -> Profile | None:
    reg = registry()
    return reg.get(canonical) or reg.get(canonical.split("|", 1)[0])


def chain(profile: Profile) -> list[Profile]:
    """The profile and its vendored ancestors, root first."""
    out = [profile]
    seen = {profile.url}
    while out[0].parent and (p := lookup(out[0].parent)) is not None and p.url not in seen:
        seen.add(p.url)
        out.insert(0, p)
    return out


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "decimal"}


def _resolve(value: Any, path: str) -> list[tuple[str | None, Any]]:
    """The values at a discriminator path (dotted from the item; ``$this`` is the item), each with the type its
    choice key names (``value[x]`` → ``valueQuantity`` → ``Quantity``)."""
    found: list[tuple[str | None, Any]] = [(None, value)]
    if path in ("", "$this"):
        return found
    for part in path.removeprefix("$this.").split("."):
        step: list[tuple[str | None, Any]] = []
        for _, v in found:
            if not isinstance(v, dict):
                continue
            if part.endswith("[x]"):
                for key, x in _choice(v, part[:-3]):
                    step.extend((key[len(part) - 3:], y) for y in _items(x))
            elif part in v:
                step.extend((None, y) for y in _items(v[part]))
        found = step
    return found


def _type_name(hint: str | None, value: Any) -> str | None:
    if hint:
        return hint
    if isinstance(value, dict):
        rt = value.get("resourceType")
        return rt if isinstance(rt, str) else None
    return _JSON_TYPES.get(type(value))


def _same_type(a: str | None, b: str) -> bool:
    return a is not None and a[:1].lower() + a[1:] == b[:1].lower() + b[1:]


def _choice(obj: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    """(key, value) of ``name`` or of any ``name<Type>`` in obj."""
    if name in obj:
        return [(name, obj[name])]
    return [(k, v) for k, v in obj.items() if k.startswith(name) and k[len(name):len(name) + 1].isupper()]


class ProfileChecker:
    """Applies one profile's rules to a resource already checked against base R4."""

    def __init__(self, defs: Definitions | None = None) -> None:
        self.defs = defs or definitions()
        self._base = Validator(self.defs)

    def check(self, profile: Profile, resource: Resource, path: str | None = None) -> list[Issue]:
        issues: list[Issue] = []
        root = path or str(resource.get("resourceType"))
        for p in chain(profile):
            if resource.get("resourceType") != p.type:
                issues.append(Issue("error", "structure", f"The profile {p.url} applies to {p.type}, not "
                                                          f"{resource.get('resourceType')}", (root,)))
                return issues
            for rule in p.rules:
                self._apply(rule, resource, root, resource, issues, p)
            for inv in p.invariants:
                self._invariant(inv, resource, resource, root, issues, p)
            if p.extra:
                from .french import custom_checks

                issues.extend(custom_checks(p.extra, resource, root))
        return issues

    def _invariant(self, inv: Invariant, value: Any, resource: Resource, path: str, issues: list[Issue],
                   p: Profile) -> None:
        if inv.check is not None and not inv.check(value, resource):
            issues.append(Issue(inv.severity, "invariant", f"Constraint failed: {inv.key}: {inv.human} "
                                                           f"(profile {p.name})", (path,)))

    def _apply(self, rule: Rule, obj: Any, path: str, resource: Resource, issues: list[Issue],
               p: Profile) -> None:
        if not isinstance(obj, dict):
            return
        pairs = _choice(obj, rule.name)
        where = f"{path}.{rule.name}"
        items: list[tuple[Any, str]] = []
        for key, value in pairs:
            base = f"{path}.{rule.name}.ofType({key[len(rule.name):][:1].lower()}{key[len(rule.name) + 1:]})" \
                if key != rule.name else where
            if isinstance(value, list):
                items.extend((v, f"{base}[{i}]") for i, v in enumerate(value))
            else:
                items.append((value, base))
            if rule.types and key != rule.name:
                t = key[len(rule.name):]
                if t not in rule.types and t[:1].lower() + t[1:] not in rule.types:
                    issues.append(Issue("error", "structure", f"{rule.name}[x] must be of type "
                                                              f"{' | '.join(rule.types)} here, not {t} "
                                                              f"(profile {p.name})", (base,)))
        n = len(items)
        if rule.min is not None and n < rule.min:
            issues.append(Issue("error", "required", f"'{rule.name}' requires at least {rule.min}, found {n} "
                                                     f"(profile {p.name})", (where,)))
        if rule.has_max and rule.max is not None and n > rule.max:
            msg = (f"'{rule.name}' is not allowed (profile {p.name})" if rule.max == 0 else
                   f"'{rule.name}' allows at most {rule.max}, found {n} (profile {p.name})")
            issues.append(Issue("error", "structure", msg, (where,)))
        for value, ipath in items:
            self._item(rule, value, ipath, resource, issues, p)
        if rule.slices:
            self._slices(rule, items, where, resource, issues, p)

    def _item(self, rule: Rule, value: Any, ipath: str, resource: Resource, issues: list[Issue],
              p: Profile) -> None:
        if value is None:
            return
        if rule.fixed is not None and value != rule.fixed:
            issues.append(Issue("error", "value", f"Value must be exactly {rule.fixed!r} (profile {p.name})",
                                (ipath,)))
        if rule.pattern is not None and not _matches(value, rule.pattern):
            issues.append(Issue("error", "value", f"Value must match {rule.pattern!r} (profile {p.name})",
                                (ipath,)))
        if rule.binding is not None:
            t = "code" if isinstance(value, str) else ("CodeableConcept" if isinstance(value, dict) and (
                "coding" in value or "text" in value) else "Coding")
            before = len(issues)
            self._base._binding(rule.binding, t, value, ipath, issues)
            for i in range(before, len(issues)):
                old = issues[i]
                issues[i] = Issue(old.severity, old.code, f"{old.diagnostics} (profile {p.name})", old.expression)
        if rule.regex is not None and isinstance(value, str) and not rule.regex.fullmatch(value):
            issues.append(Issue("error", "value", f"'{value}' does not have the expected format "
                                                  f"{rule.regex.pattern} (profile {p.name})", (ipath,)))
        if rule.contained and isinstance(value, dict):
            ref = value.get("reference")
            if not (isinstance(ref, str) and ref.startswith("#")):
                issues.append(Issue("error", "structure", f"This reference must point to a contained resource "
                                                          f"('#id') (profile {p.name})", (ipath,)))
        if rule.profile and isinstance(value, dict):
            nested = lookup(rule.profile)
            if nested is not None:
                issues.extend(self.check(nested, value, ipath))
        if rule.targets and isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and not ref.startswith(("#", "urn:")):
                rtype = ref.split("/_history", 1)[0].rsplit("/", 2)[-2] if "/" in ref else None
                if rtype and rtype not in rule.targets:
                    # an error, as in the base rules (engine.Validator._reference)
                    issues.append(Issue("error", "structure", f"A reference to {rtype} is not allowed here (allowed:"
                                                              f" {', '.join(rule.targets)}; profile {p.name})",
                                        (f"{ipath}.reference",)))
        for inv in rule.invariants:
            self._invariant(inv, value, resource, ipath, issues, p)
        for child in rule.elements:
            self._apply(child, value, ipath, resource, issues, p)

    def _in_slice(self, s: Slice, value: Any) -> bool:
        """Whether ``value`` meets every discriminator of slice ``s`` (value/pattern, exists, type, profile)."""
        if s.match and not _matches(value, s.match):
            return False
        for path, want in s.exists.items():
            if bool(_resolve(value, path)) != want:
                return False
        for path, t in s.types.items():
            if not any(_same_type(_type_name(h, v), t) for h, v in _resolve(value, path)):
                return False
        return all(any(self._conforms(v, url) for _, v in _resolve(value, path)) for path, url in s.profiles.items())

    def _conforms(self, value: Any, url: str) -> bool:
        if not isinstance(value, dict):
            return False
        profile = lookup(url)
        if profile is None:
            base = url.split("|", 1)[0]
            return base.startswith("http://hl7.org/fhir/StructureDefinition/") and \
                value.get("resourceType") == base.rsplit("/", 1)[-1]
        return not any(i.severity in ("error", "fatal") for i in self.check(profile, value))

    def _slices(self, rule: Rule, items: list[tuple[Any, str]], where: str, resource: Resource,
                issues: list[Issue], p: Profile) -> None:
        counts = {s.name: 0 for s in rule.slices}
        order = {s.name: i for i, s in enumerate(rule.slices)}
        last = 0
        for value, ipath in items:
            hit = next((s for s in rule.slices if self._in_slice(s, value)), None)
            if hit is None:
                if rule.closed:
                    issues.append(Issue("error", "structure", f"This element does not match any known slice of "
                                                              f"'{rule.name}' and the slicing is closed "
                                                              f"(profile {p.name})", (ipath,)))
                continue
            if rule.ordered and order[hit.name] < last:
                issues.append(Issue("error", "structure", f"The slicing of '{rule.name}' is ordered: slice "
                                                          f"'{hit.name}' comes too late (profile {p.name})", (ipath,)))
            last = max(last, order[hit.name])
            counts[hit.name] += 1
            for child in hit.elements:
                self._apply(child, value, ipath, resource, issues, p)
        for s in rule.slices:
            n = counts[s.name]
            if n < s.min:
                issues.append(Issue("error", "required", f"Slice '{rule.name}:{s.name}': a matching element is "
                                                         f"required (minimum {s.min}), found {n} (profile {p.name})",
                                    (where,)))
            elif s.max is not None and n > s.max:
                issues.append(Issue("error", "structure", f"Slice '{rule.name}:{s.name}' allows at most {s.max}, "
                                                          f"found {n} (profile {p.name})", (where,)))
