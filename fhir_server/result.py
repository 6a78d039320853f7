"""What an interaction hands back to the HTTP layer.

Neutral ground: the interactions build it, the security layer filters it and the HTTP layer writes it, so
none of the three has to import another for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_common.types import Resource
from fhir_server.errors import Issue
from fhir_server.storage import StoredVersion


@dataclass
class Result:
    """Status, body and the version whose ETag/Last-Modified/Location the response carries.

    ``body`` is the resource (or Bundle); ``issues`` are non-blocking warnings the
    client sees with ``Prefer: return=OperationOutcome``.
    """

    status: int
    body: Resource | None = None
    version: StoredVersion | None = None
    location: bool = False  # send Location (create, update-as-create)
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # body already serialised (read path: bytes straight from the store)
