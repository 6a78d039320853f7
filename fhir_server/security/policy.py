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
- **Consent** (``consent.py``): in ``user/`` context, the compartments of the patients whose active deny
  Consent names the user or their organisation are hidden, their Patient resource included. Searches AND
  the negation of :meth:`AccessPolicy.excluded` (an Elasticsearch clause, never a parameter: the self and
  paging links must not list who opposed the user).
- Consent is written only by the patient themself (patient context, own compartment) or a ``system/``
  token: a professional cannot lift an opposition.
- ``system/`` context (backend services) sees everything its scopes allow.
- **Audit trail** (``AuditEvent``): who reads which record, and what of it, is :func:`audit_view` alone
  (the SQL restriction and the rendering both come from it): ``system/`` all; ``user/`` only with a scope
  naming ``AuditEvent`` (``user/*.rs`` does not grant the trail), and then only the records of the
  professional's own requests; ``patient/`` (a wildcard grants it) the accesses to their own record,
  redacted of what others did beyond who and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_common.types import EsQuery, Resource, SearchParams

from .scopes import INTERACTION_PERMISSION
from .tokens import Principal

if TYPE_CHECKING:
    from search.registry import SearchParameterRegistry

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


def escape(value: str) -> str:
    """``value`` as one search value (FHIR search escaping): an id from a token or a Consent never becomes
    a list (``,``), a system (``|``) or a composite (``$``). The token's ``patient`` claim is already a FHIR
    id (tokens.py); this keeps the policy safe whatever reaches it."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def _labels(resource: Resource) -> set[tuple[str, str]]:
    """The TRE_A07 labels of a document, codes lower-cased: the search index matches a TRE_A07 code in any case
    (``search.params.token``: only a few systems are case-sensitive), so the read path must too, or a document
    labelled ``masque_ps`` would be hidden from searches and served by a read."""
    out: set[tuple[str, str]] = set()
    for coding in resource.get("securityLabel", []) or []:
        for c in coding.get("coding", []) if isinstance(coding, dict) else []:
            if isinstance(c, dict) and c.get("system") in TRE_A07_ALIASES and isinstance(c.get("code"), str):
                out.add((TRE_A07, c["code"].lower()))
    return out


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        ref = value.get("reference")
        return [ref] if isinstance(ref, str) else []
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _compartment_references(resource: Resource, path: str) -> list[str]:
    """The literal references at ``path`` (dot-separated elements, lists flattened) of ``resource``."""
    values: list[Any] = [resource]
    for step in path.split("."):
        nxt: list[Any] = []
        for v in values:
            item = v.get(step) if isinstance(v, dict) else None
            nxt += item if isinstance(item, list) else [item] if item is not None else []
        values = nxt
    return _references(values)


def compartment_patients(resource: Resource, base_url: str | None = None) -> set[str]:
    """Ids of the patients whose compartment holds ``resource``, read once from its compartment element.

    A reference names patient ``x`` when it is ``Patient/x`` or ends in ``/Patient/x``, with or without a
    ``/_history/n`` (the search index drops it too: a versioned subject is that patient's record). One walk
    of the resource however many patients it is tested against: the Consent check asks "is it in any
    opposing patient's compartment?" on every resource a user sees.

    ``base_url``: this server's; an absolute reference counts only under it, as the search index reads it
    (``http://elsewhere/fhir/Patient/x`` is another server's patient, not ours)."""
    entry = PATIENT_COMPARTMENT.get(str(resource.get("resourceType")))
    if entry is None:
        return set()
    _, path = entry
    if path == "id":
        rid = resource.get("id")
        return {rid} if isinstance(rid, str) else set()
    out = set()
    local = None if base_url is None else base_url.rstrip("/") + "/"
    for ref in _compartment_references(resource, path):
        if local is not None and "://" in ref:
            if not ref.startswith(local):
                continue  # another server's resource
            ref = ref[len(local):]
        head, _, pid = ref.partition("/_history/")[0].rpartition("/")
        if pid and (head == "Patient" or head.endswith("/Patient")):
            out.add(pid)
    return out


def in_patient_compartment(resource: Resource, patient_id: str, base_url: str | None = None) -> bool:
    return patient_id in compartment_patients(resource, base_url)


def _in_compartment_of_any(resource: Resource, patients: frozenset[str], base_url: str | None = None) -> bool:
    """Whether ``resource`` is in the compartment of one of ``patients`` (ids; the request's oppositions)."""
    return bool(patients) and not patients.isdisjoint(compartment_patients(resource, base_url))


class ConsentNotResolved(RuntimeError):
    """A user-context decision was asked before the request looked up the user's oppositions: a bug, never
    answered by guessing (which could leak an opposed patient's record)."""


def opposed(principal: Principal) -> frozenset[str]:
    if principal.opposed_by is None:
        raise ConsentNotResolved("the Consent look-up did not run for this request (authz.prepare, authz.run)")
    return principal.opposed_by


WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete"})


def may_write(principal: Principal, resource_type: str, interaction: str) -> bool:
    """Consent is written by the patient (patient context) or a backend, never by a professional."""
    if resource_type != "Consent" or interaction not in WRITE_INTERACTIONS:
        return True
    return _context(principal, resource_type, interaction) in ("patient", "system")


def _context(principal: Principal, resource_type: str, interaction: str) -> str | None:
    """The context the principal acts in for this request: the least privileged that grants it."""
    contexts = principal.scopes.contexts_for(resource_type, interaction)
    for ctx in ("patient", "user", "system"):  # the narrowest first: never widen by accident
        if ctx in contexts:
            return ctx
    return None


def mandatory_params(principal: Principal, resource_type: str,
                     interaction: str = "search-type") -> SearchParams | None:
    """Search parameters ANDed to the principal's searches on ``resource_type``; None = no access at all.

    AuditEvent: none, the audit search applies :func:`audit_view` itself (an agent restriction is the token's
    ``fhirUser`` as written, which need not be a search parameter value of this server)."""
    if resource_type == AUDIT_EVENT:
        return None if audit_view(principal, interaction) is None else []
    ctx = _context(principal, resource_type, interaction)
    if ctx is None:
        return None
    params: SearchParams = []
    if ctx == "patient":
        if principal.patient is None:
            return None  # a patient scope without a patient claim grants nothing
        compartment = PATIENT_COMPARTMENT.get(resource_type)
        if compartment is None:
            return None  # not in the patient compartment: never visible in patient context
        param = compartment[0]
        patient = escape(principal.patient)
        params.append((param, patient if param == "_id" else f"Patient/{patient}"))
    if resource_type == "DocumentReference" and ctx in ("patient", "user"):
        hidden = INVISIBLE_TO_PATIENT if ctx == "patient" else MASKED_FOR_PROFESSIONALS
        # every spelling of the system :func:`visible` honours (each a :not of its own, ANDed), or a document
        # labelled in the other spelling is hidden from a read and served by a search
        params += [("security-label:not", f"{system}|{hidden}") for system in TRE_A07_ALIASES]
    return params


def visible(principal: Principal, resource: Resource, interaction: str = "read") -> bool:
    """Whether the principal may see this resource (the same rules as :func:`mandatory_params`)."""
    type_ = str(resource.get("resourceType"))
    if type_ == AUDIT_EVENT:
        view = audit_view(principal, interaction)
        return view is not None and view.shows(resource)
    ctx = _context(principal, type_, interaction)
    if ctx is None:
        return False
    if ctx == "patient" and (principal.patient is None or type_ not in PATIENT_COMPARTMENT
                             or not in_patient_compartment(resource, principal.patient, principal.base_url)):
        return False
    if type_ == "DocumentReference" and ctx in ("patient", "user"):
        hidden = INVISIBLE_TO_PATIENT if ctx == "patient" else MASKED_FOR_PROFESSIONALS
        if (TRE_A07, hidden.lower()) in _labels(resource):
            return False
    # Consent: a user opposed by the patient sees nothing of their compartment
    return not (ctx == "user" and _in_compartment_of_any(resource, opposed(principal), principal.base_url))


AUDIT_EVENT = "AuditEvent"
# what of an AuditEvent a patient is shown (everything else, e.g. a future element, is left out)
_PATIENT_EVENT_KEYS = ("resourceType", "id", "meta", "type", "subtype", "action", "recorded", "outcome",
                       "outcomeDesc", "agent", "source", "entity")
WITHHELD = {"display": "not disclosed"}


def _patient_of(ref: Any) -> str | None:
    """The patient id a reference names (``Patient/x`` or ``.../Patient/x``), else None."""
    if not isinstance(ref, str):
        return None
    head, _, pid = ref.partition("/_history/")[0].rpartition("/")
    return pid if pid and (head == "Patient" or head.endswith("/Patient")) else None


def _what(entity: Any) -> str | None:
    what = entity.get("what") if isinstance(entity, dict) else None
    ref = what.get("reference") if isinstance(what, dict) else None
    return ref if isinstance(ref, str) else None


@dataclass(frozen=True)
class AuditView:
    """Which audit records one principal reads, and what of each (:func:`audit_view`).

    ``agent`` / ``patient``: the SQL keeps only the records whose ``agent.who`` is that reference (a
    professional's own requests) or whose ``entity.what`` names ``Patient/<patient>`` (the accesses to a
    patient's record). :meth:`excluded_patients` and :meth:`hidden_documents` name what the SQL drops besides;
    :meth:`redact` is what the caller is shown of a record the SQL kept; :meth:`shows` the check of one
    rendered record (read, defence in depth) that agrees with both."""

    context: str  # "system" | "user" | "patient"
    principal: Principal
    agent: str | None = None
    patient: str | None = None

    def excluded_patients(self) -> frozenset[str]:
        """Patients whose records a professional never reads, even of their own requests: those who opposed
        them (Consent; the audit trail is in the patient's compartment). Asked once the look-up ran."""
        return opposed(self.principal) if self.context == "user" else frozenset()

    def hidden_documents(self) -> SearchParams | None:
        """DocumentReference search parameters designating the documents whose records the SQL drops: the
        patient's own ``INVISIBLE_PATIENT`` ones. The record is dropped, not shown without its entity: that a
        professional read something of theirs they may not know of would already be a hint. Known gap: the
        index holds current documents only, so once such a document is deleted its earlier records show again
        (its id, never its content)."""
        if self.context != "patient":
            return None
        labels = ",".join(f"{system}|{INVISIBLE_TO_PATIENT}" for system in TRE_A07_ALIASES)
        return [("subject", f"Patient/{self.patient}"), ("security-label", labels)]

    def redact(self, event: Resource) -> Resource:
        """What the caller is shown of a record the SQL let through."""
        if self.context == "patient":
            return self._for_patient(event)
        if self.context == "user" and event.get("outcome") != "0":
            # a refused or failed request's patients were looked up by the server (whose document was probed):
            # the professional is shown what they sent, not what it would have revealed
            entities = [e for e in event.get("entity") or [] if _patient_of(_what(e)) is None]
            out = {k: v for k, v in event.items() if k != "entity"}
            return {**out, "entity": entities} if entities else out
        return event

    def shows(self, event: Resource) -> bool:
        """Whether a rendered (redacted) record is one :func:`audit_view` lets the caller read."""
        if self.context == "patient":
            return self.patient is not None and self.patient in compartment_patients(event)
        if self.context == "user":
            agents = [a.get("who") for a in event.get("agent") or [] if isinstance(a, dict)]
            return any(isinstance(w, dict) and w.get("reference") == self.agent for w in agents) and \
                not _in_compartment_of_any(event, self.excluded_patients())
        return True

    def _for_patient(self, event: Resource) -> Resource:
        """Who (a professional's reference; no address, identifier or application), when, what of their own
        record; never another patient's id, a query (a professional's search may name other patients) or a
        Bundle entry's URL (``outcomeDesc`` is cut to the HTTP status)."""
        out = {k: event[k] for k in _PATIENT_EVENT_KEYS if k in event}
        if isinstance(out.get("outcomeDesc"), str):
            out["outcomeDesc"] = " ".join(out["outcomeDesc"].split()[:2])
        out["agent"] = [self._agent_for_patient(a) for a in event.get("agent") or [] if isinstance(a, dict)]
        entities = [{k: e[k] for k in ("what", "type", "role") if k in e} for e in event.get("entity") or []
                    if self._patient_sees(_what(e))]
        out.pop("entity", None)
        if entities:
            out["entity"] = entities
        return out

    def _patient_sees(self, ref: str | None) -> bool:
        """Their own Patient, or a resource of a compartment type (theirs: the record is in their compartment
        and the SQL dropped those of the documents hidden from them); no query, no other patient."""
        if ref is None:
            return False
        pid = _patient_of(ref)
        if pid is not None:
            return pid == self.patient
        type_, _, id_ = ref.partition("/")
        return type_ in PATIENT_COMPARTMENT and bool(id_) and "/" not in id_

    def _agent_for_patient(self, agent: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {k: agent[k] for k in ("type", "requestor") if k in agent}
        who = agent.get("who")
        who = who if isinstance(who, dict) else {}
        ref, display = who.get("reference"), who.get("display")
        if isinstance(ref, str) and _patient_of(ref) is None:
            out["who"] = {"reference": ref}  # the professional
        elif _patient_of(ref) == self.patient or _patient_of(display) == self.patient or display == "anonymous":
            out["who"] = {"display": str(display or ref)}
        else:
            out["who"] = WITHHELD  # another patient, or a backend: not theirs to know
        return out


def audit_view(principal: Principal, interaction: str = "search-type") -> AuditView | None:
    """The principal's view of the audit trail for ``interaction``; None: no record at all (403).

    The narrowest context that grants it decides, as for every type. A ``user/`` grant counts only when it
    names ``AuditEvent``: the trail says who looked at which patient, which ``user/*.rs`` (a professional's
    everyday scope) must not open; even then a professional reads only the records whose agent is their
    ``fhirUser`` (their own requests), so a token without one (or naming a Patient) reads nothing."""
    permission = INTERACTION_PERMISSION.get(interaction)
    contexts = {g.context for g in principal.scopes.grants if permission is not None
                and g.allows(AUDIT_EVENT, permission) and (g.context != "user" or g.resource_type == AUDIT_EVENT)}
    if "patient" in contexts:
        return AuditView("patient", principal, patient=principal.patient) if principal.patient else None
    if "user" in contexts:
        user = principal.fhir_user
        if not user or _patient_of(user) is not None:
            return None
        return AuditView("user", principal, agent=user)
    return AuditView("system", principal) if "system" in contexts else None


@dataclass(frozen=True)
class AccessPolicy:
    """The principal's policy as the search executor applies it to every query it runs.

    Inner chain, ``_has`` and ``_revinclude`` queries AND :meth:`params`; resources the executor reads
    by id (forward includes, ``_list``) pass :meth:`allows`.  One object threaded through the
    executor keeps it one code path: nothing the executor searches or reads escapes the policy.
    """

    principal: Principal

    def params(self, resource_type: str) -> SearchParams | None:
        """Parameters to AND to a search of ``resource_type``; None = the principal sees none of it."""
        return mandatory_params(self.principal, resource_type)

    def allows(self, resource: Resource) -> bool:
        return visible(self.principal, resource, "search-type")

    def excluded(self, resource_type: str) -> SearchParams:
        """Parameters designating what :meth:`params` cannot exclude: the compartments of the patients who
        opposed a user (Consent). The caller negates them (empty: nothing to exclude)."""
        if _context(self.principal, resource_type, "search-type") != "user":
            return []
        patients = sorted(opposed(self.principal))
        compartment = PATIENT_COMPARTMENT.get(resource_type)
        if not patients or compartment is None:
            return []
        param = compartment[0]
        return [(param, ",".join(escape(p) if param == "_id" else f"Patient/{escape(p)}" for p in patients))]

    def restrict(self, registry: SearchParameterRegistry, base_url: str, resource_type: str,
                 query: EsQuery) -> EsQuery:
        """``query`` ANDed with the negation of :meth:`excluded`."""
        exclusion = self.exclusion_clause(registry, base_url, resource_type)
        return query if exclusion is None else {"bool": {"filter": [query], "must_not": [exclusion]}}

    def exclusion_clause(self, registry: SearchParameterRegistry, base_url: str,
                         resource_type: str) -> EsQuery | None:
        """The Elasticsearch clause matching :meth:`excluded` (None: nothing excluded)."""
        from search.query import compile_search  # policy stays importable without the search stack

        excluded = self.excluded(resource_type)
        if not excluded:
            return None
        return compile_search(registry, resource_type, excluded, base_url=base_url, strict=True).query
