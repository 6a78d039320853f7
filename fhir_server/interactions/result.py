"""What an interaction hands back: :class:`fhir_server.result.Result` (kept importable from here)."""

from fhir_server.result import Result

__all__ = ["Result"]
