"""Audit trail of every FHIR interaction (IHE BALP style AuditEvents in the store of record).

Design (issue 6, "Audit"):

- **What**: one AuditEvent per HTTP request under the FHIR base (reads, searches, writes, operations,
  failures, 401/403 denials), and one per entry of a batch/transaction Bundle (:mod:`.events`). Agent from
  the token, entities (the resource touched, the patient when known, the query of a search), action,
  outcome with the HTTP status, time.
- **Where**: the append-only ``audit_event`` table of the store of record (:mod:`fhir_server.storage.audit`):
  one row per AuditEvent (time, action, outcome, subtype, the JSON) plus one ``audit_ref`` row per entity
  and agent reference, keyed by (reference, time) so ``AuditEvent?patient=`` is one index range scan. No
  versions, no match keys, no outbox, no Elasticsearch: AuditEvent read and search are answered by SQL
  (:mod:`.search`), so a record is searchable as soon as it is committed and audit adds no index load
  that other searches would wait for. The patient compartment filter of
  :mod:`fhir_server.security.policy` applies unchanged (its ``patient`` parameter, ``allows`` per hit).
  A patient's own accesses are found through ``entity``; the agent of a patient-context token is written
  as an identifier (not a ``Patient`` reference), so ``patient=`` never matches a record only because
  that patient *performed* it (e.g. a denied probe of someone else's data).
- **How, cheaply**: :class:`.writer.AuditWriter`, a background thread doing *group commit*: records from
  concurrent requests are batched into one transaction. The request path only captures a small record;
  building the resources is done by the writer thread.
- **Durability** (``FHIR_AUDIT_MODE``): ``fail-closed`` (default) holds the response until its record is
  committed, so an answered request always has its trace; if the record cannot be written the client gets
  a 500 OperationOutcome instead of the answer (a write that already committed stays committed: the
  failure is about the trace, never silent). ``async`` answers at once and only logs write failures.
  ``FHIR_AUDIT_SYNC``: ``normal`` (default) — committed means in the write-ahead log (survives any crash
  of the server process), flushed to disk by a second thread within ~0.2 s, off the request path (a power
  cut can lose that last fraction of a second of trail); ``full`` — the answer also waits for the fsync
  (one per batch). Resource writes are not affected: the relaxed setting lives on the audit writer's own
  connection (SQLite) or transaction (PostgreSQL ``synchronous_commit``).
- **Cost, measured**: see ``bench/audit.py`` and the README (figures as ratios to auth and audit off,
  configurations interleaved in one run).
- **Hook**: an ASGI middleware (:mod:`.middleware`) outside authentication, so 401s are traced too; routes
  add what only they know (the result, the Bundle) to ``request.state``.
"""
