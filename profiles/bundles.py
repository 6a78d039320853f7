"""Bundle-level rules of the HL7 validator (BundleValidator, BaseValidator.getFromBundle), bundle.html.

- references between entries (bundle.html#references): a reference resolves against the entries' fullUrls,
  a relative one from the base of its own entry's fullUrl. Two entries matching one reference (same fullUrl,
  or same fullUrl and versionId for a versioned reference) is an error; a versioned reference to an entry of the
  Bundle whose version is not there, and a ``urn:`` reference matching no entry, cannot resolve: errors; a matched
  entry of another type than the reference says: error; an entry matched by a versioned reference without a
  ``meta.versionId``: warning. References leaving the Bundle (``Patient/1`` with no such entry) are not checked:
  the server never resolves references at validation.
- links: ``first``/``previous``/``next``/``last``/``self`` at most once in a searchset or history; the paging
  relations not at all in other Bundles, ``self`` at most once.
- searchset entries: a resource in each; with ``search.mode`` match or include, an id (error) and, for match,
  the type the ``self`` link searched; ``outcome`` entries are OperationOutcomes. Without modes, a missing id is a
  warning.

Not done (the HL7 validator has them): document/message reachability of every entry from the Composition or
MessageHeader, relative-reference matching by type and id across fullUrl bases (its "possible match" warnings),
and a fullUrl on transaction entries that hold references.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_common.outcome import Issue
from fhir_common.types import Resource

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_CONDITIONAL = re.compile(r"[A-Z][A-Za-z]+\?")
_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_PAGING = ("first", "previous", "next", "last")
_SEARCH_LINKS = ("searchset", "history")


def bundle_rules(bundle: Resource, path: str, issues: list[Issue]) -> None:
    """Links, searchset entries and references between entries of ``bundle`` (at ``path``)."""
    btype = bundle.get("type")
    raw = bundle.get("entry")
    entries = [e if isinstance(e, dict) else {} for e in raw] if isinstance(raw, list) else []
    _links(bundle, btype, path, issues)
    if btype == "searchset":
        _searchset(bundle, entries, path, issues)
    _references(entries, btype, path, issues)


# -- links ------------------------------------------------------------------------------------------------

def _links(bundle: Resource, btype: Any, path: str, issues: list[Issue]) -> None:
    links = bundle.get("link")
    seen: set[str] = set()
    for i, link in enumerate(links if isinstance(links, list) else ()):
        rel = link.get("relation") if isinstance(link, dict) else None
        if not isinstance(rel, str):
            continue
        where = f"{path}.link[{i}]"
        if btype in _SEARCH_LINKS:
            once = rel in (*_PAGING, "self")
        else:
            if rel in _PAGING and isinstance(btype, str):
                issues.append(Issue("error", "invalid", f"The link relation '{rel}' is only for searchset and "
                                                        f"history Bundles, not {btype}", (f"{where}.relation",)))
            once = rel == "self"
        if once and rel in seen:
            issues.append(Issue("error", "invalid", f"The link relation '{rel}' can only occur once",
                                (f"{where}.relation",)))
        seen.add(rel)


# -- searchset ----------------------------------------------------------------------------------------------

def _searched_types(bundle: Resource) -> list[str]:
    """The types the ``self`` link searched: its last path segment, else its ``_type`` parameter."""
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "self" and isinstance(link.get("url"), str):
            head, _, query = link["url"].partition("?")
            last = head.rstrip("/").rsplit("/", 1)[-1]
            if _TYPE.fullmatch(last):
                return [last]
            return [t for p in query.split("&") if p.startswith("_type=") for t in p[6:].split(",") if t]
    return []


def _searchset(bundle: Resource, entries: list[dict[str, Any]], path: str, issues: list[Issue]) -> None:
    types = _searched_types(bundle)
    for i, entry in enumerate(entries):
        where = f"{path}.entry[{i}]"
        res = entry.get("resource")
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if not isinstance(res, dict):
            issues.append(Issue("error", "invalid", "Each entry of a searchset must hold a resource", (where,)))
            continue
        rt, rid = res.get("resourceType"), res.get("id")
        if mode in ("match", "include"):
            if rid is None:
                issues.append(Issue("error", "invalid", f"A searchset entry in mode '{mode}' must have a resource id",
                                    (f"{where}.resource",)))
            if mode == "match" and types and rt not in types:
                issues.append(Issue("error", "invalid", f"The searchset matched {', '.join(types)} (self link), not "
                                                        f"{rt}", (f"{where}.resource",)))
        elif mode == "outcome":
            if rt != "OperationOutcome":
                issues.append(Issue("error", "invalid", f"A searchset entry in mode 'outcome' must be an "
                                                        f"OperationOutcome, not {rt}", (f"{where}.resource",)))
        elif rid is None and rt != "OperationOutcome":
            issues.append(Issue("warning", "invalid", "A searchset entry should have a resource id",
                                (f"{where}.resource",)))


# -- references between entries ------------------------------------------------------------------------------

def _refs(node: Any, path: str, out: list[tuple[str, str]]) -> None:
    """(reference, FHIRPath of its Reference) in ``node``; not into a nested Bundle (its own rules apply)."""
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict) and not (item.get("resourceType") == "Bundle" and item is not node):
            ref = item.get("reference")
            if isinstance(ref, str) and ref and not ref.startswith("#"):
                out.append((ref, where))
            stack.extend((v, f"{where}.{k}") for k, v in reversed(item.items()) if isinstance(v, dict | list))


def _target(ref: str, full: str) -> tuple[str, str, str | None] | None:
    """(target fullUrl, version or "", type the reference names or None), as the HL7 validator computes them."""
    if _SCHEME.match(ref):
        url, _, version = ref.partition("/_history/")
        return url, version, None
    if ref.count("/") not in (1, 3) or _CONDITIONAL.match(ref):
        return None
    base = full.rsplit(":", 1)[0] + ":" if full.startswith("urn:") else "/".join(full.split("/")[:-2]) + "/"
    type_, _, rest = ref.partition("/")
    id_, _, version = rest.partition("/_history/")
    if version or base.startswith("urn:"):
        return (base + f"{type_}/{id_}" if version else base + id_), version, type_
    return base + ref, "", None


def _version(entry: dict[str, Any]) -> Any:
    res = entry.get("resource")
    meta = res.get("meta") if isinstance(res, dict) else None
    return meta.get("versionId") if isinstance(meta, dict) else None


def _references(entries: list[dict[str, Any]], btype: Any, path: str, issues: list[Issue]) -> None:
    by_url: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry.get("fullUrl"), str):
            by_url.setdefault(entry["fullUrl"], []).append(i)
    for i, entry in enumerate(entries):
        full, res = entry.get("fullUrl"), entry.get("resource")
        if not isinstance(full, str) or not isinstance(res, dict):
            continue
        refs: list[tuple[str, str]] = []
        _refs(res, f"{path}.entry[{i}].resource", refs)
        for ref, where in refs:
            found = _target(ref, full)
            if found is None:
                if ref.count("/") not in (1, 3) and not _SCHEME.match(ref) and not _CONDITIONAL.match(ref):
                    issues.append(Issue("error", "invalid", f"Relative references must be of the format "
                                                            f"[type]/[id]; found '{ref}'", (f"{where}.reference",)))
                continue
            _resolve(entries, by_url, ref, found, where, issues)


def _resolve(entries: list[dict[str, Any]], by_url: dict[str, list[int]], ref: str,
             found: tuple[str, str, str | None], where: str, issues: list[Issue]) -> None:
    target, version, type_ = found
    candidates = by_url.get(target, [])
    if version:
        for j in candidates:
            if _version(entries[j]) is None:
                issues.append(Issue("warning", "required", f"Entries matching fullUrl {target} should declare "
                                                           "meta.versionId: there are version-specific references",
                                    (f"{where}.reference",)))
        matches = [j for j in candidates if _version(entries[j]) == version]
        if candidates and not matches and all(_version(entries[j]) is not None for j in candidates):
            issues.append(Issue("error", "not-found", f"The reference '{ref}' names version {version} of {target}, "
                                                      "which this Bundle holds at another version only",
                                (f"{where}.reference",)))
    else:
        matches = candidates
    if len(matches) > 1:
        issues.append(Issue("error", "invalid", f"{len(matches)} entries match the reference '{ref}' (entries "
                                                f"{', '.join(str(j) for j in matches)})", (f"{where}.reference",)))
        return
    if not matches:
        if ref.startswith("urn:"):
            issues.append(Issue("error", "not-found", f"The reference '{ref}' names no entry of this Bundle",
                                (f"{where}.reference",)))
        return
    res = entries[matches[0]].get("resource")
    rt = res.get("resourceType") if isinstance(res, dict) else None
    if type_ is not None and rt != type_:
        issues.append(Issue("error", "invalid", f"The reference '{ref}' matches an entry of type {rt}",
                            (f"{where}.reference",)))
