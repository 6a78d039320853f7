"""What the HTTP parser refuses before the application runs, answered as FHIR.

uvicorn's h11 parser refuses a request it cannot parse (a raw non-ASCII byte in the URL, RFC 9112 §3.2, a
malformed header) with its own ``text/plain`` 400. A FHIR client is owed an OperationOutcome for every error
it can cause: :class:`FHIRH11Protocol` is uvicorn's h11 protocol with that one answer replaced.
"""

from __future__ import annotations

from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from fhir_server.errors import Issue, operation_outcome

__all__ = ["FHIRH11Protocol", "uvicorn_options"]


class FHIRH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps(operation_outcome([Issue(
            "error", "invalid", f"The HTTP request could not be parsed ({msg}); a URL carries only ASCII: "
            "percent-encode other characters (RFC 3986)", ("url",))]))
        headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode()),
                   (b"x-content-type-options", b"nosniff"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings every way of running the app shares (``serve``, the tests' harness)."""
    return {"http": FHIRH11Protocol}
