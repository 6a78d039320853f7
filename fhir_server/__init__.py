"""FHIR R4 interoperability server: HTTP API, interactions, store of record, indexer, CLI."""

__version__ = "0.1.0"
