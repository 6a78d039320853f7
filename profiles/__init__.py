"""Validation of resources: structural rules now, StructureDefinition-driven profiles next."""

from .structural import validate_structure

__all__ = ["validate_structure"]
