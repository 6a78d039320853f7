"""PATCH (http.html#patch): JSON Patch (RFC 6902) and FHIRPath Patch (fhirpatch.html).

JSON Patch uses the well-kept ``jsonpatch`` library. FHIRPath Patch is done here
because no maintained Python implementation exists: paths are the FHIRPath
subset patches use in practice — ``Type.a.b``, ``name[n]``, ``where(f='v')``,
``first()``/``last()`` — and anything else is a 400, never a guess.

The PDSm metadata-update rule (flux 03, st_maj.md) is applied to every PATCH of a
DocumentReference: only ``status``, ``securityLabel`` and the isArchived
extension may differ afterwards, otherwise 405.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
import orjson

from fhir_server.errors import FHIRError, bad_request

IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
PDSM_MUTABLE = ("status", "securityLabel")
JSON_PATCH_TYPES = {"application/json-patch+json"}
# Repeating elements FHIRPath ``add`` appends to when they are still absent (no schema lookup needed for these)
_REPEATING = {"extension", "modifierExtension", "coding", "identifier", "securityLabel", "category", "contained",
              "telecom", "address", "name", "given", "prefix", "suffix", "line", "content", "relatesTo", "author",
              "entry", "tag", "profile", "security", "note", "performer", "reasonCode", "protocolApplied",
              "event", "related", "link", "contact", "communication", "generalPractitioner", "part", "parameter"}

Location = tuple[Any, Any]  # (container, key): the node is container[key]


def _unprocessable(msg: str, *where: str) -> FHIRError:
    return FHIRError(422, "processing", msg, where)


# -- JSON Patch ------------------------------------------------------------------------------------

def apply_json_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
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

def _split(path: str) -> list[str]:
    parts, depth, quote, cur = [], 0, False, ""
    for ch in path:
        if ch == "'" and depth:
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "." and depth == 0 and not quote:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")
_WHERE = re.compile(r"^where\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*'((?:[^'\\]|\\.)*)'\s*\)$")


def _select(resource: dict[str, Any], path: str) -> list[Location]:
    tokens = _split(path.strip())
    if not tokens or tokens[0] != resource.get("resourceType"):
        raise bad_request(f"FHIRPath Patch path '{path}' must start with the resource type", "Parameters.parameter")
    holder = {"root": resource}
    locs: list[Location] = [(holder, "root")]
    for tok in tokens[1:]:
        tok = tok.strip()
        if tok in ("first()", "last()"):
            locs = locs[:1] if tok == "first()" else locs[-1:]
            continue
        if m := _WHERE.match(tok):
            field, want = m.group(1), m.group(2).replace("\\'", "'")
            locs = [(c, k) for c, k in locs if isinstance(c[k], dict) and c[k].get(field) == want]
            continue
        m = _NAME.match(tok)
        if m is None:
            raise bad_request(f"Unsupported FHIRPath in patch path '{path}' at '{tok}'", "Parameters.parameter")
        name, index = m.group(1), m.group(2)
        nxt: list[Location] = []
        for c, k in locs:
            node = c[k]
            if not isinstance(node, dict) or name not in node:
                continue
            value = node[name]
            if isinstance(value, list):
                nxt.extend((value, i) for i in range(len(value)))
            else:
                nxt.append((node, name))
        if index is not None:
            nxt = nxt[int(index):int(index) + 1]
        locs = nxt
    return locs


def _value_of(part: dict[str, Any]) -> Any:
    for key, value in part.items():
        if key.startswith("value"):
            return copy.deepcopy(value)
    if isinstance(part.get("part"), list):  # complex value given as parts
        out: dict[str, Any] = {}
        for p in part["part"]:
            v = _value_of(p)
            name = p.get("name")
            if name in _REPEATING:
                out.setdefault(name, []).append(v)
            else:
                out[name] = v
        return out
    if "resource" in part:
        return copy.deepcopy(part["resource"])
    raise bad_request("FHIRPath Patch operation has no value", "Parameters.parameter")


def _one(locs: list[Location], path: str, op: str) -> Location:
    if len(locs) != 1:
        raise _unprocessable(f"FHIRPath Patch {op}: path '{path}' matches {len(locs)} elements, expected 1")
    return locs[0]


def _remove(loc: Location) -> None:
    container, key = loc
    del container[key]


def _apply_operation(resource: dict[str, Any], op: dict[str, Any], n: int) -> None:
    where = f"Parameters.parameter[{n}]"
    parts = {p.get("name"): p for p in op.get("part", []) if isinstance(p, dict)}
    kind = parts.get("type", {}).get("valueCode")
    path = parts.get("path", {}).get("valueString")
    if not isinstance(kind, str) or not isinstance(path, str):
        raise bad_request("Each FHIRPath Patch operation needs a type and a path", where)
    locs = _select(resource, path)
    if kind == "delete":
        if len(locs) > 1:
            raise _unprocessable(f"FHIRPath Patch delete: path '{path}' matches {len(locs)} elements", where)
        if locs:
            _remove(locs[0])
        return
    if kind == "replace":
        c, k = _one(locs, path, kind)
        c[k] = _value_of(parts.get("value", {}))
        return
    if kind == "add":
        name = parts.get("name", {}).get("valueString")
        if not isinstance(name, str):
            raise bad_request("FHIRPath Patch add needs a name", where)
        c, k = _one(locs, path, kind)
        parent = c[k]
        if not isinstance(parent, dict):
            raise _unprocessable(f"FHIRPath Patch add: '{path}' is not an element with children", where)
        value = _value_of(parts.get("value", {}))
        if isinstance(parent.get(name), list):
            parent[name].append(value)
        elif name in _REPEATING and name not in parent:
            parent[name] = [value]
        elif name in parent:
            raise _unprocessable(f"FHIRPath Patch add: '{path}.{name}' already has a value", where)
        else:
            parent[name] = value
        return
    if kind in ("insert", "move"):
        # path designates the list itself; its items are the selected locations
        container = locs[0][0] if locs and isinstance(locs[0][0], list) else None
        if container is None:
            raise _unprocessable(f"FHIRPath Patch {kind}: '{path}' is not a list with items", where)
        if kind == "insert":
            index = parts.get("index", {}).get("valueInteger")
            if not isinstance(index, int) or not 0 <= index <= len(container):
                raise _unprocessable(f"FHIRPath Patch insert: index out of range for '{path}'", where)
            container.insert(index, _value_of(parts.get("value", {})))
        else:
            src, dst = parts.get("source", {}).get("valueInteger"), parts.get("destination", {}).get("valueInteger")
            if not (isinstance(src, int) and isinstance(dst, int) and 0 <= src < len(container)
                    and 0 <= dst < len(container)):
                raise _unprocessable(f"FHIRPath Patch move: source/destination out of range for '{path}'", where)
            container.insert(dst, container.pop(src))
        return
    raise bad_request(f"Unknown FHIRPath Patch operation type '{kind}'", where)


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    if parameters.get("resourceType") != "Parameters":
        raise bad_request("A FHIRPath Patch body is a Parameters resource", "resourceType")
    patched = copy.deepcopy(resource)
    for n, op in enumerate(parameters.get("parameter") or []):
        if not isinstance(op, dict) or op.get("name") != "operation":
            raise bad_request("FHIRPath Patch parameters must all be named 'operation'", f"Parameters.parameter[{n}]")
        _apply_operation(patched, op, n)
    return patched


def apply_patch(resource: dict[str, Any], body: Any, media_type: str) -> dict[str, Any]:
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
    return patched


def _binary_json_patch(binary: dict[str, Any]) -> Any:
    """A JSON Patch carried in a transaction entry as a Binary (http.html#patch: bundles)."""
    import base64
    import binascii

    try:
        return orjson.loads(base64.b64decode(binary.get("data") or "", validate=True))
    except (binascii.Error, orjson.JSONDecodeError) as exc:
        raise bad_request(f"The Binary of a JSON Patch entry does not hold JSON: {exc}", "Binary.data") from exc


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("meta", *PDSM_MUTABLE)}
    ext = [e for e in out.get("extension", []) if not (isinstance(e, dict) and e.get("url") == IS_ARCHIVED)]
    out.pop("extension", None)
    if ext:
        out["extension"] = ext
    return out


def check_metadata_update(before: dict[str, Any], after: dict[str, Any]) -> None:
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
