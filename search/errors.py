"""The one exception type the search package raises towards the HTTP layer."""

from __future__ import annotations


class SearchError(ValueError):
    """A client error in a search request (unknown modifier, malformed value, ...).

    ``expression`` is the offending parameter name as the client wrote it (``birthdate``,
    ``name:exact``); the HTTP layer turns the error into a 400 OperationOutcome with it.
    """

    def __init__(self, message: str, expression: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.code = code  # OperationOutcome IssueType: invalid, or too-costly for capped chains

    def __str__(self) -> str:
        return f"{self.expression}: {self.message}" if self.expression else self.message
