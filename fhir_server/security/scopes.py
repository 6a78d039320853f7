"""SMART App Launch scopes (v2 ``patient/DocumentReference.rs``, v1 ``patient/*.read``).

A scope grants interactions on resource types within a context:

- ``patient/`` — only the resources in the compartment of the token's ``patient``;
- ``user/`` — what the authenticated user may see (masking and consent still apply);
- ``system/`` — a backend service with no user.

v2 permissions are the letters ``c r u d s`` (create, read, update, delete, search); v1 ``read`` means
``rs``, ``write`` means ``cud`` and ``*`` means all. Scopes carrying a v2 query restriction
(``patient/Observation.rs?category=laboratory``) are not granted at all: the server does not enforce
such restrictions yet, and granting the unrestricted scope instead would widen access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(PERMISSIONS)}
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$")

# FHIR interaction -> SMART permission letter
INTERACTION_PERMISSION = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "history-type": "s",
    "history-system": "s",
    "search-type": "s",
    "search-system": "s",
    "update": "u",
    "patch": "u",
    "delete": "d",
}


@dataclass(frozen=True)
class Grant:
    context: str
    resource_type: str  # a type name or "*"
    permissions: frozenset[str]

    def allows(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions


def parse_permissions(text: str) -> frozenset[str] | None:
    """``rs`` -> {r, s}; v1 ``read``/``write``/``*``; None when not a valid permission string."""
    if text in _V1:
        return _V1[text]
    if not text or any(c not in PERMISSIONS for c in text):
        return None
    # v2 requires the letters in canonical order, each at most once
    if list(text) != sorted(set(text), key=PERMISSIONS.index):
        return None
    return frozenset(text)


def parse_scope(scope: str) -> Grant | None:
    """One SMART resource scope, or None for other scopes (openid, launch, offline_access...)."""
    m = _SCOPE.match(scope)
    if m is None:
        return None
    permissions = parse_permissions(m.group(3))
    if permissions is None:
        return None
    return Grant(m.group(1), m.group(2), permissions)


@dataclass(frozen=True)
class ScopeSet:
    grants: tuple[Grant, ...]
    raw: tuple[str, ...]

    @classmethod
    def parse(cls, scopes: str | Iterable[str]) -> ScopeSet:
        items = tuple(scopes.split()) if isinstance(scopes, str) else tuple(scopes)
        grants = tuple(g for g in (parse_scope(s) for s in items) if g is not None)
        return cls(grants, items)

    def contexts_for(self, resource_type: str, interaction: str) -> set[str]:
        """The contexts (patient/user/system) in which ``interaction`` on ``resource_type`` is granted."""
        permission = INTERACTION_PERMISSION.get(interaction)
        if permission is None:
            return set()
        return {g.context for g in self.grants if g.allows(resource_type, permission)}

    def allows(self, resource_type: str, interaction: str) -> bool:
        return bool(self.contexts_for(resource_type, interaction))
