"""Authorisation checks the HTTP adapters apply, from the principal set by the authentication middleware.

With authentication off there is no principal and every check passes. Searches (chains, ``_has``,
``_list``, ``_include``/``_revinclude`` included) are filtered by :class:`.policy.AccessPolicy`. Paths
whose results cannot yet be filtered by the access policy (type and system history, Bundles) are refused (403)
to patient- and user-context tokens rather than served unfiltered: a missing feature must never become
a leak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from fhir_server.errors import FHIRError, not_found
from fhir_server.interactions.result import Result

from .binary_access import binary_visible
from .policy import AccessPolicy, mandatory_params, visible
from .tokens import Principal

if TYPE_CHECKING:
    from fhir_server.context import ServerContext


def principal_of(request: Request) -> Principal | None:
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def _forbidden(msg: str) -> FHIRError:
    return FHIRError(403, "forbidden", msg)


def require(principal: Principal | None, resource_type: str, interaction: str) -> None:
    """403 unless a scope grants ``interaction`` on ``resource_type``."""
    if principal is not None and not principal.scopes.allows(resource_type, interaction):
        raise _forbidden(f"The token's scopes do not grant {interaction} on {resource_type}")


def is_system(principal: Principal | None, resource_type: str, interaction: str) -> bool:
    return principal is None or principal.scopes.contexts_for(resource_type, interaction) == {"system"}


def require_system(principal: Principal | None, resource_type: str, interaction: str) -> None:
    """Interactions only backend (``system/``) tokens may use until the policy can filter them."""
    require(principal, resource_type, interaction)
    if not is_system(principal, resource_type, interaction):
        raise _forbidden(f"{interaction} on {resource_type} is only available to system-context tokens")


def check_visible(principal: Principal | None, resource_type: str, resource: dict[str, Any] | bytes | None,
                  interaction: str = "read") -> None:
    """404 (not 403: existence is not revealed) when the principal may not see ``resource``."""
    if principal is None or resource is None:
        return
    data = orjson.loads(resource) if isinstance(resource, bytes) else resource
    if not visible(principal, data, interaction):
        raise not_found(f"{resource_type}/{data.get('id')} is not known")


async def check_visible_in(ctx: ServerContext, principal: Principal | None, resource_type: str,
                           resource: dict[str, Any] | bytes | None, interaction: str = "read") -> None:
    """:func:`check_visible`, where a Binary follows its DocumentReference (a look-up: off the event loop)."""
    if principal is None or resource is None:
        return
    if resource_type != "Binary":
        check_visible(principal, resource_type, resource, interaction)
        return
    data = orjson.loads(resource) if isinstance(resource, bytes) else resource
    if not await run_in_threadpool(binary_visible, ctx, principal, data, interaction):
        raise not_found(f"Binary/{data.get('id')} is not known")


def search_params(principal: Principal | None, resource_type: str,
                  params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's parameters ANDed with the policy's mandatory ones."""
    if principal is None:
        return params
    mandatory = mandatory_params(principal, resource_type)
    if mandatory is None:
        raise _forbidden(f"The token's scopes do not grant search on {resource_type}")
    return params + mandatory


def write_guard(principal: Principal | None, interaction: str) -> Callable[[dict[str, Any]], bool] | None:
    """The check a conditional write applies to the stored resources it matches (None: unrestricted)."""
    if principal is None:
        return None
    return lambda resource: visible(principal, resource, interaction)


def search_policy(principal: Principal | None) -> AccessPolicy | None:
    """What the search executor ANDs to its inner queries and includes (None: no authentication)."""
    return None if principal is None else AccessPolicy(principal)


def check_writable(principal: Principal | None, resource_type: str, resource: dict[str, Any],
                   interaction: str) -> None:
    """403 when the principal could not see what it is writing (e.g. a patient writing another's data)."""
    if principal is not None and not visible(principal, resource, interaction):
        raise _forbidden(f"This {resource_type} is outside what the token may {interaction}")


async def filter_history_in(ctx: ServerContext, principal: Principal | None, resource_type: str,
                            result: Result) -> Result:
    """:func:`filter_history`, where each Binary version follows its DocumentReference (or securityContext).

    The current version is not enough: a deleted Binary's earlier versions still hold the content.
    """
    if principal is None or result.body is None or resource_type != "Binary":
        return filter_history(principal, result)
    entries = result.body.get("entry", [])
    versions = [e for e in entries if "resource" in e and await run_in_threadpool(
        binary_visible, ctx, principal, e["resource"], "history-instance")]
    if not versions:  # not even its deletions: the id itself is not revealed
        raise not_found("This Binary is not known")
    kept = [e for e in entries if "resource" not in e or any(e is v for v in versions)]
    result.body.pop("total", None)
    result.body["entry"] = kept
    return result


def filter_history(principal: Principal | None, result: Result) -> Result:
    """Drop history entries whose version the principal may not see (e.g. a version masked at the time)."""
    if principal is None or result.body is None:
        return result
    entries = result.body.get("entry", [])
    kept = [e for e in entries if "resource" not in e or visible(principal, e["resource"], "history-instance")]
    if len(kept) != len(entries):
        result.body.pop("total", None)  # a total would count what was withheld
    result.body["entry"] = kept
    return result
