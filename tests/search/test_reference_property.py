"""Property: Elasticsearch results == the reference matcher's, over generated Patients and queries.

Documents go through the real extraction and mapping into the session's Elasticsearch node;
queries through the real compiler.  Each example uses its own id prefix inside one index.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.extract import IndexDocumentBuilder
from search.mapping import index_mapping, index_settings
from search.query import compile_search
from search.registry import SearchParameterRegistry
from tests.search.conftest import BASE
from tests.search.reference_matcher import ACT_REASON, GENDER, GENDER_VS, matches

LETTERS = ["a", "b", "é", "E", "è", "o", "ö", " ", "-"]
word = st.text(alphabet=LETTERS, min_size=1, max_size=5).filter(lambda s: s.strip() != "")
systems = st.sampled_from(["urn:s1", "urn:s2", None])
id_values = st.sampled_from(["AB1", "ab1", "Ab1", "x9", "X9"])
emails_ = ["jo@x.org", "Jo@X.org", "ann@y.fr"]
ACT_REASON_CODES = ["PurposeOfUse", "TREAT", "ETREAT", "POPHLTH", "HRESCH", "CLINTRCH", "HMARKT"]
genders = st.sampled_from(["male", "female", "other", "unknown", None])
dates = st.one_of(
    st.integers(1999, 2001).map(str),
    st.tuples(st.integers(1999, 2001), st.integers(1, 12)).map(lambda t: f"{t[0]}-{t[1]:02d}"),
    st.dates(min_value=__import__("datetime").date(1999, 1, 1), max_value=__import__("datetime").date(2001, 12, 31))
    .map(lambda d: d.isoformat()),
)


#: instants within one millisecond (and the same instant written with an offset): ES dates keep milliseconds
INSTANTS = ["2024-01-01T00:00:00.123456Z", "2024-01-01T00:00:00.123457Z", "2024-01-01T01:00:00.123456+01:00",
            "2024-01-01T00:00:00.123Z", "2024-01-01T00:00:00Z", "2023-12-31T23:59:59.999999Z"]
#: dateTimes around midnight UTC with offsets, and dates
DATE_TIMES = ["2000-01-01T23:30:00-02:00", "2000-01-02T01:30:00Z", "2000-01-01T00:00:00+01:00", "2000-01-01",
              "2000-01", "1999-12-31T23:00:00Z", "2000-01-02"]


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient"}
    names = draw(st.lists(st.fixed_dictionaries({"family": word, "given": st.lists(word, max_size=2)}), max_size=2))
    if names:
        res["name"] = [{k: v for k, v in n.items() if v} for n in names]
    if (g := draw(genders)) is not None:
        res["gender"] = g
    idents = draw(st.lists(st.tuples(systems, id_values), max_size=2))
    if idents:
        res["identifier"] = [{"value": v, **({"system": s} if s else {})} for s, v in idents]
    if draw(st.booleans()):
        res["birthDate"] = draw(dates)
    if (org := draw(st.sampled_from(["1", "2", None]))) is not None:
        res["managingOrganization"] = {"reference": f"Organization/{org}"}
        if draw(st.booleans()):
            res["managingOrganization"]["display"] = draw(word)
    emails = draw(st.lists(st.sampled_from(emails_), max_size=2))
    if emails:
        res["telecom"] = [{"system": "email", "value": e} for e in emails]
    security = draw(st.lists(st.sampled_from(ACT_REASON_CODES), max_size=2))
    res["meta"] = {"lastUpdated": draw(st.sampled_from(INSTANTS))}
    if security:
        res["meta"]["security"] = [{"system": ACT_REASON, "code": c} for c in security]
    if draw(st.booleans()):
        res["deceasedDateTime"] = draw(st.sampled_from(DATE_TIMES))
    return res


def _token_query(draw: st.DrawFn) -> str:
    form = draw(st.sampled_from(["code", "sys|code", "|code", "sys|"]))
    s, v = draw(st.sampled_from(["urn:s1", "urn:s2"])), draw(id_values)
    return {"code": v, "sys|code": f"{s}|{v}", "|code": f"|{v}", "sys|": f"{s}|"}[form]


ALL_KINDS = ("string", "gender", "identifier", "date", "missing", "reference", "terminology", "email", "security")
#: the modifiers added with terminology (:in, :below, :above), e-mail case and :text, drawn more often
NEW_KINDS = ("terminology", "email", "security", "security", "string", "reference", "date")


@st.composite
def criteria(draw: st.DrawFn, kinds: tuple[str, ...] = ALL_KINDS) -> tuple[str, str]:
    kind = draw(st.sampled_from(kinds))
    if kind == "terminology":
        modifier = draw(st.sampled_from([":in", ":not-in"]))
        return "gender" + modifier, GENDER_VS
    if kind == "email":
        return "email" + draw(st.sampled_from(["", ":not"])), draw(st.sampled_from([*emails_, "email|JO@x.org"]))
    if kind == "security":
        modifier = draw(st.sampled_from(["", ":not", ":below", ":above"]))
        code = draw(st.sampled_from([*ACT_REASON_CODES, ""] if modifier == ":below" else ACT_REASON_CODES))
        return "_security" + modifier, f"{ACT_REASON}|{code}"
    if kind == "reference":
        modifier = draw(st.sampled_from(["", ":Organization", ":text"]))
        if modifier == ":text":
            return "organization:text", draw(word.filter(lambda w: any(c.isalpha() for c in w)))
        value = draw(st.sampled_from(["1", "2", "Organization/1", "Organization/2"] if not modifier else ["1", "2"]))
        return "organization" + modifier, value
    if kind == "string":
        code = draw(st.sampled_from(["family", "given"]))
        modifier = draw(st.sampled_from(["", ":exact", ":contains", ":text"]))
        values = draw(st.lists(word, min_size=1, max_size=2))
        if modifier == ":text":  # :text needs a letter to search for
            values = [v for v in values if any(c.isalpha() for c in v)] or ["a"]
        return code + modifier, ",".join(values)
    if kind == "gender":
        modifier = draw(st.sampled_from(["", ":not"]))
        value = draw(st.sampled_from(["male", "FEMALE", "Other", "unknown", f"{GENDER}|female", f"{GENDER}|",
                                      "|male"]))
        return "gender" + modifier, value
    if kind == "identifier":
        return "identifier" + draw(st.sampled_from(["", ":not"])), _token_query(draw)
    if kind == "date":
        prefix = draw(st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]))
        code, values = draw(st.sampled_from([("birthdate", dates), ("death-date", st.sampled_from(DATE_TIMES)),
                                             ("_lastUpdated", st.sampled_from([*INSTANTS, "2024-01-01", "2024"]))]))
        return code, prefix + draw(values)
    code = draw(st.sampled_from(["family", "given", "gender", "identifier", "birthdate", "organization", "email",
                                 "_security", "death-date"]))
    return f"{code}:missing", draw(st.sampled_from(["true", "false"]))


@pytest.fixture(scope="module")
def es_index(es_url: str, registry: SearchParameterRegistry) -> Iterator[tuple[Any, str]]:
    from elasticsearch import Elasticsearch

    es = Elasticsearch(es_url)
    name = f"search-prop-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=name, mappings=index_mapping(registry, "Patient"), settings=index_settings(1, 0))
    yield es, name
    es.indices.delete(index=name)
    es.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resources=st.lists(patients(), min_size=1, max_size=8), query=st.lists(criteria(), min_size=1, max_size=3))
def test_es_agrees_with_reference_matcher(
    es_index: tuple[Any, str], registry: SearchParameterRegistry, builder: IndexDocumentBuilder,
    resources: list[dict[str, Any]], query: list[tuple[str, str]],
) -> None:
    _compare(es_index, registry, builder, resources, query)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resources=st.lists(patients(), min_size=2, max_size=8),
       query=st.lists(criteria(NEW_KINDS), min_size=1, max_size=2))
def test_es_agrees_on_terminology_and_text_modifiers(
    es_index: tuple[Any, str], registry: SearchParameterRegistry, builder: IndexDocumentBuilder,
    resources: list[dict[str, Any]], query: list[tuple[str, str]],
) -> None:
    _compare(es_index, registry, builder, resources, query)


def _compare(es_index: tuple[Any, str], registry: SearchParameterRegistry, builder: IndexDocumentBuilder,
             resources: list[dict[str, Any]], query: list[tuple[str, str]]) -> None:
    es, index = es_index
    batch = uuid.uuid4().hex[:8]
    ops: list[dict[str, Any]] = []
    for i, res in enumerate(resources):
        res = {**res, "id": f"{batch}-{i}", "meta": {**res.get("meta", {}), "versionId": "1"}}
        resources[i] = res
        ops += [{"index": {"_index": index, "_id": res["id"]}}, builder.build(res)]
    es.bulk(operations=ops, refresh=True)
    compiled = compile_search(registry, "Patient", query, base_url=BASE)
    scoped = {"bool": {"filter": [compiled.query, {"prefix": {"id": f"{batch}-"}}]}}
    got = {h["_id"] for h in es.search(index=index, query=scoped, size=100, source=False)["hits"]["hits"]}
    expected = {r["id"] for r in resources if matches(r, query)}
    assert got == expected, (query, resources)
