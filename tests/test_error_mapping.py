"""The one mapping of exceptions to HTTP answers (api.responses.exception_response): what each kind of
failure tells the client, wherever it surfaces (the route wrapper or the application's handlers)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest
from elastic_transport import ConnectionError as EsConnectionError
from elasticsearch import ApiError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from fhir_server.api.responses import as_fhir_error, exception_response
from fhir_server.errors import FHIRError
from fhir_server.storage import ConcurrentWrite, StoreBusy


def _request(query: bytes = b"") -> Request:
    return Request({"type": "http", "method": "PUT", "path": "/fhir/Patient/p", "query_string": query,
                    "headers": [], "scheme": "http", "server": ("testserver", 80)})


def _api_error(status: int) -> ApiError:
    return ApiError("refused", SimpleNamespace(status=status), {})  # type: ignore[arg-type]


def test_a_fhir_error_keeps_its_status_and_headers() -> None:
    err = FHIRError(412, "conflict", "version mismatch", ("If-Match",), {"ETag": 'W/"2"'})
    assert as_fhir_error(_request(), err) is err
    assert as_fhir_error(_request(), StoreBusy("locked")).status == 503


@pytest.mark.parametrize(("exc", "status", "code"), [
    (_api_error(400), 400, "invalid"),  # a value Elasticsearch could not search
    (_api_error(429), 503, "transient"),  # overloaded
    (_api_error(503), 503, "transient"),
    (EsConnectionError("down"), 503, "transient"),
    (ConcurrentWrite("lock timeout"), 409, "conflict"),  # escaped the engine's retries: the client retries
    (HTTPException(405, headers={"Allow": "GET"}), 405, "not-supported"),
    (HTTPException(404), 404, "not-found"),
    (RuntimeError("secret detail"), 500, "exception"),
])
def test_each_failure_has_one_answer(exc: Exception, status: int, code: str) -> None:
    err = as_fhir_error(_request(), exc)
    assert (err.status, err.code) == (status, code)
    assert "secret" not in err.diagnostics


def test_the_answer_is_an_operation_outcome_in_the_asked_format() -> None:
    resp = exception_response(_request(), HTTPException(405, headers={"Allow": "GET"}))
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"
    assert orjson.loads(bytes(resp.body))["issue"][0]["code"] == "not-supported"
    xml = exception_response(_request(b"_format=xml"), ConcurrentWrite("x"))
    assert xml.status_code == 409 and xml.headers["content-type"].startswith("application/fhir+xml")
    assert exception_response(_request(b"_format=nonsense"), RuntimeError()).headers["content-type"].startswith(
        "application/fhir+json")  # the format asked was itself the error: JSON
