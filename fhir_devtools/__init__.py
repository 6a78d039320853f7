"""Development and test tooling, kept out of the runtime package ``fhir_server``.

``es_node``: a managed local Elasticsearch node (Maven download, JVM, ``setpriv``) for ``make run``,
``fhir-server serve`` without ``FHIR_ES_URL``, ``fhir-server es start|stop|status``, the tests and the
benchmarks. A production server is given its cluster with ``FHIR_ES_URL`` and never imports this package.
"""
