"""Audit trail of every FHIR interaction (IHE BALP style AuditEvents in the store of record).

Design (issue 6, "Audit"):

- **What**: one AuditEvent per HTTP request under the FHIR base (reads, searches, writes, operations,
  failures, 401/403 denials), and one per entry of a batch/transaction Bundle (:mod:`.events`). Agent from
  the token, entities (the resource touched, the patient when known, the query of a search), action,
  outcome with the HTTP status, time.
- **Where**: regular versioned ``AuditEvent`` resources in the store of record, indexed through the outbox
  like any other type, so ``AuditEvent?patient=`` works through ordinary search and the patient
  compartment filter of :mod:`fhir_server.security.policy` applies unchanged. A patient's own accesses
  are found through ``entity``; the agent of a patient-context token is written as an identifier (not a
  ``Patient`` reference), so the ``patient`` parameter never matches a record only because that patient
  *performed* it (e.g. a denied probe of someone else's data).
- **How, cheaply**: :class:`.writer.AuditWriter`, a background thread doing *group commit*: records from
  concurrent requests are batched into one store transaction (one fsync on SQLite). The request path only
  captures a small record; building the resources is done by the writer thread.
- **Durability** (``FHIR_AUDIT_MODE``): ``fail-closed`` (default) holds the response until its record is
  committed, so an answered request always has its trace; if the record cannot be written the client gets
  a 500 OperationOutcome instead of the answer (a write that already committed stays committed: the
  failure is about the trace, never silent). ``async`` answers at once and only logs write failures.
- **Cost, measured** (``bench/audit.py``, SQLite WAL synchronous=FULL, one shared 2-core box, 4 s runs, ratios
  of req/s to auth and audit off): read ``Patient/{id}`` at 1 client 0.17 (fail-closed), 0.27 (async), 0.14
  with auth; at 16 clients ~0.5; create ``Patient`` at 1 client 0.88 (fail-closed), 0.61 with auth; at 16
  clients ~0.5. "A few percent" is **not** reached: a read costs well under a millisecond while each audit
  record is a full versioned write (version row, match keys, outbox row), an fsync, and later an
  Elasticsearch index operation, all in-process competing for the GIL. At 1 client with fail-closed an fsync
  per request is unavoidable on one SQLite file. Proposed next step: a dedicated append-only ``audit_event``
  table (no versioning, keys or outbox; a ``patient`` column with an index serving ``AuditEvent?patient=``
  directly, never Elasticsearch), optionally in its own SQLite file or PostgreSQL with ``synchronous_commit``
  so the trace fsync does not serialise with resource writes.
- **Hook**: an ASGI middleware (:mod:`.middleware`) outside authentication, so 401s are traced too; routes
  add what only they know (the result, the Bundle) to ``request.state``.
"""
