"""Bulk loading of ndjson files, Bundles and single resources through the normal write path.

Every resource goes through the same interaction functions as HTTP
(validation → store transaction with outbox row → indexer), so a load can
never put into the store what the API would refuse.

Ids: a resource with an id is written with update (PUT, update-as-create), so
references between loaded resources keep resolving. In a Bundle, an entry
whose ``fullUrl`` is ``urn:uuid:X`` and whose resource has no id gets id X, and
every ``urn:uuid:X`` reference in the Bundle is rewritten to ``Type/X``. A
``transaction`` Bundle goes through the transaction path instead
(``load_transaction``): atomically, one file at a time. Inputs are loaded in the
order given (directory contents sorted), each file read and parsed once.

:func:`bulk_load` is the fast path for large data sets (``fhir-server load --bulk``); see its docstring.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_common.types import Resource

from .context import ServerContext
from .errors import FHIRError
from .formats import numbers
from .index import workers as worker_pool
from .index.bulk import IndexItem
from .interactions import bundle
from .interactions.mhd import bind_unbound
from .registry import get_type
from .storage import ConcurrentWrite, NewResource, SQLResourceStore

log = logging.getLogger(__name__)

_URN = re.compile(r"^urn:uuid:([A-Za-z0-9\-.]{1,64})$")


#: why a JSON object is not a FHIR resource (a Synthea export's ``log.ndjson``, a summary file): skipped, not rejected
NOT_FHIR = "not a FHIR resource (no resourceType)"
_SOURCE_SUFFIX = re.compile(r"(?::\d+|#entry\[\d+\])$")


@dataclass
class LoadReport:
    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # unsupported types
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    not_fhir: Counter[tuple[str, str]] = field(default_factory=Counter)  # (file, reason) -> inputs skipped

    def reject_reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)


def _file_of(source: str) -> str:
    """The file of a source (``dir/a.ndjson:3``, ``b.json#entry[2]`` -> ``dir/a.ndjson``, ``b.json``)."""
    return _SOURCE_SUFFIX.sub("", source)


def _is_fhir(resource: Resource) -> bool:
    return isinstance(resource.get("resourceType"), str)


def resource_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """Each file with the name reports give it: its path relative to the directory given (two folders of a
    tree may hold files of the same name), or its name when the file itself was given."""
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".json", ".ndjson") and f.is_file())
            yield from ((f, f.relative_to(p).as_posix()) for f in found)
        else:
            yield p, p.name


def _rewrite_urns(node: Any, urns: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite_urns(v, urns) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_urns(v, urns) for v in node]
    if isinstance(node, str) and node in urns:
        return urns[node]
    return node


def _bundle_resources(bundle: Resource) -> list[Resource]:
    entries = [e for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    urns: dict[str, str] = {}
    for e in entries:
        res = e["resource"]
        m = _URN.match(str(e.get("fullUrl", "")))
        if m and "id" not in res:
            res["id"] = m.group(1)
        if m and res.get("resourceType"):
            urns[e["fullUrl"]] = f"{res['resourceType']}/{res['id']}"
    return [_rewrite_urns(e["resource"], urns) for e in entries]


@dataclass(frozen=True, slots=True)
class _Transaction:
    """A ``transaction`` Bundle file: it goes through the transaction path, whole."""

    source: str
    bundle: Resource


#: One input resource: an ndjson line (parsed by whoever handles it: the bulk path's workers), a resource
#: parsed from a ``.json`` file, or why the input has no resource.
_Raw = bytes | Resource | str


def _inputs(paths: Iterable[Path]) -> Iterator[_Transaction | tuple[str, _Raw]]:
    """Every input of ``paths`` in order (directories sorted), each file read and parsed once: a ``.json``
    file is one transaction Bundle, the resources of another Bundle, or one resource."""
    for f, name in resource_files(paths):
        if f.suffix == ".ndjson":
            with f.open("rb") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        yield f"{name}:{n}", line
            continue
        try:
            data = numbers.loads(f.read_bytes())
        except orjson.JSONDecodeError as exc:
            yield name, f"malformed JSON: {exc}"
            continue
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            if data.get("type") == "transaction":
                yield _Transaction(name, data)
                continue
            for i, res in enumerate(_bundle_resources(data)):
                yield f"{name}#entry[{i}]", res
        else:
            yield name, data if isinstance(data, dict) else "400 not a JSON object"


def _resource(raw: _Raw) -> Resource | str:
    """The resource of an input, or why it has none."""
    if isinstance(raw, bytes):
        try:
            raw = numbers.loads(raw)
        except orjson.JSONDecodeError as exc:
            return f"malformed JSON: {exc}"
        if not isinstance(raw, dict):
            return "400 not a JSON object"
    return raw


def _reason(status: object, diagnostics: str, expression: Iterable[str]) -> str:
    """A reject reason as the report shows it: ``status diagnostics[ at expression, ...]``."""
    where = ", ".join(expression)
    return f"{status} {diagnostics} at {where}" if where else f"{status} {diagnostics}"


def load_one(ctx: ServerContext, resource: Resource) -> None:
    type_ = str(resource.get("resourceType"))
    if resource.get("id"):
        bundle.single(ctx, "PUT", type_, id_=str(resource["id"]), resource=resource)
    else:
        bundle.single(ctx, "POST", type_, resource=resource)


def load_transaction(ctx: ServerContext, source: str, bundle: Resource, report: LoadReport) -> None:
    """A transaction Bundle goes through the transaction path: all of its served entries or none.

    Entries of types this server does not hold are dropped (counted as skipped)
    and references to them become ``Type/uuid``; ``urn:uuid`` POST entries are
    written as PUT ``Type/uuid`` so reloading a file never duplicates it.
    """
    from .interactions import bundle as transactions  # the loader is imported by the CLI before the app

    kept: list[Resource] = []
    dropped: dict[str, str] = {}
    for e in bundle.get("entry") or []:
        res = e.get("resource") if isinstance(e, dict) else None
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        m = _URN.match(str(e.get("fullUrl", ""))) if isinstance(e, dict) else None
        if isinstance(rtype, str) and get_type(rtype) is None:
            report.skipped[rtype] += 1
            if m:
                dropped[e["fullUrl"]] = f"{rtype}/{m.group(1)}"
            continue
        if m and isinstance(res, dict) and (e.get("request") or {}).get("method") == "POST" \
                and not (e.get("request") or {}).get("ifNoneExist"):
            e = {**e, "resource": {**res, "id": m.group(1)}, "request": {"method": "PUT",
                                                                          "url": f"{rtype}/{m.group(1)}"}}
        kept.append(e)
    kept = _rewrite_urns(kept, dropped)
    try:
        transactions.process(ctx, {**bundle, "entry": kept}, "minimal")
        report.loaded += len(kept)
    except FHIRError as exc:
        report.rejected.append((source, _reason(exc.status, exc.diagnostics, exc.expression)))


def load(ctx: ServerContext, paths: Iterable[Path], *, on_progress: Any = None) -> LoadReport:
    """Every input through the ordinary write path, in order; ``on_progress(source)`` after each resource
    or transaction Bundle."""
    report = LoadReport()
    for item in _inputs(paths):
        if isinstance(item, _Transaction):
            load_transaction(ctx, item.source, item.bundle, report)
            if on_progress is not None:
                on_progress(item.source)
            continue
        source, raw = item
        if on_progress is not None:
            on_progress(source)
        resource = _resource(raw)
        if isinstance(resource, str):
            report.rejected.append((source, resource))
            continue
        if not _is_fhir(resource):
            report.not_fhir[(_file_of(source), NOT_FHIR)] += 1
            continue
        type_ = resource.get("resourceType")
        if not isinstance(type_, str) or get_type(type_) is None:
            report.skipped[str(type_)] += 1
            continue
        try:
            load_one(ctx, resource)
            report.loaded += 1
        except FHIRError as exc:
            report.rejected.append((source, _reason(exc.status, exc.diagnostics, exc.expression)))
    return report


# --------------------------------------------------------------------------------------- bulk path
#
# Same invariants as the write path, in large batches:
# - validation (profiles.validate with the server's policy) unless the caller opts out for trusted data;
# - one store transaction per batch writes each resource's version row, head row, match keys, outbox
#   row and the tracked types' log, one statement per table (storage.sql.SQLWriteUnit.insert_new_many,
#   which owns those writes as put() does), so the store of record holds every accepted version and
#   the index can always be rebuilt from it;
# - Elasticsearch gets the documents of committed batches only (index.bulk.BulkIndexer), and an outbox
#   row is deleted once its document is acknowledged: with Elasticsearch down nothing accepted is lost,
#   the indexer applies the remaining rows later.
# Resources the batch path cannot decide alone take the ordinary path (bundle.single): ids that
# already exist (a new version of an existing resource), a masterIdentifier already held or repeated in
# the batch (409 policy), an id repeated in the batch (all three declined by insert_new_many), inline
# attachment data (ITI-105 externalisation).
# CPU-bound work (JSON parsing, validation, index document extraction) runs in worker processes.

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A resource made ready by a worker: stamped as version 1 (what the store writes for a new id), or not."""

    source: str
    new: NewResource | None  # None: must take the ordinary write path (with ``slow``)
    doc: bytes | None = None  # ES document; None for types ES does not hold, or when extraction failed
    slow: Resource | None = None

    def original(self) -> Resource:
        """The resource as given, for the ordinary path: the stamped body minus the version stamps."""
        if self.new is None:
            assert self.slow is not None
            return self.slow
        body: Resource = numbers.loads(self.new.content)
        meta = {k: v for k, v in body.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        if meta:
            body["meta"] = meta
        else:
            body.pop("meta", None)
        if self.new.method == "POST":
            body.pop("id", None)
        return body


@dataclass
class _Chunk:
    prepared: list[_Prepared] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    not_fhir: Counter[tuple[str, str]] = field(default_factory=Counter)


def _has_inline_data(resource: Resource) -> bool:
    contents = resource.get("content")
    return resource.get("resourceType") == "DocumentReference" and isinstance(contents, list) and any(
        isinstance(c, dict) and isinstance(c.get("attachment"), dict) and "data" in c["attachment"]
        for c in contents)


def _prepare_chunk(items: list[tuple[str, _Raw]], validate_: bool) -> _Chunk:
    """Worker: parse, check, validate, stamp as version 1, extract match keys and the ES document."""
    from profiles import validate

    from .interactions.ids import new_id
    from .storage import format_instant, now_us
    from .storage.keys import extract_keys

    builder = worker_pool.builder()
    out = _Chunk()
    for source, raw in items:
        res = _resource(raw)
        if isinstance(res, str):
            out.rejected.append((source, res))
            continue
        if not _is_fhir(res):
            out.not_fhir[(_file_of(source), NOT_FHIR)] += 1
            continue
        type_ = res.get("resourceType")
        rtype = get_type(type_) if isinstance(type_, str) else None
        if rtype is None or not isinstance(type_, str):
            out.skipped[str(type_)] += 1
            continue
        id_ = res.get("id")
        if id_ is not None and (not isinstance(id_, str) or not _ID.match(id_)):
            out.rejected.append((source, f"400 invalid id {id_!r} at {type_}.id"))
            continue
        if validate_:
            issues = validate(res, required=worker_pool.STATE["required"],
                              unknown_profile=worker_pool.STATE["unknown_profile"])
            errors = [i for i in issues if i.severity in ("error", "fatal")]
            if errors:
                out.rejected.append((source, _reason(422, errors[0].diagnostics, errors[0].expression)))
                continue
        if _has_inline_data(res):
            out.prepared.append(_Prepared(source, None, slow=res))
            continue
        method = "PUT" if id_ else "POST"
        id_ = id_ or new_id()
        ts = now_us()
        meta = dict(res.get("meta") or {})
        meta["versionId"] = "1"
        meta["lastUpdated"] = format_instant(ts)
        body: Resource = {"resourceType": type_, "id": id_, "meta": meta}
        body.update((k, v) for k, v in res.items() if k not in ("resourceType", "id", "meta"))
        doc: bytes | None = None
        if rtype.searchable:
            try:
                doc = numbers.dumps(builder.build(body))
            except Exception:  # as the indexer: never block a write; the outbox row parks it in index_error
                log.exception("bulk: cannot build the index document of %s/%s", type_, id_)
        new = NewResource(type_, id_, method, ts, numbers.dumps(body), frozenset(extract_keys(body)),
                          indexed=rtype.searchable)
        out.prepared.append(_Prepared(source, new, doc))
    return out


def _commit_batch(store: SQLResourceStore, prepared: list[_Prepared]) -> tuple[list[IndexItem], list[_Prepared]]:
    """One store transaction for the new resources of ``prepared`` (:meth:`SQLWriteUnit.insert_new_many`);
    returns (what to index, what the ordinary path must write, in file order)."""
    batch = [p for p in prepared if p.new is not None]
    try:
        with store.unit() as unit:
            stored = unit.insert_new_many([p.new for p in batch if p.new is not None])
    except ConcurrentWrite:  # an id created meanwhile by another writer: the ordinary path decides each one
        stored = [None] * len(batch)
    written = {id(p): s for p, s in zip(batch, stored, strict=True) if s is not None}
    items = [IndexItem(s.seq, s.type, s.id, s.version, p.doc) for p in batch
             if (s := written.get(id(p))) is not None and p.doc is not None]
    return items, [p for p in prepared if id(p) not in written]


def _batches(inputs: Iterator[_Transaction | tuple[str, _Raw]], size: int) -> Iterator[list[tuple[str, _Raw]] |
                                                                                 _Transaction]:
    """Inputs in batches of ``size``; a transaction Bundle ends the batch before it and comes alone."""
    chunk: list[tuple[str, _Raw]] = []
    for item in inputs:
        if isinstance(item, _Transaction):
            if chunk:
                yield chunk
                chunk = []
            yield item
            continue
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class BulkStats:
    """What :func:`bulk_load` did beyond the :class:`LoadReport`: how it got there."""

    fast: int = 0  # written by batches
    slow: int = 0  # through the ordinary write path
    indexed_by_bulk: int = 0
    left_to_indexer: int = 0
    es_error: str | None = None
    seconds: float = 0.0


def bulk_load(ctx: ServerContext, paths: Iterable[Path], *, validate: bool = True, workers: int | None = None,
              batch: int = 2000, on_progress: Any = None, stats: BulkStats | None = None) -> LoadReport:
    """Load ``paths`` in store batches and large ES bulk requests; same outcome as :func:`load`, faster.

    ``validate=False`` skips profile validation: only for trusted data (an export of this server,
    generated benchmark data); everything else (ids, types, uniqueness, versions) is still enforced.
    ``workers``: processes for parsing/validation/extraction (default: CPU count; 0 = in this process).
    ``on_progress(n)`` is called with the number of resources handled since the previous call.
    The index is complete when this returns, unless Elasticsearch failed (``stats.es_error``): then
    the outbox holds the rest and the indexer applies it. Indices get ``refresh_interval: -1`` and
    no replicas meanwhile (see :func:`fhir_server.index.bulk.tuned_for_bulk`).
    """
    import time
    from functools import partial

    from .index.bulk import BulkIndexer, tuned_for_bulk

    t0 = time.perf_counter()
    stats = stats if stats is not None else BulkStats()
    report = LoadReport()
    settings = ctx.settings
    init_args = (settings.public_base, settings.validation_required_profiles, settings.validation_unknown_profile)
    n_workers = worker_pool.default_count() if workers is None else workers
    searchable = set(ctx.indices.searchable_types())

    documents: list[str] = []  # DocumentReferences written by batch: their Binaries get bound at the end

    def handle(chunks: list[_Chunk]) -> None:
        for chunk in chunks:
            report.rejected += chunk.rejected
            report.skipped.update(chunk.skipped)
            report.not_fhir.update(chunk.not_fhir)
            items, slow = _commit_batch(ctx.store, chunk.prepared)
            taken_slow = {id(p) for p in slow}
            documents.extend(p.new.id for p in chunk.prepared if p.new is not None
                             and p.new.type == "DocumentReference" and id(p) not in taken_slow)
            bulk.submit(items)
            report.loaded += len(chunk.prepared) - len(slow)
            stats.fast += len(chunk.prepared) - len(slow)
            for p in slow:  # after the batch commit, so a repeated id becomes its next version
                try:
                    load_one(ctx, p.original())
                    report.loaded += 1
                    stats.slow += 1
                except FHIRError as exc:
                    report.rejected.append((p.source, _reason(exc.status, exc.diagnostics, exc.expression)))
            if on_progress is not None:
                on_progress(len(chunk.prepared) + len(chunk.rejected) + sum(chunk.skipped.values())
                            + sum(chunk.not_fhir.values()))

    with tuned_for_bulk(ctx.es, ctx.indices, sorted(searchable)), BulkIndexer(ctx.store, ctx.es, ctx.indices) as bulk, \
            worker_pool.Pipeline(partial(_prepare_chunk, validate_=validate), n_workers, worker_pool.init,
                                 init_args) as pipe:
        for work in _batches(_inputs(paths), batch):
            if isinstance(work, _Transaction):  # in file order: what comes before it is written first
                handle(pipe.drain())
                load_transaction(ctx, work.source, work.bundle, report)
                if on_progress is not None:
                    on_progress(1)
            else:
                handle(pipe.submit(work))
        handle(pipe.drain())
    for start in range(0, len(documents), 500):  # the batch path does not bind Binaries: mhd.bind_unbound does
        found = ctx.store.read_many("DocumentReference", documents[start:start + 500])
        bind_unbound(ctx.store, settings.public_base, found.values())
    stats.indexed_by_bulk = bulk.indexed
    stats.left_to_indexer = bulk.left_to_indexer
    stats.es_error = bulk.error
    if bulk.error is None:  # the ordinary path's rows and any item the bulk could not index
        ctx.indexer.drain_all()
    stats.seconds = time.perf_counter() - t0
    return report
