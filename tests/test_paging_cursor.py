"""Page cursors are authenticated (HMAC) and bound to their query: a client cannot forge one, alter it, or move it.

Before, a cursor was base64(JSON) taken at its word: ``{"before": "x"}`` (or ``[1]``, ``1e300``, ``2^70``) on
history was a 500, and a search echoed whatever ``total`` the cursor said. Every cursor a client makes up or
edits is now a 400 OperationOutcome naming ``_cursor``; paging itself is unchanged.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.storage import SQLResourceStore
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server

FAMILY = f"cursor{uuid.uuid4().hex[:8]}"
MATCHES = 5


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def cursor_of(link: str) -> str:
    return parse_qs(urlparse(link).query)["_cursor"][0]


def next_link(bundle: dict[str, Any]) -> str | None:
    return next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None)


@pytest.fixture(scope="module")
def world(server: RunningServer) -> Iterator[dict[str, Any]]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        ids = []
        for i in range(MATCHES):
            r = c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": FAMILY, "given": [str(i)]}]})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        pid = ids[0]
        for g in ("a", "b", "c"):  # versions 2-4 of the first one: an instance history of 4
            r = c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                               "name": [{"family": FAMILY, "given": [g]}]})
            assert r.status_code == 200, r.text
        yield {"pid": pid, "ids": ids}


def endpoints(world: dict[str, Any]) -> list[tuple[str, dict[str, str], int | None]]:
    """(path, params, the total its answer must carry) of every paged interaction a cursor reaches."""
    return [("/_history", {"_count": "1"}, None),
            ("/Patient/_history", {"_count": "1"}, None),
            (f"/Patient/{world['pid']}/_history", {"_count": "1"}, 4),
            ("/Patient", {"family": FAMILY, "_count": "2"}, MATCHES)]


FORGED_STATES: list[Any] = [{"before": "x"}, {"before": [1]}, {"before": 1e300}, {"before": 2 ** 70},
                            {"before": -1}, {"before": True}, {"before": None}, {}, [1], 1e300, 2 ** 70, "x", None,
                            {"sa": [FAMILY, "x"], "total": 99999, "dir": "next"},
                            {"sa": "x", "dir": "next"}, {"sa": [[1]], "pit": 3, "dir": "sideways"},
                            {"total": 99999}]


def assert_cursor_refused(r: httpx.Response) -> None:
    assert r.status_code == 400, (r.request.url, r.status_code, r.text)
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["expression"] == ["_cursor"], r.text


@pytest.mark.parametrize("state", FORGED_STATES, ids=repr)
def test_forged_cursors_are_a_400_on_every_paged_interaction(client: httpx.Client, world: dict[str, Any],
                                                             state: Any) -> None:
    payload = b64(json.dumps(state).encode())
    for path, params, _ in endpoints(world):
        for token in (payload, f"{payload}.{b64(b'0' * 32)}"):  # bare, and with a made-up MAC
            assert_cursor_refused(client.get(path, params={**params, "_cursor": token}))


def edit_payload(token: str, **changes: Any) -> str:
    """``token`` with its JSON edited and whatever authenticated it kept (a MAC made for the old JSON)."""
    body, dot, tag = token.partition(".")
    state = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return b64(orjson.dumps({**state, **changes})) + dot + tag


def test_an_edited_cursor_is_a_400_and_total_is_never_the_clients(client: httpx.Client,
                                                                   world: dict[str, Any]) -> None:
    first = client.get("/Patient", params={"family": FAMILY, "_count": "2"}).json()
    assert first["total"] == MATCHES
    token = cursor_of(next_link(first) or "")
    assert client.get("/Patient", params={"family": FAMILY, "_count": "2", "_cursor": token}).json()["total"] == MATCHES
    assert_cursor_refused(client.get("/Patient", params={"family": FAMILY, "_count": "2",
                                                        "_cursor": edit_payload(token, total=99999)}))
    history = client.get("/Patient/_history", params={"_count": "1"}).json()
    token = cursor_of(next_link(history) or "")
    for before in ("x", [1], 2 ** 62, 1):
        assert_cursor_refused(client.get("/Patient/_history", params={"_count": "1",
                                                                     "_cursor": edit_payload(token, before=before)}))


def test_a_cursor_works_for_its_own_query_only(client: httpx.Client, world: dict[str, Any]) -> None:
    token = cursor_of(next_link(client.get("/Patient", params={"family": FAMILY, "_count": "2"}).json()) or "")
    for other in ({"family": "nobody-at-all", "_count": "2"}, {"family": FAMILY, "gender": "male", "_count": "2"},
                  {"family": FAMILY, "_count": "2", "_total": "none"}):
        assert_cursor_refused(client.get("/Patient", params={**other, "_cursor": token}))
    assert_cursor_refused(client.get("/List", params={"_count": "2", "_cursor": token}))
    token = cursor_of(next_link(client.get("/Patient/_history", params={"_count": "1"}).json()) or "")
    assert_cursor_refused(client.get("/_history", params={"_count": "1", "_cursor": token}))
    assert_cursor_refused(client.get(f"/Patient/{world['pid']}/_history", params={"_count": "1", "_cursor": token}))
    # the same log position under another page size or _since is the same walk: accepted
    assert client.get("/Patient/_history", params={"_count": "3", "_cursor": token}).status_code == 200


def walk(client: httpx.Client, path: str, params: dict[str, str]) -> tuple[list[str], set[Any]]:
    """Every page from ``path`` following ``next`` links: the entries' fullUrl+version, the totals seen."""
    seen: list[str] = []
    totals: set[Any] = set()
    url: str | None = path
    query: dict[str, str] | None = params
    while url is not None:
        r = client.get(url, params=query)
        assert r.status_code == 200, r.text
        bundle = r.json()
        totals.add(bundle.get("total"))
        seen += [f"{e['fullUrl']}|{e.get('response', {}).get('etag', '')}" for e in bundle.get("entry", [])]
        url, query = next_link(bundle), None
    return seen, totals


def test_paging_walks_every_page_once(client: httpx.Client, world: dict[str, Any]) -> None:
    matches, totals = walk(client, "/Patient", {"family": FAMILY, "_count": "2"})
    assert len(matches) == len(set(matches)) == MATCHES and totals == {MATCHES}
    versions, totals = walk(client, f"/Patient/{world['pid']}/_history", {"_count": "1"})
    assert len(versions) == len(set(versions)) == 4 and totals == {4}
    versions, _ = walk(client, "/Patient/_history", {"_count": "2"})
    assert len(versions) == len(set(versions)) >= MATCHES + 3


b64_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                            st.sampled_from(["before", "sa", "pit", "total", "dir", "t", "i", "x"]), inner,
                            max_size=4), max_leaves=8).map(lambda v: b64(json.dumps(v).encode()))
cursors = st.one_of(st.text(max_size=60), b64_json,
                    st.tuples(b64_json, st.binary(min_size=0, max_size=40)).map(lambda t: f"{t[0]}.{b64(t[1])}"))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=cursors, which=st.integers(0, 3))
def test_no_cursor_string_is_a_5xx_or_changes_total(client: httpx.Client, world: dict[str, Any], token: str,
                                                    which: int) -> None:
    path, params, total = endpoints(world)[which]
    r = client.get(path, params={**params, "_cursor": token})
    assert r.status_code < 500, (path, token, r.text)
    if r.status_code == 200:
        assert r.json().get("total") == total, (path, token)
    else:
        assert_cursor_refused(r)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the refused start's exit
def test_processes_sharing_a_store_share_the_cursor_key_and_the_setting_overrides_it(
        es_url: str, server: RunningServer, world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    # the store's own secret: every process (here, another store object on the same file) reads the same one
    db_url = server.settings.db_url
    other = SQLResourceStore(db_url)
    try:
        assert other.secret("cursor") == server.ctx.store.secret("cursor")
    finally:
        other.dispose()
    params = {"_count": "1"}
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        token = cursor_of(next_link(c.get("/Patient/_history", params=params).json()) or "")
    workdir = tmp_path_factory.mktemp("second")
    with start_server(make_settings(es_url, workdir, db_url=db_url)) as second, \
            httpx.Client(base_url=second.base_url, timeout=30) as c:
        assert c.get("/Patient/_history", params={**params, "_cursor": token}).status_code == 200
    with start_server(make_settings(es_url, workdir, db_url=db_url, cursor_secret="s" * 32)) as keyed, \
            httpx.Client(base_url=keyed.base_url, timeout=30) as c:
        assert_cursor_refused(c.get("/Patient/_history", params={**params, "_cursor": token}))
        token = cursor_of(next_link(c.get("/Patient/_history", params=params).json()) or "")
        assert c.get("/Patient/_history", params={**params, "_cursor": token}).status_code == 200
    with pytest.raises(RuntimeError):  # a guessable secret stops the server at start, not a request later
        start_server(make_settings(es_url, workdir, db_url=db_url, cursor_secret="short"))
