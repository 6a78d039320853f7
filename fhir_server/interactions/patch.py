"""PATCH (http.html#patch): JSON Patch (RFC 6902) and FHIRPath Patch (fhirpatch.html).

JSON Patch uses the well-kept ``jsonpatch`` library. FHIRPath Patch evaluates each
operation's ``path`` with fhirpathpy (any FHIRPath: ``where()``, ``ofType()``,
``first()``, indexers, choice names...). fhirpathpy reports, for every node it
returns, its concrete location (``Patient.name[1].given[0]``), which is walked back
in the JSON to edit it in place. Values are ``value[x]`` (typed: a ``valueBoolean``
cannot go where a string is declared), ``resource``, or complex values given as
nested ``part``s whose names are the element names of the target type. Which
elements repeat and which names are choice types come from the R4 element table
(``formats/model.py``). Malformed operations are 400, operations that cannot apply
(wrong number of matches, index out of range, type mismatch) 422, each with the
FHIRPath of the failing ``Parameters.parameter``.

The PDSm metadata-update rule (flux 03, st_maj.md) is applied to every PATCH of a
DocumentReference: only ``status``, ``securityLabel`` and the isArchived
extension may differ afterwards, otherwise 405.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson

from fhir_common.fhirpath import FHIRPathError, evaluate_nodes
from fhir_common.types import Resource
from fhir_server.errors import FHIRError, bad_request
from fhir_server.formats import numbers
from fhir_server.formats.model import CHOICE, COMPLEX, RESOURCE, Child, choice_name, primitive_kinds, type_info
from fhir_server.limits import MAX_DEPTH, depth_ok

IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
PDSM_MUTABLE = ("status", "securityLabel")
JSON_PATCH_TYPES = {"application/json-patch+json"}


def _unprocessable(msg: str, *where: str) -> FHIRError:
    return FHIRError(422, "processing", msg, where)


# -- JSON Patch ------------------------------------------------------------------------------------

def apply_json_patch(resource: Resource, operations: Any) -> Resource:
    if not isinstance(operations, list):
        raise bad_request("A JSON Patch body is a JSON array of operations")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(resource, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise _unprocessable(f"JSON Patch could not be applied: {exc}") from exc
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise bad_request(f"Malformed JSON Patch: {exc}") from exc
    if not isinstance(patched, dict):
        raise _unprocessable("JSON Patch must leave a resource (a JSON object)")
    return patched


# -- FHIRPath Patch ---------------------------------------------------------------------------------

_STEP = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\[(\d+)\])?$")


@dataclass
class _Loc:
    """One element designated by a path: ``container[key]``, declared by ``child`` in type ``parent_type``."""

    container: Any  # dict, or list for an item of a repeating element
    key: Any  # str, or int in a list
    owner: dict[str, Any]  # the object holding the element
    name: str  # its JSON name in ``owner`` (choice names concrete: ``deceasedBoolean``)
    child: Child | None  # its definition; None when unknown (the validator will judge)
    type: str | None  # its concrete type code (``HumanName``, ``string``, a backbone path...)

    @property
    def value(self) -> Any:
        return self.container[self.key]


def _member(type_key: str | None, name: str, owner: dict[str, Any]) -> tuple[str, Child | None, str | None]:
    """(JSON name, definition, type) of ``name`` in an object of type ``type_key``; choice names resolved."""
    info = type_info(type_key) if type_key else None
    if info is None:
        return name, None, None
    if name in info.members:
        m = info.members[name]
        return name, m.child, _next_type(m.child, m.type, owner.get(name))
    for child in info.children:
        if child.name == name:
            if child.kind == CHOICE:
                for code in child.types:
                    if choice_name(name, code) in owner:
                        return choice_name(name, code), child, code
                return name, child, None
            return name, child, child.types[0]
    return name, None, None


def _next_type(child: Child, code: str, value: Any) -> str:
    if child.kind == RESOURCE:
        return str(value.get("resourceType")) if isinstance(value, dict) else "Resource"
    return code


def _locate(resource: Resource, prop: str, where: str) -> _Loc:
    """The element fhirpathpy designates by ``prop`` (``Patient.name[1].given[0]``), walked in the JSON."""
    steps = prop.split(".")
    rtype = str(resource.get("resourceType"))
    if steps[0] != rtype or len(steps) < 2:
        raise bad_request(f"FHIRPath Patch path must designate elements of the {rtype}", where)
    node: Any = resource
    type_key: str | None = rtype
    loc: _Loc | None = None
    for step in steps[1:]:
        m = _STEP.match(step)
        if m is None or not isinstance(node, dict):
            raise bad_request(f"FHIRPath Patch path designates no element ('{prop}')", where)
        name, child, code = _member(type_key, m.group(1), node)
        if name not in node:
            raise bad_request(f"FHIRPath Patch path designates no element ('{prop}')", where)
        value = node[name]
        if m.group(2) is not None and isinstance(value, list):
            loc = _Loc(value, int(m.group(2)), node, name, child, code)
        else:
            loc = _Loc(node, name, node, name, child, code)
        node = loc.value
        if child is not None and child.kind == RESOURCE:
            code = _next_type(child, code or "Resource", node)
            loc.type = code
        type_key = code
    assert loc is not None
    return loc


def _select(resource: Resource, path: str, where: str) -> list[_Loc]:
    """The elements ``path`` designates, in document order; 400 when it is not FHIRPath or yields values
    that are not elements of the resource (literals, computed values)."""
    try:
        nodes = evaluate_nodes(path, resource)
    except FHIRPathError as exc:
        raise bad_request(f"Invalid FHIRPath '{path}': {exc}", where) from exc
    out: list[_Loc] = []
    for node in nodes:
        prop = node.location
        if prop is None:
            if node.data is resource:
                raise bad_request(f"FHIRPath Patch path '{path}' designates the resource itself", where)
            raise bad_request(f"FHIRPath Patch path '{path}' yields values that are not elements", where)
        out.append(_locate(resource, prop, where))
    return out


def _typed_value(part: dict[str, Any], where: str) -> tuple[str | None, Any]:
    """(type code, value) of an operation's ``value`` part: ``value[x]``, ``resource`` or nested parts."""
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5 and key[5].isupper():
            suffix = key[5:]  # primitive codes are lowerCamel (dateTime), complex types UpperCamel (HumanName)
            primitive = suffix[0].lower() + suffix[1:]
            return (primitive if primitive in primitive_kinds() else suffix), copy.deepcopy(value)
    if isinstance(part.get("resource"), dict):
        return "Resource", copy.deepcopy(part["resource"])
    if isinstance(part.get("part"), list):
        return None, part["part"]  # built against the target type by _build
    raise bad_request("FHIRPath Patch operation has no value", where)


def _build(type_key: str | None, parts: list[Any], where: str) -> dict[str, Any]:
    """A complex value from nested ``part``s (fhirpatch.html: "value" with parts named after the elements)."""
    out: dict[str, Any] = {}
    for p in parts:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise bad_request("Each part of a complex FHIRPath Patch value needs a name", where)
        name, child, code = _member(type_key, p["name"], {})
        if type_key and type_info(type_key) is not None and child is None:
            raise _unprocessable(f"'{p['name']}' is not an element of {type_key}", where)
        vtype, value = _typed_value(p, where)
        if vtype is None:
            value = _build(code, value, where)
        elif child is not None:
            name = _concrete(child, name, vtype, where)
        if child is not None and child.many:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def _kind(code: str | None) -> str | None:
    return primitive_kinds().get(code) if code else None


def _concrete(child: Child, name: str, vtype: str | None, where: str) -> str:
    """The JSON name for a value of type ``vtype`` in element ``child`` (``deceased`` + dateTime ->
    ``deceasedDateTime``); 422 when the type is not one the element takes."""
    if vtype is None or vtype == "Resource":
        return name
    if child.kind == CHOICE:
        if vtype not in child.types:
            raise _unprocessable(f"{child.name}[x] takes {', '.join(child.types)}, not {vtype}", where)
        return choice_name(child.name, vtype)
    declared = child.types[0]
    if _kind(vtype) is not None or _kind(declared) is not None:
        if _kind(vtype) != _kind(declared):
            raise _unprocessable(f"'{name}' is a {declared}; a {vtype} value does not fit", where)
    elif child.kind == COMPLEX and declared != vtype and "." not in declared and declared not in (
            "Element", "BackboneElement"):
        raise _unprocessable(f"'{name}' is a {declared}; a {vtype} value does not fit", where)
    return name


def _value(part: dict[str, Any] | None, child: Child | None, code: str | None, name: str, where: str
           ) -> tuple[str, Any]:
    """(JSON name, value) to store for the operation's value part at an element ``name``."""
    if not isinstance(part, dict):
        raise bad_request("FHIRPath Patch operation has no value", where)
    vtype, value = _typed_value(part, where)
    if vtype is None:
        target = code if child is None or child.kind != CHOICE else None
        return name, _build(target, value, where)
    if child is None:
        return name, value
    return _concrete(child, name, vtype, where), value


def _shadow_remove(loc: _Loc) -> None:
    """Remove an element and its ``_name`` primitive-extension shadow."""
    shadow = loc.owner.get("_" + loc.name)
    if isinstance(loc.key, int):
        del loc.container[loc.key]
        if isinstance(shadow, list) and loc.key < len(shadow):
            del shadow[loc.key]
    else:
        del loc.container[loc.key]
        loc.owner.pop("_" + loc.name, None)


def _prune(node: Any) -> Any:
    """Drop the empty objects and arrays an edit leaves (FHIR JSON forbids them)."""
    if isinstance(node, dict):
        for k in list(node):
            node[k] = _prune(node[k])
            if node[k] in ({}, []):
                del node[k]
    elif isinstance(node, list):
        node[:] = [v for v in (_prune(v) for v in node) if v not in ({}, [])]
    return node


def _list_of(locs: list[_Loc], path: str, op: str, where: str) -> _Loc:
    """The repeating element ``path`` designates (all its items must be in one list)."""
    lists = {id(loc.container) for loc in locs}
    if not locs or len(lists) != 1 or not isinstance(locs[0].key, int):
        raise _unprocessable(f"FHIRPath Patch {op}: '{path}' does not designate the items of one list", where)
    return locs[0]


def _insert_target(resource: Resource, path: str, where: str
                   ) -> tuple[dict[str, Any], str, Child | None, str | None]:
    """For insert into an absent list: the object that will hold it, from ``path`` minus its last name."""
    head, _, last = path.rpartition(".")
    if not head or not _STEP.match(last) or "[" in last:
        raise _unprocessable(f"FHIRPath Patch insert: '{path}' designates no list", where)
    owner = _one(_select(resource, head, where), head, "insert", where) if "." in head else None
    holder = owner.value if owner is not None else resource
    if not isinstance(holder, dict):
        raise _unprocessable(f"FHIRPath Patch insert: '{head}' is not an element with children", where)
    name, child, code = _member(owner.type if owner is not None else str(resource.get("resourceType")), last,
                                holder)
    return holder, name, child, code


def _one(locs: list[_Loc], path: str, op: str, where: str) -> _Loc:
    if len(locs) != 1:
        raise _unprocessable(f"FHIRPath Patch {op}: path '{path}' matches {len(locs)} elements, expected 1", where)
    return locs[0]


def _integer(parts: dict[Any, Any], name: str, op: str, where: str) -> int:
    value = (parts.get(name) or {}).get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"FHIRPath Patch {op} needs an integer '{name}'", where)
    return value


def _apply_operation(resource: Resource, op: dict[str, Any], n: int) -> None:
    where = f"Parameters.parameter[{n}]"
    raw_parts = op.get("part")
    parts = {p["name"]: p for p in (raw_parts if isinstance(raw_parts, list) else [])
             if isinstance(p, dict) and isinstance(p.get("name"), str)}
    kind = (parts.get("type") or {}).get("valueCode")
    path = (parts.get("path") or {}).get("valueString")
    if not isinstance(kind, str) or not isinstance(path, str):
        raise bad_request("Each FHIRPath Patch operation needs a type and a path", where)
    if kind not in ("add", "insert", "delete", "replace", "move"):
        raise bad_request(f"Unknown FHIRPath Patch operation type '{kind}'", where)
    if kind == "add":
        name = (parts.get("name") or {}).get("valueString")
        if not isinstance(name, str) or not name:
            raise bad_request("FHIRPath Patch add needs a name", where)
        holder: Any
        holder_type: str | None
        if path == resource.get("resourceType"):
            holder, holder_type = resource, path
        else:
            target = _one(_select(resource, path, where), path, kind, where)
            holder, holder_type = target.value, target.type
        if not isinstance(holder, dict):
            raise _unprocessable(f"FHIRPath Patch add: '{path}' is not an element with children", where)
        key, child, code = _member(holder_type, name, holder)
        if child is None and type_info(holder_type or "") is not None:
            raise _unprocessable(f"FHIRPath Patch add: '{name}' is not an element of {holder_type}", where)
        key, value = _value(parts.get("value"), child, code, key, where)
        if child is not None and child.many:
            holder.setdefault(key, []).append(value)
        elif key in holder or (child is not None and child.kind == CHOICE and any(
                choice_name(child.name, t) in holder for t in child.types)):
            raise _unprocessable(f"FHIRPath Patch add: '{path}.{name}' already has a value", where)
        else:
            holder[key] = value
        return
    locs = _select(resource, path, where)
    if kind == "delete":
        if len(locs) > 1:
            raise _unprocessable(f"FHIRPath Patch delete: path '{path}' matches {len(locs)} elements", where)
        if locs:
            _shadow_remove(locs[0])
        return
    if kind == "replace":
        loc = _one(locs, path, kind, where)
        key, value = _value(parts.get("value"), loc.child, loc.type, loc.child.name if loc.child is not None
                            and loc.child.kind == CHOICE else loc.name, where)
        if isinstance(loc.key, int):
            loc.container[loc.key] = value
        else:
            del loc.owner[loc.name]
            loc.owner[key] = value
        return
    if kind == "insert":
        index = _integer(parts, "index", kind, where)
        if locs:
            first = _list_of(locs, path, kind, where)
            items, child, code, name = first.container, first.child, first.type, first.name
        else:
            holder, name, child, code = _insert_target(resource, path, where)
            items = holder.setdefault(name, [])
        if child is not None and not child.many:
            raise _unprocessable(f"FHIRPath Patch insert: '{path}' does not repeat", where)
        if not 0 <= index <= len(items):
            raise _unprocessable(f"FHIRPath Patch insert: index {index} out of range 0..{len(items)} for "
                                 f"'{path}'", where)
        items.insert(index, _value(parts.get("value"), child, code, name, where)[1])
        return
    src, dst = _integer(parts, "source", kind, where), _integer(parts, "destination", kind, where)
    items = _list_of(locs, path, kind, where).container
    if not (0 <= src < len(items) and 0 <= dst < len(items)):
        raise _unprocessable(f"FHIRPath Patch move: source/destination out of range 0..{len(items) - 1} for "
                             f"'{path}'", where)
    items.insert(dst, items.pop(src))


def apply_fhirpath_patch(resource: Resource, parameters: Resource) -> Resource:
    if parameters.get("resourceType") != "Parameters":
        raise bad_request("A FHIRPath Patch body is a Parameters resource", "resourceType")
    operations = parameters.get("parameter") or []
    if not isinstance(operations, list):
        raise bad_request("Parameters.parameter must be an array of operations", "Parameters.parameter")
    patched = copy.deepcopy(resource)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or op.get("name") != "operation":
            raise bad_request("FHIRPath Patch parameters must all be named 'operation'", f"Parameters.parameter[{n}]")
        _apply_operation(patched, op, n)
        _prune(patched)
    return patched


def apply_patch(resource: Resource, body: Any, media_type: str) -> Resource:
    """The patched resource; ``body`` is a JSON Patch array or a Parameters resource."""
    if media_type in JSON_PATCH_TYPES or isinstance(body, list):
        patched = apply_json_patch(resource, body)
    elif isinstance(body, dict) and body.get("resourceType") == "Binary":
        patched = apply_json_patch(resource, _binary_json_patch(body))
    elif isinstance(body, dict):
        patched = apply_fhirpath_patch(resource, body)
    else:
        raise bad_request("PATCH body must be a JSON Patch array or a FHIRPath Patch Parameters resource")
    for key in ("resourceType", "id"):
        if patched.get(key) != resource.get(key):
            raise _unprocessable(f"PATCH may not change '{key}'", f"{resource.get('resourceType')}.{key}")
    check_metadata_update(resource, patched)
    if not depth_ok(patched):  # operations can nest values into values: the result must stay storable
        raise _unprocessable(f"the patched resource nests deeper than {MAX_DEPTH} levels")
    return patched


def _binary_json_patch(binary: Resource) -> Any:
    """A JSON Patch carried in a transaction entry as a Binary (http.html#patch: bundles)."""
    import base64
    import binascii

    try:
        return numbers.loads(base64.b64decode(binary.get("data") or "", validate=True))
    except (binascii.Error, orjson.JSONDecodeError) as exc:
        raise bad_request(f"The Binary of a JSON Patch entry does not hold JSON: {exc}", "Binary.data") from exc


def _comparable(resource: Resource) -> Resource:
    out = {k: v for k, v in resource.items() if k not in ("meta", *PDSM_MUTABLE)}
    ext = [e for e in out.get("extension", []) if not (isinstance(e, dict) and e.get("url") == IS_ARCHIVED)]
    out.pop("extension", None)
    if ext:
        out["extension"] = ext
    return out


def check_metadata_update(before: Resource, after: Resource) -> None:
    """PDSm flux 03: only status, securityLabel and isArchived may change on a DocumentReference (else 405)."""
    if before.get("resourceType") != "DocumentReference":
        return
    old, new = _comparable(before), _comparable(after)
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise FHIRError(405, "business-rule",
                        "PDSm metadata update: only status, securityLabel and the isArchived extension may change "
                        f"on a DocumentReference; this PATCH changes {', '.join(changed)}",
                        tuple(f"DocumentReference.{k}" for k in changed))
