"""Audit trail of every FHIR interaction (IHE BALP style AuditEvents in the store of record).

Design (issue 6, "Audit"):

- **What**: one AuditEvent per HTTP request under the FHIR base (reads, searches, writes, operations,
  failures, 401/403 denials), and one per entry of a batch/transaction Bundle (:mod:`.events`). Agent from
  the token, entities (the resource touched, the patient when known, the query of a search), action,
  outcome with the HTTP status, time.
- **Where**: the append-only ``audit_event`` table of the store of record (:mod:`fhir_server.storage.audit`):
  one row per AuditEvent (time, action, outcome, subtype, the event's facts) plus one ``audit_ref`` row per
  entity and agent reference, keyed by (reference, time) so ``AuditEvent?patient=`` is one index range
  scan. No versions, no match keys, no outbox, no Elasticsearch: AuditEvent read and search are answered
  by SQL (:mod:`.search`), rendered as FHIR on read (:func:`.events.render`). The patient compartment
  filter of :mod:`fhir_server.security.policy` applies unchanged (its ``patient`` parameter, ``allows``
  per hit). The agent of a patient-context token is written as an identifier (not a ``Patient``
  reference), so ``patient=`` never matches a record only because that patient *performed* it.
- **How, cheaply**: the request path reduces the request to its facts and appends them to a local
  journal (:mod:`.journal`, a copy into a memory-mapped file); an applier (:mod:`.applier`, its own
  process by default) moves journalled records into the table in large transactions, with the journal
  position they reach, so a crash is replayed exactly once (:mod:`.writer` ties them together).
- **Durability** (``FHIR_AUDIT_MODE``): ``fail-closed`` (default) answers only once the record is in the
  journal, and answers 500 instead if it cannot be (a write that already committed stays committed: the
  failure is about the trace, never silent); ``async`` answers anyway and logs it. ``FHIR_AUDIT_SYNC``:
  ``normal`` (default), the journal survives any crash of the server process and is fdatasync'ed within
  ~0.2 s; ``full``, the answer also waits for that (one per group of concurrent answers).
- **Cost, measured**: see ``bench/audit.py`` and ``docs/audit.md`` (figures as ratios to auth and audit off,
  configurations interleaved in one run).
- **Hook**: an ASGI middleware (:mod:`.middleware`) outside authentication, so 401s are traced too; routes
  add what only they know (the result, the Bundle) to ``request.state``.
"""
