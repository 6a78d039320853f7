"""FHIR R4 search on Elasticsearch: parameter registry, extraction, mapping, query compilation.

Pure Python, no I/O.  Entry points (import them from their modules):

* ``search.registry.SearchParameterRegistry.load_default()`` - the vendored R4 parameters;
* ``search.extract.IndexDocumentBuilder(registry, base_url=...).build(resource)`` - ES document;
* ``search.mapping.index_mapping(registry, type)`` / ``index_settings(shards, replicas)``;
* ``search.query.compile_search(registry, type, params, base_url=..., strict=...)``;
* ``search.errors.SearchError`` - client errors (400), with the offending parameter name.

Each parameter type has one module under ``search.params`` that owns both its index fields and
the queries on them.
"""
