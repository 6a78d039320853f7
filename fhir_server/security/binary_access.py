"""Who may download a Binary (ITI-68): it follows the resource that gives it meaning.

A Binary carries no subject and no security label of its own, so in patient and user context it is
visible only when

- its ``securityContext`` names a resource the principal may see (binary.html#security), or
- a DocumentReference the principal may see points to it: ``content.attachment.url`` (search
  parameter ``location``) equal to ``Binary/{id}`` or its absolute form on this server.

Otherwise it is answered 404, like any resource the principal may not see: the masked document's
content is as invisible as the document.  ``system`` context sees every Binary its scopes allow.
"""

from __future__ import annotations

from typing import Any

from fhir_server.context import ServerContext
from search.params.reference import parse_reference
from search.query import compile_search

from .policy import AccessPolicy, mandatory_params, visible
from .tokens import Principal


def _security_context_visible(ctx: ServerContext, principal: Principal, binary: dict[str, Any]) -> bool:
    ref = (binary.get("securityContext") or {}).get("reference")
    if not isinstance(ref, str):
        return False
    _, rtype, rid = parse_reference(ref, ctx.base_url)
    if not rtype or not rid:
        return False
    stored = ctx.store.read(rtype, rid)
    if stored is None or stored.deleted or stored.content is None:
        return False
    return visible(principal, stored.resource(), "read")


def _referenced_by_visible_document(ctx: ServerContext, principal: Principal, binary_id: str) -> bool:
    mandatory = mandatory_params(principal, "DocumentReference", "read")
    if mandatory is None:
        return False
    urls = f"Binary/{binary_id},{ctx.base_url}/Binary/{binary_id}"
    query = compile_search(ctx.search_parameters, "DocumentReference", [("location", urls), *mandatory],
                           base_url=ctx.base_url, strict=True).query
    query = AccessPolicy(principal).restrict(ctx.search_parameters, ctx.base_url, "DocumentReference", query)
    ctx.indexer.wait_until_indexed()  # a document written just before its content is downloaded
    resp = ctx.search_es.search(index=ctx.indices.alias("DocumentReference"), query=query, size=0,
                         track_total_hits=1, terminate_after=1).body
    return bool(resp["hits"]["total"]["value"])


def binary_visible(ctx: ServerContext, principal: Principal, binary: dict[str, Any], interaction: str) -> bool:
    """Whether the principal may see this Binary (read, vread, history, downloads)."""
    contexts = principal.scopes.contexts_for("Binary", interaction)
    if not contexts:
        return False
    if contexts == {"system"}:
        return True
    return (_security_context_visible(ctx, principal, binary)
            or _referenced_by_visible_document(ctx, principal, str(binary.get("id"))))
