"""References inside a Bundle (bundle.html#references): ``fullUrl`` rewriting and conditional references.

Every ``reference`` and ``Attachment.url`` naming an entry's ``fullUrl`` (``urn:uuid:``, absolute URL) is
rewritten to the entry's resolved ``Type/id``; a conditional reference (``Patient?identifier=s|v``) is
resolved to its one match by a finder the engine passes in (it reads inside the store unit, filtered by
the caller's access).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fhir_server.errors import FHIRError, bad_request, not_found
from fhir_server.registry import get_type

from . import conditional
from .entries import Entry

CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")

#: the ids of ``type_`` matching ``criteria`` that the entry's caller may see
Finder = Callable[[str, conditional.Criteria], set[str]]


def one(ids: set[str], type_: str, what: str) -> str | None:
    """The single match of ``what`` (None: none); several are a 412."""
    if len(ids) > 1:
        raise FHIRError(412, "multiple-matches", f"{what} matches {len(ids)} {type_} resources")
    return next(iter(ids), None)


def rewrite(node: Any, urls: dict[str, str], resolve: Any) -> Any:
    """Rewrite ``reference`` and ``url`` (Attachment.url) values naming a fullUrl; other strings that happen to
    equal one (an MHD entryUUID identifier is often the entry's own ``urn:uuid``) are data and stay."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("reference", "url") and isinstance(v, str) and v in urls:
                out[k] = urls[v]
            elif k == "reference" and isinstance(v, str):
                out[k] = resolve(v)
            else:
                out[k] = rewrite(v, urls, resolve)
        return out
    if isinstance(node, list):
        return [rewrite(v, urls, resolve) for v in node]
    return node



def resolver(entry: Entry, find: Finder) -> Callable[[str], str]:
    """Resolves the references of ``entry`` that name no fullUrl: conditional ones to their one match."""
    def resolve(ref: str) -> str:
        if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
            raise bad_request(f"Reference '{ref}' names no fullUrl of this Bundle", entry.where)
        m = CONDITIONAL_REF.match(ref)
        if m is None:
            return ref
        type_ = m.group(1)
        if get_type(type_) is None:
            raise not_found(f"Conditional reference '{ref}': type {type_} is not served here")
        criteria = conditional.analyse(type_, m.group(2), entry.where)
        ids = find(type_, criteria)
        if not ids:
            raise not_found(f"Conditional reference '{ref}' matches no {type_}")
        found = one(ids, type_, f"Conditional reference '{ref}'")
        return f"{type_}/{found}"

    return resolve


def dangling(entry: Entry) -> Any:
    def resolve(ref: str) -> str:
        if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
            raise bad_request(f"Reference '{ref}' names no fullUrl of this Bundle", entry.where)
        return ref

    return resolve


def has_conditionals(entries: list[Entry]) -> bool:
    def refs(node: Any) -> bool:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and CONDITIONAL_REF.match(ref):
                return True
            return any(refs(v) for v in node.values())
        if isinstance(node, list):
            return any(refs(v) for v in node)
        return False

    return any(e.if_none_exist or (e.query and e.method != "GET") or refs(e.resource) for e in entries)


def conditional_urls(entries: list[Entry], references: bool = True) -> Iterator[tuple[Entry, str, str, str]]:
    """(entry, type, criteria, where) of every conditional part of the Bundle: ifNoneExist, conditional
    update/patch/delete urls and conditional references."""
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and CONDITIONAL_REF.match(ref):
                yield ref
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for e in entries:
        if e.method == "POST" and e.if_none_exist:
            yield e, e.type, e.if_none_exist, "If-None-Exist"
        if e.method in ("PUT", "PATCH", "DELETE") and e.id is None and e.query is not None:
            yield e, e.type, e.query, f"{e.where}.request.url"
        if e.method in ("POST", "PUT") and references:
            for ref in refs(e.original):
                m = CONDITIONAL_REF.match(ref)
                assert m is not None
                if get_type(m.group(1)) is not None:
                    yield e, m.group(1), m.group(2), e.where


