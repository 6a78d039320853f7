"""Who may see which resource: the patient compartment and the French visibility codes.

The policy is expressed twice, from one table, so the two can be tested against each other:

- :func:`mandatory_params` gives FHIR search parameters ANDed to every search, chain, ``_has`` and
  include the principal runs, so Elasticsearch never returns what they may not see (and no count, page
  or link can leak it);
- :func:`visible` decides for one resource already read from the store (read, vread, history,
  transaction entries, Binary downloads).

Rules:

- **Patient context** (a ``patient/`` scope with a ``patient`` claim) sees only its own compartment
  (R4 Patient CompartmentDefinition, one parameter per type: see ``PATIENT_COMPARTMENT``).
- **Masking** (PDSm4DMP, TRE_A07 StatutVisibiliteDocument): a DocumentReference labelled ``MASQUE_PS``
  is hidden from professionals (``user/`` context) and visible to the patient; ``INVISIBLE_PATIENT`` is
  hidden from the patient (and legal representatives) and visible to professionals.
- ``system/`` context (backend services) sees everything its scopes allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tokens import Principal

TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
# PDSm examples misspell the system; both spellings carry the same meaning (french-profiles.md)
TRE_A07_ALIASES = (TRE_A07, TRE_A07.replace("StatutVisibilite", "StatusVisibilite"))
MASKED_FOR_PROFESSIONALS = "MASQUE_PS"
INVISIBLE_TO_PATIENT = "INVISIBLE_PATIENT"

# R4 CompartmentDefinition "patient", reduced to one parameter per type, used identically by the search
# filter and the per-resource check: (search parameter, element holding the patient reference).
# DocumentReference.author and List.source also place a resource in the compartment; leaving them out
# only ever narrows what a patient sees.
PATIENT_COMPARTMENT: dict[str, tuple[str, str]] = {
    "Patient": ("_id", "id"),
    "DocumentReference": ("subject", "subject"),
    "Immunization": ("patient", "patient"),
    "List": ("subject", "subject"),
    "AuditEvent": ("patient", "entity.what"),
    "Consent": ("patient", "patient"),
}


def _labels(resource: dict[str, Any]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for coding in resource.get("securityLabel", []) or []:
        for c in coding.get("coding", []) if isinstance(coding, dict) else []:
            if isinstance(c, dict) and c.get("system") in TRE_A07_ALIASES and isinstance(c.get("code"), str):
                out.add((TRE_A07, c["code"]))
    return out


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        ref = value.get("reference")
        return [ref] if isinstance(ref, str) else []
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def in_patient_compartment(resource: dict[str, Any], patient_id: str) -> bool:
    entry = PATIENT_COMPARTMENT.get(str(resource.get("resourceType")))
    if entry is None:
        return False
    _, path = entry
    if path == "id":
        return resource.get("id") == patient_id
    values: list[Any] = [resource]
    for step in path.split("."):
        nxt: list[Any] = []
        for v in values:
            item = v.get(step) if isinstance(v, dict) else None
            nxt += item if isinstance(item, list) else [item] if item is not None else []
        values = nxt
    target = f"Patient/{patient_id}"
    return any(r == target or r.endswith("/" + target) for r in _references(values))


def _context(principal: Principal, resource_type: str, interaction: str) -> str | None:
    """The context the principal acts in for this request: the least privileged that grants it."""
    contexts = principal.scopes.contexts_for(resource_type, interaction)
    for ctx in ("patient", "user", "system"):  # the narrowest first: never widen by accident
        if ctx in contexts:
            return ctx
    return None


def mandatory_params(principal: Principal, resource_type: str, interaction: str = "search-type") -> list[
        tuple[str, str]] | None:
    """Search parameters ANDed to the principal's searches on ``resource_type``; None = no access at all."""
    ctx = _context(principal, resource_type, interaction)
    if ctx is None:
        return None
    params: list[tuple[str, str]] = []
    if ctx == "patient":
        if principal.patient is None:
            return None  # a patient scope without a patient claim grants nothing
        compartment = PATIENT_COMPARTMENT.get(resource_type)
        if compartment is None:
            return None  # not in the patient compartment: never visible in patient context
        param = compartment[0]
        params.append((param, principal.patient if param == "_id" else f"Patient/{principal.patient}"))
    if resource_type == "DocumentReference" and ctx in ("patient", "user"):
        hidden = INVISIBLE_TO_PATIENT if ctx == "patient" else MASKED_FOR_PROFESSIONALS
        params.append(("security-label:not", f"{TRE_A07}|{hidden}"))
    return params


def visible(principal: Principal, resource: dict[str, Any], interaction: str = "read") -> bool:
    """Whether the principal may see this resource (the same rules as :func:`mandatory_params`)."""
    type_ = str(resource.get("resourceType"))
    ctx = _context(principal, type_, interaction)
    if ctx is None:
        return False
    if ctx == "patient" and (principal.patient is None or type_ not in PATIENT_COMPARTMENT
                             or not in_patient_compartment(resource, principal.patient)):
        return False
    if type_ == "DocumentReference" and ctx in ("patient", "user"):
        hidden = INVISIBLE_TO_PATIENT if ctx == "patient" else MASKED_FOR_PROFESSIONALS
        if (TRE_A07, hidden) in _labels(resource):
            return False
    return True


@dataclass(frozen=True)
class AccessPolicy:
    """The principal's policy as the search executor applies it to every query it runs.

    Inner chain, ``_has`` and ``_revinclude`` queries AND :meth:`params`; resources the executor reads
    by id (forward includes, ``_list``) pass :meth:`allows`.  One object threaded through the
    executor keeps it one code path: nothing the executor searches or reads escapes the policy.
    """

    principal: Principal

    def params(self, resource_type: str) -> list[tuple[str, str]] | None:
        """Parameters to AND to a search of ``resource_type``; None = the principal sees none of it."""
        return mandatory_params(self.principal, resource_type)

    def allows(self, resource: dict[str, Any]) -> bool:
        return visible(self.principal, resource, "search-type")
