"""Who may download a Binary (ITI-68): it follows the resource that legitimately holds it.

A Binary carries no subject and no security label of its own. binary.html gives it ``securityContext``,
"a proxy of the security sensitivity": in patient and user context a Binary is visible only when its
``securityContext`` names a resource the principal may see. ``system`` context sees every Binary its
scopes allow.

The server fills ``securityContext`` when a document brings its content (``interactions/binding.py``):
the DocumentReference written in the same transaction (ITI-65), the one whose inline data became the
Binary (ITI-105), or the first document a system writer points at an unbound Binary. A DocumentReference
written later by anyone else never changes who may read the content: a practitioner cannot make a masked
document's content readable by pointing a document of their own at it (the rule this replaces: "any
visible DocumentReference pointing at it", which did exactly that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fhir_common.types import Resource
from fhir_server.storage import StoredVersion
from search.params.reference import parse_reference

from .policy import visible
from .tokens import Principal

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

#: how the check reads the resource named by ``securityContext``: the store, or a write unit (which sees
#: the writes of its own transaction)
Reader = Callable[[str, str], StoredVersion | None]


def security_context(binary: Resource, base_url: str) -> tuple[str, str] | None:
    """(type, id) named by ``Binary.securityContext`` (relative, or absolute on this server), else None."""
    raw = binary.get("securityContext")
    ref = raw.get("reference") if isinstance(raw, dict) else None
    if not isinstance(ref, str):
        return None
    norm, rtype, rid = parse_reference(ref, base_url)
    if not rtype or not rid or "/" in rid or "://" in norm:
        return None
    return rtype, rid


def binary_visible(ctx: ServerContext, principal: Principal, binary: Resource, interaction: str,
                   read: Reader | None = None) -> bool:
    """Whether the principal may see this Binary (read, vread, history, downloads, writes' targets).

    ``read``: where the ``securityContext`` target is read (default: the store's committed state; a
    write unit passes its own reads)."""
    contexts = principal.scopes.contexts_for("Binary", interaction)
    if not contexts:
        return False
    if contexts == {"system"}:
        return True
    target = security_context(binary, ctx.base_url)
    if target is None:
        return False  # bound to nothing: only a backend may read it
    stored = (read or ctx.store.read)(*target)
    if stored is None or stored.deleted or stored.content is None:
        return False
    return visible(principal, stored.resource(), "read")
