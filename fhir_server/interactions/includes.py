"""``_include`` / ``_revinclude`` (with ``:iterate`` and ``*``) for one page of search results.

Included resources are per page, deduplicated, not counted in ``Bundle.total`` and marked
``search.mode = include``.  Forward includes read the references of the page's resources with
the same extraction as the index (so they agree with what ``_include`` would match); reverse
includes search the source type's index for references to the page.  Nothing is dropped
silently: when a page would include more than :data:`MAX_INCLUDED` resources, the first ones
are returned and a warning ``OperationOutcome`` (``search.mode = outcome``) says so.

Under an :class:`~fhir_server.security.policy.AccessPolicy` the reverse searches are ANDed with the
principal's mandatory parameters for the source type (so hidden sources neither appear nor use up
the limit) and every resource read for inclusion must pass ``allows``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import Issue, bad_request
from fhir_server.security.policy import AccessPolicy
from search.params import reference
from search.params.base import IndexContext
from search.query import CompiledSearch

from .search_exec import policy_query

MAX_INCLUDED = 1000
MAX_ROUNDS = 4  # :iterate depth (each round follows one more hop)

Key = tuple[str, str]


@dataclass(frozen=True)
class IncludeSpec:
    source: str  # resource type holding the reference parameter
    param: str  # reference parameter code
    target: str | None  # optional target type filter
    iterate: bool


@dataclass
class IncludeResult:
    resources: list[Resource] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def _parse(value: str, iterate: bool) -> IncludeSpec:
    if value == "*":
        return IncludeSpec("*", "*", None, iterate)
    parts = value.split(":")
    return IncludeSpec(parts[0], parts[1], parts[2] if len(parts) > 2 else None, iterate)


def specs(ctx: ServerContext, type_: str, compiled: CompiledSearch) -> tuple[list[IncludeSpec], list[IncludeSpec]]:
    """Validated include / revinclude specs; unknown types or non-reference parameters -> 400."""
    served = set(ctx.indices.searchable_types())
    out: tuple[list[IncludeSpec], list[IncludeSpec]] = ([], [])
    kinds = (("_include", compiled.includes, out[0]), ("_revinclude", compiled.revincludes, out[1]))
    for kind, values, bucket in kinds:
        for value in values:
            spec = _parse(value, f"{kind}={value}" in compiled.iterating)
            if spec.source != "*":
                if spec.source not in served:
                    raise bad_request(f"{kind}: {spec.source} is not a resource type this server searches", kind)
                if kind == "_include" and not spec.iterate and spec.source != type_:
                    raise bad_request(f"_include={value} does not start from {type_} (use _include:iterate)", kind)
                if spec.param != "*":
                    param = ctx.search_parameters.get(spec.source, spec.param)
                    if param is None or param.type != "reference":
                        raise bad_request(f"{kind}: {spec.param} is not a reference parameter of {spec.source}", kind)
                    if spec.target and param.target and spec.target not in param.target:
                        raise bad_request(f"{kind}: {spec.target} is not a target of {spec.source}.{spec.param}", kind)
            bucket.append(spec)
    return out


def _ref_params(ctx: ServerContext, source: str, param: str) -> list[str]:
    """The reference parameters a spec follows on ``source``: the one it names, or all of them for ``*``."""
    return [param] if param != "*" else list(ctx.search_parameters.reference_params(source))


def _references(ctx: ServerContext, resource: Resource, codes: list[str]) -> list[str]:
    builder = ctx.indexer.builder
    rtype = resource["resourceType"]
    ictx = IndexContext(rtype, resource.get("id"), ctx.base_url)
    refs: list[str] = []
    for code in codes:
        param = ctx.search_parameters.get(rtype, code)
        if param is None:
            continue
        refs += reference.index(param, builder.values(param, resource), ictx).get("ref", [])
    return refs


def _forward(ctx: ServerContext, spec: IncludeSpec, pool: list[Resource]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = defaultdict(set)
    served = set(ctx.indices.searchable_types())
    for res in pool:
        if spec.source not in ("*", res["resourceType"]):
            continue
        for ref in _references(ctx, res, _ref_params(ctx, res["resourceType"], spec.param)):
            rtype, _, rid = ref.partition("/")
            if rid and "/" not in rid and rtype in served and spec.target in (None, rtype):
                wanted[rtype].add(rid)
    return wanted


def _reverse(ctx: ServerContext, spec: IncludeSpec, pool: list[Resource],
             limit: int, policy: AccessPolicy | None) -> tuple[dict[str, set[str]], bool]:
    """Sources referring to the pool; ``True`` when more than ``limit`` exist."""
    wanted: dict[str, set[str]] = defaultdict(set)
    truncated = False
    by_type: dict[str, list[str]] = defaultdict(list)
    for res in pool:
        by_type[res["resourceType"]].append(f"{res['resourceType']}/{res['id']}")
    sources = ctx.indices.searchable_types() if spec.source == "*" else [spec.source]
    for source in sources:
        known = ctx.search_parameters.for_type(source)
        codes = _ref_params(ctx, source, spec.param)
        clauses = []
        for code in codes:
            param = known.get(code)
            if param is None:
                continue
            refs = [r for t, rs in by_type.items() if not param.target or t in param.target for r in rs]
            if refs:
                clauses.append({"terms": {f"sp.{code}.ref": refs}})
        if not clauses:
            continue
        query = policy_query(ctx, policy, source, {"bool": {"should": clauses, "minimum_should_match": 1}})
        if query is None:  # the principal sees none of this type
            continue
        resp = ctx.search_es.search(index=ctx.indices.alias(source), source=False, size=limit + 1, sort=[{"id": "asc"}],
                                    track_total_hits=False, query=query).body
        hits = resp["hits"]["hits"]
        if len(hits) > limit:
            truncated = True
            hits = hits[:limit]
        wanted[source].update(h["_id"] for h in hits)
    return wanted, truncated


def collect(ctx: ServerContext, type_: str, compiled: CompiledSearch, matches: list[Resource],
            policy: AccessPolicy | None = None) -> IncludeResult:
    """The included resources of one page (``matches`` are the page's resources)."""
    result = IncludeResult()
    if not (compiled.includes or compiled.revincludes):
        return result
    includes, revincludes = specs(ctx, type_, compiled)  # validated even when the page is empty
    if not matches:
        return result
    seen: set[Key] = {(r["resourceType"], r["id"]) for r in matches}
    pool = matches
    truncated = False
    max_included = ctx.settings.max_included  # FHIR_MAX_INCLUDED (default MAX_INCLUDED)
    for round_ in range(MAX_ROUNDS):
        wanted: dict[str, set[str]] = defaultdict(set)
        for spec in includes:
            if round_ == 0 or spec.iterate:
                for t, ids in _forward(ctx, spec, pool).items():
                    wanted[t] |= ids
        for spec in revincludes:
            if round_ == 0 or spec.iterate:
                room = max_included - len(result.resources)
                found, cut = _reverse(ctx, spec, pool, max(room, 0), policy)
                truncated |= cut
                for t, ids in found.items():
                    wanted[t] |= ids
        new: list[Resource] = []
        for t, ids in sorted(wanted.items()):
            fresh = sorted(i for i in ids if (t, i) not in seen)
            for stored in ctx.store.read_many(t, fresh).values() if fresh else []:
                if stored.deleted or stored.content is None:
                    continue
                resource = stored.resource()
                if policy is not None and not policy.allows(resource):
                    continue  # hidden: never included, never followed by :iterate
                if len(result.resources) + len(new) >= max_included:
                    truncated = True
                    break
                seen.add((t, stored.id))
                new.append(resource)
        result.resources += new
        pool = new
        if not new or truncated or not any(s.iterate for s in (*includes, *revincludes)):
            break
    if truncated:
        result.issues.append(Issue("warning", "too-costly",
                                   f"more than {max_included} resources to include on this page: only the first "
                                   f"{max_included} are included; use a smaller _count", ("_include",)))
    return result
