"""IHE MHD / ANS PDSm document sharing rules on top of transactions and create.

ITI-65 (Provide Document Bundle), checked inside the transaction's store unit,
after references are rewritten and before anything is written:

- every DocumentReference ``content.attachment`` pointing at a Binary (of the
  Bundle, or already stored) has ``size`` = its byte count and ``hash`` =
  base64(SHA-1(bytes)) when those are given (422 otherwise);
- the SubmissionSet (and Folder) ``subject`` and each DocumentReference
  ``subject`` name the same Patient (422);
- a DocumentReference that ``replaces`` another: the target must exist and be
  ``current`` (404 / 409); unless the Bundle itself PATCHes or PUTs the target,
  the server marks it ``superseded`` in the same unit, so a replacement is
  always atomic with its new document.

ITI-105 (Simplified Publish): a DocumentReference created with inline
``attachment.data`` has the bytes moved to a new Binary in the same unit; the
attachment keeps ``url = Binary/{id}``, ``size`` and ``hash`` (verified when the
client sent them), so documents are always retrieved the same way (ITI-68, GET
on ``attachment.url``) and search never carries document bytes.

Profile conformance (PDSm provide-bundle, comprehensive, simplified-publish) is
the validation engine's job, reached through ``crud.validate_resource``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fhir_common.types import Resource
from fhir_server.errors import FHIRError, conflict, not_found
from fhir_server.storage import ResourceStore, StoredVersion, WriteUnit

from . import binary
from .ids import new_id

if TYPE_CHECKING:
    from .entries import Entry

#: whether the caller may see a stored version, for an interaction (the Bundle's access policy)
Sees = Callable[[StoredVersion, str], bool]

SUBMISSION_SET = "submissionset"
FOLDER = "folder"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"


def _invalid(msg: str, where: str) -> FHIRError:
    return FHIRError(422, "business-rule", msg, (where,))


def list_kind(resource: Resource) -> str | None:
    """``submissionset`` / ``folder`` for MHD Lists, else None."""
    if resource.get("resourceType") != "List":
        return None
    for coding in (resource.get("code") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("code") in (SUBMISSION_SET, FOLDER):
            return str(coding["code"])
    return None


def _ref(value: Any) -> str | None:
    return value.get("reference") if isinstance(value, dict) and isinstance(value.get("reference"), str) else None


def check_attachment(attachment: dict[str, Any], content: bytes, where: str) -> None:
    size, digest = attachment.get("size"), attachment.get("hash")
    if size is not None and size != len(content):
        raise _invalid(f"{where}: attachment.size is {size} but the document has {len(content)} bytes",
                       f"{where}.size")
    if digest is not None and digest != binary.sha1_b64(content):
        raise _invalid(f"{where}: attachment.hash is not the SHA-1 of the document (expected "
                       f"{binary.sha1_b64(content)})", f"{where}.hash")


def _binary_bytes(unit: WriteUnit, url: str, in_bundle: dict[str, Entry], where: str, sees: Sees) -> bytes | None:
    if not url.startswith("Binary/"):
        return None  # external or absolute URL: not ours to check
    entry = in_bundle.get(url)
    if entry is not None and entry.resource is not None:
        return binary.decode_data(entry.resource.get("data"), f"Bundle.entry[{entry.index}].resource.data")
    stored = unit.current("Binary", url.removeprefix("Binary/"))
    if stored is None or stored.deleted or stored.content is None or not sees(stored, "read"):
        # a Binary the caller may not read is as unknown: its size and hash are not checked (nor revealed)
        raise not_found(f"{where}: attachment.url '{url}' names no Binary", f"{where}.url")
    return binary.raw_content(stored.resource())[1]


def _replaced(unit: WriteUnit, old_id: str, in_bundle: dict[str, Entry], sees: Sees) -> Resource | None:
    """The document a ``replaces`` names, as the caller may see it: written by this Bundle, or stored."""
    entry = in_bundle.get(old_id)
    if entry is not None and entry.resource is not None:
        return entry.resource
    old = unit.current("DocumentReference", old_id)
    if old is None or old.deleted or old.content is None or not sees(old, "update"):
        return None  # unknown, or hidden from the caller: the same answer
    return old.resource()


def check_provide_bundle(unit: WriteUnit, entries: list[Entry], sees: Sees) -> list[tuple[str, str]]:
    """Check the document-sharing rules; returns (where, id) of DocumentReferences the server must supersede.

    ``sees``: the caller's policy. A stored Binary or replaced document it may not see is answered as an
    unknown one, so these rules reveal nothing of what the caller could not read."""
    writes = [e for e in entries if e.method in ("POST", "PUT") and e.resource is not None and e.target]
    binaries = {f"Binary/{e.target}": e for e in writes if e.type == "Binary"}
    patched = {e.target for e in entries if e.type == "DocumentReference" and e.method in ("PATCH", "PUT")}
    lists = [e for e in writes if list_kind(e.resource or {}) is not None]
    docs = [e for e in writes if e.type == "DocumentReference" and e.status == 0]
    written_docs = {e.target: e for e in writes if e.type == "DocumentReference" and e.target}
    supersede: list[tuple[str, str]] = []
    for e in docs:
        res, where = e.resource or {}, f"Bundle.entry[{e.index}].resource"
        for j, content in enumerate(res.get("content") or []):
            att = content.get("attachment") if isinstance(content, dict) else None
            url = att.get("url") if isinstance(att, dict) else None
            if isinstance(url, str):
                awhere = f"{where}.content[{j}].attachment"
                data = _binary_bytes(unit, url, binaries, awhere, sees)
                if data is not None and isinstance(att, dict):
                    check_attachment(att, data, awhere)
        subject = _ref(res.get("subject"))
        for lst in lists:
            lsubject = _ref((lst.resource or {}).get("subject"))
            if lsubject and subject and lsubject != subject:
                raise _invalid(f"{where}.subject ({subject}) is not the patient of the {list_kind(lst.resource or {})}"
                               f" Bundle.entry[{lst.index}] ({lsubject})", f"{where}.subject")
        for k, rel in enumerate(res.get("relatesTo") or []):
            if not isinstance(rel, dict) or rel.get("code") != "replaces":
                continue
            target, rwhere = _ref(rel.get("target")), f"{where}.relatesTo[{k}].target"
            if not target or not target.startswith("DocumentReference/"):
                raise _invalid(f"{rwhere}: a replaced document is referenced as DocumentReference/id", rwhere)
            old_id = target.removeprefix("DocumentReference/")
            old = _replaced(unit, old_id, written_docs, sees)
            if old is None:
                raise not_found(f"{rwhere}: the replaced {target} is not known", rwhere)
            if old.get("status") != "current":
                raise conflict(f"{rwhere}: {target} is '{old.get('status')}', only a current "
                               "document can be replaced", rwhere)
            if old_id not in patched:
                supersede.append((rwhere, old_id))
    return supersede


def supersede(unit: WriteUnit, doc_id: str, where: str) -> None:
    """Mark a replaced DocumentReference superseded (a new version, like the PDSm metadata PATCH)."""
    old = unit.current("DocumentReference", doc_id)
    if old is None or old.deleted:
        raise not_found(f"{where}: DocumentReference/{doc_id} is not known", where)
    unit.put("DocumentReference", doc_id, {**old.resource(), "status": "superseded"}, method="PATCH",
             if_match=old.version)


def externalize_inline_data(unit: WriteUnit, resource: Resource, owner: str) -> Resource:
    """ITI-105: move each ``attachment.data`` into a Binary written in ``unit``, its ``securityContext`` the
    document ``owner`` (``DocumentReference/id``) that brought it; returns the new resource."""
    contents = resource.get("content")
    if resource.get("resourceType") != "DocumentReference" or not isinstance(contents, list):
        return resource
    if not any(isinstance(c, dict) and isinstance(c.get("attachment"), dict) and "data" in c["attachment"]
               for c in contents):
        return resource
    new_contents = []
    for j, content in enumerate(contents):
        att = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(att, dict) or "data" not in att:
            new_contents.append(content)
            continue
        where = f"DocumentReference.content[{j}].attachment"
        data = binary.decode_data(att["data"], f"{where}.data")
        check_attachment(att, data, where)
        content_type = att.get("contentType") or "application/octet-stream"
        bin_id = new_id()
        unit.put("Binary", bin_id, {**binary.make_binary(str(content_type), data),
                                    "securityContext": {"reference": owner}},
                 method="POST", must_not_exist=True, indexed=False)
        new_att = {k: v for k, v in att.items() if k != "data"}
        new_att.update(url=f"Binary/{bin_id}", size=len(data), hash=binary.sha1_b64(data))
        new_contents.append({**content, "attachment": new_att})
    return {**resource, "content": new_contents}


# -- which document a Binary belongs to (security/binary_access.py reads it) -------------------------------

def attachment_binaries(doc: Resource, base_url: str) -> list[str]:
    """Ids of the Binaries of this server a DocumentReference's ``content.attachment.url`` names, in order."""
    out: list[str] = []
    for content in doc.get("content") or []:
        att = content.get("attachment") if isinstance(content, dict) else None
        url = att.get("url") if isinstance(att, dict) else None
        if not isinstance(url, str):
            continue
        local = url[len(base_url) + 1:] if url.startswith(base_url + "/") else url
        if local.startswith("Binary/") and local.count("/") == 1 and local[7:] and local[7:] not in out:
            out.append(local[7:])
    return out


def bind_binaries(entries: list[Entry], base_url: str) -> None:
    """Each Binary this transaction writes without a ``securityContext`` gets the first DocumentReference of
    the Bundle (in entry order) whose attachment names it: the document that brought it (ITI-65)."""
    binaries = {e.target: e for e in entries if e.type == "Binary" and e.method in ("POST", "PUT")
                and e.status == 0 and e.target and e.resource is not None and "securityContext" not in e.resource}
    if not binaries:
        return
    for doc in sorted(entries, key=lambda e: e.index):
        if doc.type != "DocumentReference" or doc.method not in ("POST", "PUT") or doc.resource is None:
            continue
        for bin_id in attachment_binaries(doc.resource, base_url):
            b = binaries.pop(bin_id, None)
            if b is not None and b.resource is not None:
                b.resource = {**b.resource, "securityContext": {"reference": f"DocumentReference/{doc.target}"}}


def bind_stored(unit: WriteUnit, doc: Entry, base_url: str, sees: Sees, written: set[str]) -> None:
    """A stored Binary with no ``securityContext`` that a document names is bound to it, when the writer may
    read that Binary (a backend: nobody else may read an unbound one). A later document never rebinds a
    bound Binary, so pointing a document at someone else's content never makes it readable."""
    if doc.resource is None or doc.target is None:
        return
    for bin_id in attachment_binaries(doc.resource, base_url):
        if bin_id not in written:  # one written by this Bundle is bound by bind_binaries
            _bind(unit, bin_id, doc.target, lambda stored: sees(stored, "read"))


def _bind(unit: WriteUnit, bin_id: str, doc_id: str, may: Callable[[StoredVersion], bool]) -> bool:
    """Give the stored Binary ``bin_id`` the ``securityContext`` ``DocumentReference/doc_id`` (a new version in
    ``unit``) if it has none and ``may`` allows it; whether it was bound."""
    current = unit.current("Binary", bin_id)
    if current is None or current.deleted or current.content is None:
        return False
    resource = current.resource()
    if "securityContext" in resource or not may(current):
        return False  # bound already (never rebound), or not the writer's to bind
    unit.put("Binary", bin_id, {**resource, "securityContext": {"reference": f"DocumentReference/{doc_id}"}},
             method="PUT", if_match=current.version, indexed=False)
    return True


def bind_unbound(store: ResourceStore, base_url: str, docs: Iterable[StoredVersion], batch: int = 500) -> int:
    """Bind each stored Binary without ``securityContext`` that ``docs`` (current DocumentReference versions)
    name to the earliest of them (by the position of its first version): the document that brought it.

    For what reached the store without a write path that binds (data stored before the rule, ``load --bulk``):
    until bound, only a backend may read such a Binary. Returns how many were bound."""
    earliest: dict[str, tuple[int, str]] = {}
    pending: list[StoredVersion] = []

    def scan() -> None:
        named = {b: d for d in pending for b in attachment_binaries(d.resource(), base_url)}
        if not named:
            return
        found = store.read_many("Binary", sorted(named))
        unbound = {b for b, v in found.items()
                   if not v.deleted and v.content is not None and "securityContext" not in v.resource()}
        for d in pending:
            names = [b for b in attachment_binaries(d.resource(), base_url) if b in unbound]
            if not names:
                continue
            first = store.vread("DocumentReference", d.id, 1)
            position = first.seq if first is not None else d.seq
            for b in names:
                if b not in earliest or position < earliest[b][0]:
                    earliest[b] = (position, d.id)
        pending.clear()

    for doc in docs:
        if doc.type == "DocumentReference" and not doc.deleted and doc.content is not None:
            pending.append(doc)
            if len(pending) >= batch:
                scan()
    scan()
    bound = 0
    items = sorted(earliest.items())
    for start in range(0, len(items), batch):
        with store.unit() as unit:
            for bin_id, (_, doc_id) in items[start:start + batch]:
                bound += _bind(unit, bin_id, doc_id, lambda _stored: True)  # (one bound meanwhile stays)
    return bound
