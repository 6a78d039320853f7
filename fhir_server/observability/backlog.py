"""What is waiting behind the answers: outbox rows not yet indexed, audit records not yet in the table.

Read at scrape time (``/metrics``) and by ``/readyz``: two small queries on the store, no Elasticsearch call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from fhir_server.storage.schema import outbox, resource_version

if TYPE_CHECKING:
    from fhir_server.audit.writer import AuditWriter
    from fhir_server.storage import SQLResourceStore


def outbox_backlog(store: SQLResourceStore) -> tuple[int, float]:
    """(pending outbox rows, age in seconds of the oldest one's version; 0 when none is pending).

    The outbox row's ``seq`` is its version's, so the age is that version's ``lastUpdated``: how long the
    search index has lagged behind the store of record."""
    oldest_seq = select(func.min(outbox.c.seq)).scalar_subquery()
    with store.engine.connect() as conn:
        depth = int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())
        oldest_us = conn.execute(select(resource_version.c.last_updated_us)
                                 .where(resource_version.c.seq == oldest_seq)).scalar()
    if not depth or oldest_us is None:
        return depth, 0.0
    return depth, max(0.0, time.time() - int(oldest_us) / 1e6)


def audit_backlog_bytes(writer: AuditWriter) -> int:
    """Journal bytes this process wrote that the applier has not put in the audit table yet (exact within a
    segment; whole segments counted at their reserved size across segments)."""
    journal = writer.journal
    if journal is None:
        return 0
    (end_seg, end_off), (done_seg, done_off) = journal.end, writer.applied
    if (end_seg, end_off) <= (done_seg, done_off):
        return 0
    if end_seg == done_seg:
        return end_off - done_off
    return (end_seg - done_seg - 1) * writer.segment_bytes + max(0, writer.segment_bytes - done_off) + end_off
