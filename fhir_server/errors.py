"""Client-visible failures, each carrying what its OperationOutcome needs.

Interactions raise these; the HTTP layer turns them into a status code and an
OperationOutcome, so no error path has to build JSON itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_common.outcome import Issue, operation_outcome
from fhir_common.types import Resource

__all__ = ["FHIRError", "Issue", "bad_request", "conflict", "gone", "not_found", "operation_outcome",
           "precondition_failed", "unavailable", "unprocessable"]


@dataclass
class FHIRError(Exception):
    """An error a client caused (or a temporary unavailability), with its HTTP status."""

    status: int
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    extra_issues: list[Issue] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.diagnostics}"

    @property
    def issues(self) -> list[Issue]:
        return [Issue("error", self.code, self.diagnostics, self.expression), *self.extra_issues]

    def outcome(self) -> Resource:
        return operation_outcome(self.issues)


def bad_request(msg: str, *expression: str) -> FHIRError:
    return FHIRError(400, "invalid", msg, expression)


def not_found(msg: str, *expression: str) -> FHIRError:
    return FHIRError(404, "not-found", msg, expression)


def gone(msg: str) -> FHIRError:
    return FHIRError(410, "deleted", msg)


def conflict(msg: str, *expression: str) -> FHIRError:
    return FHIRError(409, "conflict", msg, expression)


def precondition_failed(msg: str, *expression: str) -> FHIRError:
    return FHIRError(412, "conflict", msg, expression)


def unprocessable(issues: list[Issue]) -> FHIRError:
    first = issues[0]
    return FHIRError(422, first.code, first.diagnostics, first.expression, extra_issues=issues[1:])


def unavailable(msg: str) -> FHIRError:
    return FHIRError(503, "transient", msg, headers={"Retry-After": "1"})
