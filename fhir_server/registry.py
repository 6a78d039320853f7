"""The resource types this server holds and the interactions each supports.

Adding a type (``Binary``, ``List``) is one entry here; routes, the
CapabilityStatement, the OpenAPI description and the index are all driven by this table
(:func:`served_types` / :func:`served_type`: what this configuration serves).

A type not held as an ordinary versioned resource (``AuditEvent``: the audit
trail's own table) names its ``store``; the package serving it plugs a
:class:`Store` in at start (:func:`plug`), and every read, vread, search and
CapabilityStatement entry of the type goes there (:func:`store_of`): no layer
below the package names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.result import Result
    from fhir_server.settings import Settings

#: the versioned resource store (SQL store of record + Elasticsearch index)
RESOURCES = "resources"

INSTANCE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance")
TYPE_INTERACTIONS = ("create", "search-type", "history-type")


@dataclass(frozen=True)
class ResourceType:
    name: str
    interactions: tuple[str, ...] = INSTANCE_INTERACTIONS + TYPE_INTERACTIONS
    searchable: bool = True  # indexed in Elasticsearch
    documentation: str = ""
    store: str = RESOURCES  # where it is held: another name is a :class:`Store` plugged in at start

    @property
    def profile(self) -> str:
        return f"http://hl7.org/fhir/StructureDefinition/{self.name}"

    @property
    def audit(self) -> bool:
        """Held by the audit trail: served only when it is on (``settings.audit_enabled``)."""
        return self.store == "audit"

    def supports(self, interaction: str) -> bool:
        return interaction in self.interactions


RESOURCE_TYPES: dict[str, ResourceType] = {
    rt.name: rt
    for rt in (
        ResourceType("Patient", documentation="Patient identities (FR Core Patient / INS)."),
        ResourceType("DocumentReference", documentation="Shared documents (IHE MHD / ANS PDSm)."),
        ResourceType("Immunization", documentation="Vaccinations (FR Core Immunization)."),
        ResourceType("List", documentation="IHE MHD SubmissionSet and Folder (ANS PDSm)."),
        ResourceType("Binary", interactions=("read", "vread", "update", "delete", "history-instance", "create"),
                     searchable=False,
                     documentation="Document content (ITI-68 retrieve: raw bytes unless a FHIR format is asked)."),
        ResourceType("AuditEvent", interactions=("read", "vread", "search-type"), searchable=False,
                     documentation="Access trace (IHE BALP), written by the server only (fhir_server/audit); "
                                   "read and searched in its own SQL table, not Elasticsearch.", store="audit"),
        ResourceType("Consent", documentation="A patient's opposition to access by a practitioner or organisation "
                                              "(deny provision naming the actor), enforced on every path."),
    )
}


def get_type(name: str) -> ResourceType | None:
    return RESOURCE_TYPES.get(name)


def served_types(settings: Settings) -> list[ResourceType]:
    """The types this configuration serves: AuditEvent only with the audit trail on."""
    return types_served(audit=settings.audit_enabled)


def types_served(*, audit: bool) -> list[ResourceType]:
    return [rt for rt in RESOURCE_TYPES.values() if audit or not rt.audit]


def served_type(name: str, settings: Settings) -> ResourceType | None:
    """The REST routes' look-up: a type the configuration does not serve is as unknown as any other."""
    rt = RESOURCE_TYPES.get(name)
    return rt if rt is not None and (settings.audit_enabled or not rt.audit) else None


@dataclass(frozen=True)
class Store:
    """How a type held outside the resource store is served. Each callable is the caller's view: ``principal``
    / ``policy`` (None: unrestricted) are applied by the store itself, hidden records answering as unknown."""

    read: Callable[..., Result]  # (ctx, id_, principal=None) -> Result
    vread: Callable[..., Result]  # (ctx, id_, vid, principal=None) -> Result
    search: Callable[..., Result]  # (ctx, params, *, strict=False, policy=None) -> Result
    capability: Callable[[], dict[str, Any]]  # what CapabilityStatement.rest.resource says of the type


_STORES: dict[str, Store] = {}


def plug(name: str, store: Store) -> None:
    """Serve the types whose ``store`` is ``name`` from ``store`` (the audit package does, at app start)."""
    _STORES[name] = store


def store_of(type_: str) -> Store | None:
    """The plugged-in store serving ``type_``; None for an ordinary (or unknown) type."""
    rt = get_type(type_)
    if rt is None or rt.store == RESOURCES:
        return None
    store = _STORES.get(rt.store)
    if store is None:
        raise RuntimeError(f"{type_} is served by the '{rt.store}' store, which was not plugged in")
    return store
