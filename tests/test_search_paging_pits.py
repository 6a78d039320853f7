"""Paging holds a bounded number of Elasticsearch points-in-time, and every page link keeps working.

The flood of issue 11 (``GET /Patient?_count=1`` in a loop: one PIT per first page, 122,377 open) is replayed
against a server with small caps. The open PITs are counted twice: by the server's own pool (deterministic),
and by Elasticsearch on this server's indices only (``<prefix>*/_stats/search``: the shared node's other
users have other prefixes), so the bound is the node's, not the bookkeeping's word for it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.interactions.paging import encode_cursor, scope_of
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}
PIT_MAX = 6
PIT_PER_CLIENT = 4
FLOOD = 500
SORTS = ["", "_id", "-_id", "family", "-family", "-_lastUpdated", "family,-_lastUpdated"]


@pytest.fixture(scope="module")
def server(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = make_settings(es_url, tmp_path_factory.mktemp("pits"), search_pit_max=PIT_MAX,
                             search_pit_max_per_client=PIT_PER_CLIENT)
    with start_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def family(http: httpx.Client) -> str:
    """37 patients whose family names share a prefix and tie in threes (ties are broken by the id)."""
    tag = f"Pit{uuid.uuid4().hex[:8]}"
    for i in range(37):
        resp = http.post("/Patient", headers=FHIR_JSON,
                         json={"resourceType": "Patient", "name": [{"family": f"{tag}{chr(97 + i // 3)}"}]})
        assert resp.status_code == 201, resp.text
    return tag


def es_contexts(server: RunningServer) -> int:
    """Search contexts (a PIT holds one per shard) open on this server's indices, as Elasticsearch counts them."""
    stats = server.ctx.es.indices.stats(index=f"{server.settings.es_index_prefix}*", metric="search").body
    return sum(int(ix["total"]["search"]["open_contexts"]) for ix in stats["indices"].values())


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == relation), None)


def cursor_of(url: str) -> dict[str, Any]:
    token = httpx.URL(url).params["_cursor"].split(".")[0]  # the signed payload (paging.encode_cursor)
    state: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return state


def get(http: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    resp = http.get(url, params=params or None)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def flood(http: httpx.Client, n: int, **params: Any) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: get(http, "/Patient", **params), range(n)))


def every_page(http: httpx.Client, first: dict[str, Any]) -> list[str]:
    seen = [e["resource"]["id"] for e in first.get("entry", [])]
    url = link(first, "next")
    while url:
        page = get(http, url)
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = link(page, "next")
    return seen


def test_a_flood_of_first_pages_on_the_id_sort_opens_no_point_in_time(server: RunningServer, http: httpx.Client,
                                                                      family: str) -> None:
    server.ctx.pits.close_all()
    opened = server.ctx.pits.opened
    pages = flood(http, FLOOD, _count=1)  # the request of the issue: every answer has a next link
    assert all(link(p, "next") for p in pages)
    assert server.ctx.pits.open_count() == 0 and server.ctx.pits.opened == opened
    assert es_contexts(server) == 0
    # and the links work: the second page follows the first
    second = get(http, str(link(pages[0], "next")))
    assert second["entry"][0]["resource"]["id"] > pages[0]["entry"][0]["resource"]["id"]


def test_a_flood_on_a_moving_sort_stays_within_the_caps(server: RunningServer, http: httpx.Client,
                                                        family: str) -> None:
    server.ctx.pits.close_all()
    pages = flood(http, FLOOD, family=family, _count=1, _sort="-family")
    assert all(link(p, "next") for p in pages)
    # one client (this test's address): its cap binds first; the process's is checked below
    assert server.ctx.pits.open_count() <= PIT_PER_CLIENT
    assert 0 < es_contexts(server) <= PIT_PER_CLIENT
    assert server.ctx.pits.refused >= FLOOD - PIT_PER_CLIENT
    # every next link works, with a snapshot or without (beyond the caps)
    with_pit = [p for p in pages if "pit" in cursor_of(str(link(p, "next")))]
    assert 0 < len(with_pit) <= PIT_PER_CLIENT < len(pages)
    for first in (with_pit[0], pages[-1]):
        assert first["entry"][0]["resource"]["name"][0]["family"] == f"{family}m"
        seen = every_page(http, first)
        assert len(seen) == len(set(seen)) == 37


def test_the_process_cap_holds_across_clients(server: RunningServer, family: str) -> None:
    pits = server.ctx.pits
    pits.close_all()
    alias = server.ctx.indices.alias("Patient")
    opened = [pits.open(alias, f"client-{i}") for i in range(3 * PIT_MAX)]
    assert sum(p is not None for p in opened) == PIT_MAX == pits.open_count()
    assert es_contexts(server) == PIT_MAX
    pits.close_all()
    assert pits.open_count() == 0 and es_contexts(server) == 0


def test_a_forged_cursor_pit_is_never_sent_to_elasticsearch(server: RunningServer, http: httpx.Client,
                                                            family: str) -> None:
    """A PIT id is client input in a cursor: one of another index (here, opened by someone else on the
    DocumentReference index) is not read; the page comes from current data of the searched type."""
    server.ctx.pits.close_all()
    other = server.ctx.es.open_point_in_time(index=server.ctx.indices.alias("DocumentReference"),
                                             keep_alive="1m").body["id"]
    try:
        first = get(http, "/Patient", family=family, _count=5, _sort="family")
        state = cursor_of(str(link(first, "next")))
        state["pit"] = other
        # signed with the server's own key (a cursor is also HMAC-signed): the pool still refuses the PIT
        scope = scope_of("search:Patient", httpx.URL(str(link(first, "self"))).params.multi_items())
        forged = encode_cursor(server.ctx.cursor_key, scope, state)
        page = get(http, "/Patient", family=family, _count=5, _sort="family", _cursor=forged)
        assert len(page["entry"]) == 5 and all(e["resource"]["resourceType"] == "Patient" for e in page["entry"])
        assert "pit" not in cursor_of(str(link(page, "next"))) or cursor_of(str(link(page, "next")))["pit"] != other
    finally:
        server.ctx.es.close_point_in_time(id=other)


def test_a_snapshot_keeps_a_moving_sort_exact_under_writes(server: RunningServer, http: httpx.Client) -> None:
    """``_sort=family``: renaming a resource not yet served to the front would skip it without a snapshot;
    with one, each resource present at the first page is served once, and the PIT is closed after the last."""
    server.ctx.pits.close_all()
    tag = f"Mov{uuid.uuid4().hex[:8]}"
    made = [http.post("/Patient", headers=FHIR_JSON,
                      json={"resourceType": "Patient", "name": [{"family": f"{tag}{chr(98 + i)}"}]}).json()
            for i in range(12)]
    first = get(http, "/Patient", family=tag, _count=4, _sort="family")
    assert "pit" in cursor_of(str(link(first, "next")))
    last = made[-1]  # on the last page: moved before the cursor
    last["name"] = [{"family": f"{tag}a"}]
    assert http.put(f"/Patient/{last['id']}", json=last, headers=FHIR_JSON).status_code == 200
    http.post("/Patient", headers=FHIR_JSON, json={"resourceType": "Patient", "name": [{"family": f"{tag}z"}]})
    seen = every_page(http, first)
    assert sorted(seen) == sorted(p["id"] for p in made)
    assert server.ctx.pits.open_count() == 0 and es_contexts(server) == 0  # closed with the last page


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 15), sort=st.sampled_from(SORTS), snapshots=st.booleans())
def test_paging_returns_every_match_exactly_once(server: RunningServer, http: httpx.Client, family: str,
                                                 count: int, sort: str, snapshots: bool) -> None:
    """Whatever the page size and the sort, with a snapshot or past the caps (without one), the pages hold
    every match once, in the order of the sort; and no PIT outlives the last page."""
    pits = server.ctx.pits
    pits.close_all()
    if not snapshots:  # this client at its cap: the pages are read on current data
        for _ in range(PIT_PER_CLIENT):
            pits.open(server.ctx.indices.alias("Patient"), "ip:127.0.0.1")
    params: dict[str, Any] = {"family": family, "_count": count}
    if sort:
        params["_sort"] = sort
    first = get(http, "/Patient", **params)
    assert first["total"] == 37
    seen = every_page(http, first)
    assert len(seen) == len(set(seen)) == 37
    whole = get(http, "/Patient", **{**params, "_count": 100})
    assert seen == [e["resource"]["id"] for e in whole["entry"]]
    assert pits.open_count() == (0 if snapshots else PIT_PER_CLIENT)
    pits.close_all()
