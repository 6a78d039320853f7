"""Reads (read, vread) and the rules every write shares: ids, validation, which types are indexed, the
unique-identifier policy.

Writes themselves (create, update, delete, patch, plain or conditional, standalone or in a Bundle) all take
one path: ``transaction.single`` / ``bundle.process`` → one store transaction (version + outbox row) → the indexer.
"""

from __future__ import annotations

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import (
    FHIRError,
    Issue,
    conflict,
    gone,
    not_found,
    unprocessable,
)
from fhir_server.observability.metrics import count_validation_reject
from fhir_server.registry import get_type
from fhir_server.settings import Settings
from fhir_server.storage import StoredVersion, UniqueKeyViolation, version_number
from profiles import validate

from .result import Result


def validate_resource(resource: Resource, settings: Settings | None = None) -> list[Issue]:
    """Base R4 + claimed and required profiles (profiles.validate); errors → 422, the rest is returned."""
    issues = validate(resource, required=settings.validation_required_profiles if settings else None,
                      unknown_profile=settings.validation_unknown_profile if settings else "warning")
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        count_validation_reject(resource, settings.validation_required_profiles if settings else None)
        raise unprocessable(errors)
    return [i for i in issues if i.severity not in ("error", "fatal")]


def indexed(type_: str) -> bool:
    """Whether writes of ``type_`` get an outbox row: only registered searchable types have an index (Binary
    and AuditEvent never do; nor does a type the server does not serve, which the indexer must not create)."""
    rt = get_type(type_)
    return rt is not None and rt.searchable


def unique_conflict(exc: UniqueKeyViolation, show_holder: bool) -> FHIRError:
    """Policy: a second current resource with the same unique identifier (masterIdentifier) is a 409.

    ``show_holder``: whether the caller may see the resource holding it (never named otherwise)."""
    held = str(exc) if show_holder else (f"{exc.type}.{exc.key.element} {exc.key.system}|{exc.key.value} is "
                                         f"already held by another {exc.type}")
    return conflict(f"{held}; a document is stored once (use If-None-Exist to make a retry idempotent)",
                    f"{exc.type}.{exc.key.element}")


def read(ctx: ServerContext, type_: str, id_: str) -> Result:
    stored = ctx.store.read(type_, id_)
    if stored is None:
        raise not_found(f"{type_}/{id_} is not known")
    if stored.deleted:
        raise _deleted(stored)
    return Result(200, None, stored, raw=stored.content)


def vread(ctx: ServerContext, type_: str, id_: str, vid: str) -> Result:
    number = version_number(vid)
    stored = ctx.store.vread(type_, id_, number) if number is not None else None
    if stored is None:  # one answer for an unknown id and an unknown version: neither reveals the other
        raise not_found(f"{type_}/{id_}/_history/{vid} is not known")
    if stored.deleted:
        raise _deleted(stored)
    return Result(200, None, stored, raw=stored.content)


def _deleted(stored: StoredVersion) -> FHIRError:
    err = gone(f"{stored.type}/{stored.id} was deleted (version {stored.version})")
    err.headers["ETag"] = f'W/"{stored.version}"'
    return err
