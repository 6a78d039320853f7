"""Validation of resources: base R4 (StructureDefinition-driven engine) plus the vendored profiles.

``validate(resource)`` is the one entry point of the write path, ``$validate`` and ``fhir-server validate``:
the base R4 rules, then every profile the resource claims in ``meta.profile`` that is known here (an unknown one
is a warning or an error, by policy), then the profiles the caller requires (server configuration per type, or
``$validate``'s ``profile`` parameter). Bundle entries are checked against the profiles they claim, too.

Verdicts follow the official HL7 validator (measured with ``profiles/tools/compare_hl7.py``): an extension this
server has no definition for is an error, unless its URL is an example one (example.org, acme.com), a cross-version
one, or in the domains of the IGs implemented here and of the Synthea data (``engine.EXTENSION_DOMAINS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from fhir_common.outcome import Issue
from fhir_common.types import Resource

from .engine import Validator
from .profile import ProfileChecker, lookup, registry
from .references import conditional_references
from .structural import validate_structure

__all__ = ["conditional_references", "known_profiles", "validate", "validate_structure"]


@cache
def _validator() -> Validator:
    return Validator()


@cache
def _checker() -> ProfileChecker:
    return ProfileChecker(_validator().defs)


def known_profiles() -> list[tuple[str, str, str]]:
    """(canonical url, version, type) of every vendored profile."""
    seen = {p.url: p for p in registry().values()}
    return sorted((p.url, p.version, p.type) for p in seen.values())


def validate(resource: Any, *, profiles: Iterable[str] = (),
             required: Mapping[str, Sequence[str]] | None = None, unknown_profile: str = "warning",
             conditional_refs: str = "allow") -> list[Issue]:
    """Every issue of ``resource``: base R4, claimed profiles, required profiles (errors first is NOT implied:
    the order is the order of the rules, stable for a given input).

    ``conditional_refs="error"``: a conditional reference outside a transaction or batch Bundle is an error
    (``references.py``); the default lets them through, for callers that resolve them or load exports."""
    issues = _validator().validate(resource)
    if conditional_refs == "error":
        issues.extend(conditional_references(resource))
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return issues
    rt = resource["resourceType"]
    extra = [*profiles, *((required or {}).get(rt, ()))]
    issues.extend(_profiles(resource, rt, extra, unknown_profile))
    for path, inner in _inner_resources(resource, rt):
        issues.extend(_profiles(inner, path, [], unknown_profile))
    return _unique(issues)


def _inner_resources(resource: Resource, path: str) -> list[tuple[str, Resource]]:
    """Contained resources and Bundle entries (recursively), which are checked against the profiles they claim."""
    out: list[tuple[str, Resource]] = []
    for key in ("contained", "entry"):
        items = resource.get(key)
        for i, item in enumerate(items if isinstance(items, list) else ()):
            inner = item.get("resource") if key == "entry" and isinstance(item, dict) else item
            ipath = f"{path}.entry[{i}].resource" if key == "entry" else f"{path}.contained[{i}]"
            if isinstance(inner, dict) and isinstance(inner.get("resourceType"), str) and (
                    key == "contained" or resource.get("resourceType") == "Bundle"):
                out.append((ipath, inner))
                out.extend(_inner_resources(inner, ipath))
    return out


def _unique(issues: list[Issue]) -> list[Issue]:
    """Drop exact repeats (an entry checked through its Bundle's profile and through its own claim)."""
    seen: set[Issue] = set()
    out = []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out


def _profiles(resource: Resource, path: str, extra: list[str], unknown_profile: str) -> list[Issue]:
    issues: list[Issue] = []
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    wanted: list[tuple[str, str]] = []
    for i, url in enumerate(claimed if isinstance(claimed, list) else ()):
        if isinstance(url, str):
            wanted.append((url, f"{path}.meta.profile[{i}]"))
    wanted.extend((url, path) for url in extra)
    done: set[str] = set()
    for url, where in wanted:
        profile = lookup(url)
        if profile is None:
            if url.split("|")[0].startswith("http://hl7.org/fhir/StructureDefinition/") and \
                    url.split("|")[0].rsplit("/", 1)[-1] == resource.get("resourceType"):
                continue  # the base definition itself: already checked
            if unknown_profile != "ignore":
                issues.append(Issue("error" if unknown_profile == "error" else "warning", "not-supported",
                                    f"Profile {url} is not known to this server; the resource was not checked "
                                    "against it", (where,)))
            continue
        if profile.url in done:
            continue
        done.add(profile.url)
        issues.extend(_checker().check(profile, resource, path))
    return issues
