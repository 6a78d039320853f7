"""``reference`` parameters: ``Type/id``, bare ``id``, absolute URL, ``:Type``, ``:identifier``, ``:text``.

Index fields under ``sp.<code>``:

* ``ref``: the normalised reference: ``Type/id`` for local references (absolute URLs under
  this server's base are made relative, ``/_history/n`` is dropped), the URL as is for
  external or ``urn:`` references, the canonical URL without ``|version`` for canonicals;
* ``id``: the bare id of local references (``patient=123`` matches any target type);
* ``type``: the target type when known (from the reference or ``Reference.type``);
* ``identifier``: ``system|value`` (``|value`` without system) of ``Reference.identifier``;
* ``identifier_value``: ``Reference.identifier.value``;
* ``display``: case/accent-folded ``Reference.display``, for ``:text`` (R4 defines ``:text`` for tokens
  only; R5 extends it to ``Reference.display`` with the same string semantics: the display starts with
  the value after case/accent folding, as token ``:text``).

References to contained resources (``#id``) cannot be searched by id; instead the contained
resource's type goes to ``type`` and its names and identifiers to ``contained_*`` fields, so
that the chains MHD needs on contained authors (``author.given``, ``author.family``,
``author.identifier``, ``author.name``) work (see :data:`CONTAINED_CHAINS`):

* ``contained_given`` / ``contained_family`` / ``contained_name``: normalised name parts;
* ``contained_identifier``: ``system|value`` and ``value`` of its identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fhir_common.types import EsQuery, Resource
from search.errors import SearchError
from search.normalize import MAX_KEYWORD_CHARS, normalize_string
from search.params.base import (
    KEYWORD,
    MAX_RAW_KEYWORD_CHARS,
    FhirValue,
    Fields,
    IndexContext,
    QueryContext,
    add,
    any_of,
    field_name,
    keyword_sort,
    split_escaped,
    term,
    text_prefix,
    unescape,
)
from search.registry import SearchParameter

MODIFIERS = frozenset({"identifier", "text"})  # plus :<Type>, checked against the targets


def modifiers(param: SearchParameter) -> tuple[str, ...]:
    """``:identifier``, ``:text`` and a type modifier per target type (any type when the target is open)."""
    return (*sorted(MODIFIERS), *param.target)

FIELDS = ("ref", "id", "type", "identifier", "identifier_value", "display",
          "contained_given", "contained_family", "contained_name", "contained_identifier")
#: chained parameter -> (contained_* field, kind): the chains answered from contained targets.
CONTAINED_CHAINS = {
    "given": ("contained_given", "string"),
    "family": ("contained_family", "string"),
    "name": ("contained_name", "string"),
    "identifier": ("contained_identifier", "token"),
}

_TYPE = r"[A-Z][A-Za-z]+"
_ID = r"[A-Za-z0-9\-\.]{1,64}"
_RELATIVE = re.compile(rf"^({_TYPE})/({_ID})(?:/_history/[^/]+)?$")
_URL_TAIL = re.compile(rf"(?:^|/)({_TYPE})/({_ID})(?:/_history/[^/]+)?$")
_ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_BARE_ID = re.compile(rf"^{_ID}$")


def mapping(param: SearchParameter) -> dict[str, Any]:
    return {f: KEYWORD for f in FIELDS}


def _local(reference: str, base_url: str | None) -> str:
    """Strip this server's base from an absolute reference (``http://base/Patient/1`` -> ``Patient/1``)."""
    if base_url:
        base = base_url.rstrip("/") + "/"
        if reference.startswith(base):
            return reference[len(base) :]
    return reference


def parse_reference(reference: str, base_url: str | None) -> tuple[str, str | None, str | None]:
    """(normalised ref, type, local id) of a reference string."""
    ref = _local(reference, base_url)
    m = _RELATIVE.match(ref)
    if m:
        return f"{m.group(1)}/{m.group(2)}", m.group(1), m.group(2)
    tail = _URL_TAIL.search(ref)
    if tail and "/_history/" in ref:
        ref = ref[: ref.index("/_history/")]
    return ref, (tail.group(1) if tail else None), None


def target_type(data: Any, resource: Resource) -> str | None:
    """The type a Reference points to, as ``resolve() is X`` would see it (contained included)."""
    if not isinstance(data, dict):
        return None
    ref = data.get("reference")
    if isinstance(ref, str):
        if ref.startswith("#"):
            for c in resource.get("contained", []):
                if isinstance(c, dict) and c.get("id") == ref[1:]:
                    return c.get("resourceType")
            return None
        _, rtype, _ = parse_reference(ref, None)
        if rtype:
            return rtype
    t = data.get("type")
    return t if isinstance(t, str) else None


def index(param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields:
    fields: Fields = {}
    for value in values:
        data = value.data
        if isinstance(data, str):  # canonical / uri-typed reference
            add(fields, "ref", data.split("|", 1)[0])
            continue
        if not isinstance(data, dict):
            ctx.skip(param, data, f"not a Reference ({value.type})")
            continue
        reference = data.get("reference")
        if isinstance(reference, str) and reference.startswith("#") and reference[1:] in ctx.contained:
            _index_contained(fields, ctx.contained[reference[1:]], ctx.contained)
        if isinstance(reference, str) and reference and not reference.startswith("#"):
            if len(reference) > MAX_RAW_KEYWORD_CHARS:
                ctx.skip(param, reference[:80], "reference too long")
            else:
                ref, rtype, rid = parse_reference(reference, ctx.base_url)
                add(fields, "ref", ref)
                if rid:
                    add(fields, "id", rid)
                if rtype or isinstance(data.get("type"), str):
                    add(fields, "type", rtype or data["type"])
        elif isinstance(data.get("type"), str):
            add(fields, "type", data["type"])
        display = data.get("display")
        if isinstance(display, str) and (folded := normalize_string(display)[:MAX_KEYWORD_CHARS]):
            add(fields, "display", folded)
        ident = data.get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            add(fields, "identifier", f"{ident.get('system') or ''}|{ident['value']}")
            add(fields, "identifier_value", ident["value"])
    return fields


def _index_contained(fields: Fields, target: Resource, contained: dict[str, Resource]) -> None:
    """Names and identifiers of a contained target; a contained PractitionerRole (the PDSm author form)
    also contributes those of its contained ``practitioner``."""
    if isinstance(target.get("resourceType"), str):
        add(fields, "type", target["resourceType"])
    practitioner = (target.get("practitioner") or {}).get("reference") if isinstance(
        target.get("practitioner"), dict) else None
    if isinstance(practitioner, str) and practitioner.startswith("#") and practitioner[1:] in contained:
        inner = contained[practitioner[1:]]
        if inner is not target and "practitioner" not in inner:
            _index_contained(fields, {k: v for k, v in inner.items() if k != "resourceType"}, contained)
    for name in target.get("name") or []:
        if not isinstance(name, dict):
            continue
        for key, f in (("given", "contained_given"), ("family", "contained_family")):
            parts = name.get(key)
            for part in parts if isinstance(parts, list) else [parts]:
                if isinstance(part, str) and (norm := normalize_string(part)):
                    add(fields, f, norm)
                    add(fields, "contained_name", norm)
        if isinstance(name.get("text"), str) and (norm := normalize_string(name["text"])):
            add(fields, "contained_name", norm)
    for ident in target.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            add(fields, "contained_identifier", ident["value"])
            add(fields, "contained_identifier", f"{ident.get('system') or ''}|{ident['value']}")


def _identifier(param: SearchParameter, raw: str, name: str) -> EsQuery:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return term(field_name(param, "identifier_value"), unescape(raw))
    system, value = unescape(parts[0]), unescape("|".join(parts[1:]))
    if value:
        return term(field_name(param, "identifier"), f"{system}|{value}")
    if system:
        return {"prefix": {field_name(param, "identifier"): f"{system}|"}}
    raise SearchError(f"identifier value {raw!r} has neither a system nor a value", name)


def _display(param: SearchParameter, raw: str, name: str) -> EsQuery:
    return text_prefix(field_name(param, "display"), raw, name)


def _check_type(param: SearchParameter, rtype: str, name: str) -> None:
    if param.target and rtype not in param.target:
        raise SearchError(f"{rtype} is not a target type of {param.code} ({', '.join(param.target)})", name)


def _match(param: SearchParameter, type_modifier: str | None, raw: str, ctx: QueryContext, name: str) -> EsQuery:
    value = _local(unescape(raw), ctx.base_url)
    m = _RELATIVE.match(value)
    if m:
        if type_modifier and m.group(1) != type_modifier:
            raise SearchError(f"reference {value!r} contradicts the :{type_modifier} modifier", name)
        _check_type(param, m.group(1), name)
        return term(field_name(param, "ref"), f"{m.group(1)}/{m.group(2)}")
    if _ABSOLUTE.match(value):
        if type_modifier:
            raise SearchError(f"an absolute reference cannot be combined with :{type_modifier}", name)
        return term(field_name(param, "ref"), parse_reference(value, None)[0])
    if not _BARE_ID.match(value):
        raise SearchError(f"malformed reference {value!r}", name)
    if type_modifier:
        return term(field_name(param, "ref"), f"{type_modifier}/{value}")
    return term(field_name(param, "id"), value)


def compile_query(
    param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
) -> EsQuery:
    if modifier == "identifier":
        return any_of([_identifier(param, v, name) for v in values])
    if modifier == "text":
        return any_of([_display(param, v, name) for v in values])
    type_modifier = None
    if modifier is not None:
        if not re.fullmatch(_TYPE, modifier):
            raise SearchError(f"modifier :{modifier} is not supported on reference parameter {param.code}", name)
        _check_type(param, modifier, name)
        type_modifier = modifier
    return any_of([_match(param, type_modifier, v, ctx, name) for v in values])


def sort(param: SearchParameter, descending: bool) -> list[dict[str, Any]]:
    return keyword_sort(field_name(param, "ref"), descending)
