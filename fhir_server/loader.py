"""Bulk loading of ndjson files, Bundles and single resources through the normal write path.

Every resource goes through the same interaction functions as HTTP
(validation → store transaction with outbox row → indexer), so a load can
never put into the store what the API would refuse.

Ids: a resource with an id is written with update (PUT, update-as-create), so
references between loaded resources keep resolving. In a Bundle, an entry
whose ``fullUrl`` is ``urn:uuid:X`` and whose resource has no id gets id X, and
every ``urn:uuid:X`` reference in the Bundle is rewritten to ``Type/X``. A
``transaction`` Bundle goes through the transaction path instead
(``load_transaction``): atomically, one file at a time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .context import ServerContext
from .errors import FHIRError
from .interactions import crud
from .registry import get_type

_URN = re.compile(r"^urn:uuid:([A-Za-z0-9\-.]{1,64})$")


@dataclass
class LoadReport:
    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # unsupported types
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    def reject_reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix in (".json", ".ndjson") and f.is_file())
        else:
            yield p


def _rewrite_urns(node: Any, urns: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite_urns(v, urns) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_urns(v, urns) for v in node]
    if isinstance(node, str) and node in urns:
        return urns[node]
    return node


def _bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
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


def iter_resources(paths: Iterable[Path]) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """(source label, resource or None, parse error or None) for every resource in ``paths``."""
    for f in _files(paths):
        if f.suffix == ".ndjson":
            with f.open("rb") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{f.name}:{n}", orjson.loads(line), None
                    except orjson.JSONDecodeError as exc:
                        yield f"{f.name}:{n}", None, f"malformed JSON: {exc}"
            continue
        try:
            data = orjson.loads(f.read_bytes())
        except orjson.JSONDecodeError as exc:
            yield f.name, None, f"malformed JSON: {exc}"
            continue
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            for i, res in enumerate(_bundle_resources(data)):
                yield f"{f.name}#entry[{i}]", res, None
        else:
            yield f.name, data, None


def load_one(ctx: ServerContext, resource: dict[str, Any]) -> None:
    type_ = str(resource.get("resourceType"))
    if resource.get("id"):
        crud.update(ctx, type_, str(resource["id"]), resource, None)
    else:
        crud.create(ctx, type_, resource)


def _transaction_bundle(f: Path) -> dict[str, Any] | None:
    if f.suffix != ".json":
        return None
    try:
        data = orjson.loads(f.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and data.get("resourceType") == "Bundle" and data.get("type") == "transaction":
        return data
    return None


def load_transaction(ctx: ServerContext, source: str, bundle: dict[str, Any], report: LoadReport) -> None:
    """A transaction Bundle goes through the transaction path: all of its served entries or none.

    Entries of types this server does not hold are dropped (counted as skipped)
    and references to them become ``Type/uuid``; ``urn:uuid`` POST entries are
    written as PUT ``Type/uuid`` so reloading a file never duplicates it.
    """
    from .interactions import bundle as transactions  # the loader is imported by the CLI before the app

    kept: list[dict[str, Any]] = []
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
        where = f" at {', '.join(exc.expression)}" if exc.expression else ""
        report.rejected.append((source, f"{exc.status} {exc.diagnostics}{where}"))


def load(ctx: ServerContext, paths: Iterable[Path], *, on_progress: Any = None) -> LoadReport:
    report = LoadReport()
    plain: list[Path] = []
    for f in _files(paths):
        tx = _transaction_bundle(f)
        if tx is None:
            plain.append(f)
            continue
        if on_progress is not None:
            on_progress(f.name)
        load_transaction(ctx, f.name, tx, report)
    for source, resource, error in iter_resources(plain):
        if on_progress is not None:
            on_progress(source)
        if resource is None:
            report.rejected.append((source, error or "unreadable"))
            continue
        type_ = resource.get("resourceType")
        if not isinstance(type_, str) or get_type(type_) is None:
            report.skipped[str(type_)] += 1
            continue
        try:
            load_one(ctx, resource)
            report.loaded += 1
        except FHIRError as exc:
            where = f" at {', '.join(exc.expression)}" if exc.expression else ""
            report.rejected.append((source, f"{exc.status} {exc.diagnostics}{where}"))
    return report
