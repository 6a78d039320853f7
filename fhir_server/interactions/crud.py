"""Instance-level interactions: create, read, vread, update, delete (http.html).

Each function is the whole path of one request below the HTTP layer:
validation → store transaction (version + outbox row) → wake the indexer.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fhir_server.context import ServerContext
from fhir_server.errors import (
    FHIRError,
    Issue,
    bad_request,
    conflict,
    gone,
    not_found,
    precondition_failed,
    unprocessable,
)
from fhir_server.registry import get_type
from fhir_server.settings import Settings
from fhir_server.storage import ConcurrentWrite, StoredVersion, UniqueKeyViolation, VersionConflict, version_number
from profiles import validate

from .result import Result


def new_id() -> str:
    """A UUIDv7-style id: time-ordered, so B-tree and index inserts stay local."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (
        rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _validate(resource: dict[str, Any], settings: Settings | None = None) -> list[Issue]:
    """Base R4 + claimed and required profiles (profiles.validate); errors → 422, the rest is returned."""
    issues = validate(resource, required=settings.validation_required_profiles if settings else None,
                      unknown_profile=settings.validation_unknown_profile if settings else "warning")
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        raise unprocessable(errors)
    return [i for i in issues if i.severity not in ("error", "fatal")]


def _check_type(type_: str, resource: dict[str, Any]) -> None:
    actual = resource.get("resourceType")
    if actual != type_:
        raise bad_request(f"resourceType '{actual}' does not match the URL type '{type_}'", "resourceType")


def indexed(type_: str) -> bool:
    """Whether writes of ``type_`` get an outbox row: only registered searchable types have an index (Binary
    and AuditEvent never do; nor does a type the server does not serve, which the indexer must not create)."""
    rt = get_type(type_)
    return rt is not None and rt.searchable


def _unique_conflict(exc: UniqueKeyViolation) -> FHIRError:
    """Policy: a second current resource with the same unique identifier (masterIdentifier) is a 409."""
    return conflict(f"{exc}; a document is stored once (use If-None-Exist to make a retry idempotent)",
                    f"{exc.type}.{exc.key.element}")


def create(ctx: ServerContext, type_: str, resource: dict[str, Any]) -> Result:
    """POST: the server assigns the id; a client-supplied id is ignored (http.html#create).

    A DocumentReference with inline ``attachment.data`` (ITI-105) has its bytes
    moved to a Binary in the same transaction (see ``mhd.externalize_inline_data``).
    """
    from . import mhd  # mhd uses new_id from here

    _check_type(type_, resource)
    body = {k: v for k, v in resource.items() if k != "id"}
    issues = _validate(body, ctx.settings)
    try:
        with ctx.store.unit() as unit:
            body = mhd.externalize_inline_data(unit, body)
            stored = unit.put(type_, new_id(), body, method="POST", must_not_exist=True, indexed=indexed(type_))
    except UniqueKeyViolation as exc:
        raise _unique_conflict(exc) from exc
    except ConcurrentWrite as exc:
        raise conflict(str(exc)) from exc
    ctx.indexer.notify()
    return Result(201, stored.resource(), stored, location=True, issues=issues, raw=stored.content)


def read(ctx: ServerContext, type_: str, id_: str) -> Result:
    stored = ctx.store.read(type_, id_)
    if stored is None:
        raise not_found(f"{type_}/{id_} is not known")
    if stored.deleted:
        raise _deleted(stored)
    return Result(200, None, stored, raw=stored.content)


def vread(ctx: ServerContext, type_: str, id_: str, vid: str) -> Result:
    number = version_number(vid)
    if number is None:
        raise not_found(f"{type_}/{id_} has no version '{vid}'")
    stored = ctx.store.vread(type_, id_, number)
    if stored is None:
        if ctx.store.read(type_, id_) is None:
            raise not_found(f"{type_}/{id_} is not known")
        raise not_found(f"{type_}/{id_} has no version {vid}")
    if stored.deleted:
        raise _deleted(stored)
    return Result(200, None, stored, raw=stored.content)


def _deleted(stored: StoredVersion) -> FHIRError:
    err = gone(f"{stored.type}/{stored.id} was deleted (version {stored.version})")
    err.headers["ETag"] = f'W/"{stored.version}"'
    return err


@contextmanager
def _write_errors(type_: str, id_: str, if_match: int | None) -> Iterator[None]:
    """Store concurrency outcomes as http.html wants them: 412 for If-Match, 409 for a lost race."""
    try:
        yield
    except VersionConflict as exc:
        raise precondition_failed(
            f"If-Match names version {if_match} but the current version is {exc.current}", "If-Match"
        ) from exc
    except ConcurrentWrite as exc:
        raise conflict(f"{type_}/{id_} was updated concurrently; retry") from exc


def update(ctx: ServerContext, type_: str, id_: str, resource: dict[str, Any], if_match: int | None) -> Result:
    """PUT; creates the resource with the client's id when it does not exist (update-as-create)."""
    _check_type(type_, resource)
    if resource.get("id") != id_:
        raise bad_request(f"Resource id '{resource.get('id')}' must equal the URL id '{id_}'", f"{type_}.id")
    issues = _validate(resource, ctx.settings)
    try:
        with _write_errors(type_, id_, if_match), ctx.store.unit() as unit:
            stored = unit.put(type_, id_, resource, method="PUT", if_match=if_match, indexed=indexed(type_))
    except UniqueKeyViolation as exc:
        raise _unique_conflict(exc) from exc
    ctx.indexer.notify()
    return Result(201 if stored.version == 1 else 200, stored.resource(), stored, location=stored.version == 1,
                  issues=issues, raw=stored.content)


def delete(ctx: ServerContext, type_: str, id_: str, if_match: int | None) -> Result:
    """Logical delete; deleting an unknown or deleted resource succeeds without a new version."""
    with _write_errors(type_, id_, if_match), ctx.store.unit() as unit:
        stored = unit.delete(type_, id_, if_match=if_match, indexed=indexed(type_))
    if stored is None:
        return Result(204)
    ctx.indexer.notify()
    result = Result(204, None, stored)
    result.headers["ETag"] = f'W/"{stored.version}"'
    return result
