"""``$validate`` on type and instance (resource-operation-validate.html).

The body is the resource itself or a ``Parameters`` with ``resource``, ``profile`` and ``mode``
(create | update | delete | profile). The answer is always 200 with an OperationOutcome listing every issue
(errors included: ``$validate`` reports, it does not reject); a request that cannot be understood is a 400.
The same engine as the write path, with the same server policy (required profiles, unknown profiles).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import Issue, bad_request, not_found, operation_outcome
from profiles import validate as validate_resource

from .result import Result

MODES = ("create", "update", "delete", "profile")


def validatable(type_: str) -> bool:
    """A resource type $validate accepts even if the server does not store it (Bundle, for ITI-65)."""
    from profiles.model import definitions

    return definitions().is_resource(type_)


def _parameters(body: Resource) -> tuple[Resource | None, str | None, str | None]:
    """(resource, profile, mode) from a Parameters body."""
    resource = profile = mode = None
    for i, p in enumerate(body.get("parameter") or ()):
        if not isinstance(p, dict):
            raise bad_request("Each parameter must be an object", f"Parameters.parameter[{i}]")
        name = p.get("name")
        if name == "resource":
            resource = p.get("resource")
            if not isinstance(resource, dict):
                raise bad_request("The 'resource' parameter must carry a resource",
                                  f"Parameters.parameter[{i}].resource")
        elif name == "profile":
            profile = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString")
        elif name == "mode":
            mode = p.get("valueCode") or p.get("valueString")
    return resource, profile, mode


def validate(ctx: ServerContext, type_: str, id_: str | None, body: Resource | None,
             query_profile: str | None = None, query_mode: str | None = None,
             sees: Callable[[Resource], bool] | None = None) -> Result:
    """``sees``: the caller's policy on the stored instance; one it may not see is answered as an unknown id."""
    resource: Resource | None = body

    def stored_instance() -> Resource | None:
        assert id_ is not None
        stored = ctx.store.read(type_, id_)
        if stored is None or stored.deleted or stored.content is None:
            return None
        current = stored.resource()
        return current if sees is None or sees(current) else None

    profile, mode = query_profile, query_mode
    if body is not None and body.get("resourceType") == "Parameters" and type_ != "Parameters":
        resource, p_profile, p_mode = _parameters(body)
        profile, mode = p_profile or profile, p_mode or mode
    mode = mode or ("update" if id_ else "create")
    if mode not in MODES:
        raise bad_request(f"Unknown $validate mode '{mode}' (create | update | delete | profile)", "mode")
    issues: list[Issue] = []
    if mode == "delete":
        if id_ is None:
            raise bad_request("mode=delete needs an instance: POST [type]/[id]/$validate", "mode")
        if stored_instance() is None:
            issues.append(Issue("warning", "not-found", f"{type_}/{id_} does not exist; deleting it would do "
                                                        "nothing"))
        return _outcome(issues)
    if resource is None and id_ is not None:
        resource = stored_instance()
        if resource is None:
            raise not_found(f"{type_}/{id_} is not known")
    if resource is None:
        raise bad_request("$validate needs a resource: in the body, or as the 'resource' parameter")
    if resource.get("resourceType") != type_:
        issues.append(Issue("error", "invalid", f"resourceType '{resource.get('resourceType')}' does not match the "
                                                f"URL type '{type_}'", ("resourceType",)))
    if mode == "update":
        if id_ is not None and resource.get("id") != id_:
            issues.append(Issue("error", "invalid", f"Resource id '{resource.get('id')}' must equal the URL id "
                                                    f"'{id_}'", (f"{type_}.id",)))
        elif resource.get("id") is None:
            issues.append(Issue("error", "required", "An update needs the resource id", (f"{type_}.id",)))
    settings = ctx.settings
    issues.extend(validate_resource(resource, profiles=[profile] if profile else (),
                                    required=settings.validation_required_profiles,
                                    unknown_profile=settings.validation_unknown_profile,
                                    conditional_refs="error"))  # as a plain create or update would answer
    return _outcome(issues)


def _outcome(issues: list[Issue]) -> Result:
    if not issues:
        issues = [Issue("information", "informational", "Validation successful: no issues detected")]
    return Result(200, operation_outcome(issues))


def validate_only_types(served: Collection[str]) -> list[str]:
    """The types ``POST [type]/$validate`` takes that the server does not store (what the CapabilityStatement
    and the OpenAPI description list for them): every resource type with a definition, e.g. an ITI-65 Bundle."""
    from profiles.model import definitions

    d = definitions()
    return sorted(t for t in d.kinds if d.is_resource(t) and t not in served)
