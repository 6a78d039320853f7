"""The index outbox in SQL: the queue of resources whose search-index entry is stale.

A write unit queues its rows (:func:`queue_rows`) in the transaction that writes the versions; the indexer
drains them through :class:`SQLOutbox` (see :class:`fhir_server.storage.base.Outbox`). A row the indexer
gave up on is parked in ``index_error`` with its reason, for an operator to see (``fhir-server
index-errors``) and to queue again once the cause is fixed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from .base import IndexFailure, OutboxEntry
from .engine import write_conn
from .schema import index_error, outbox, resource

_SQL_IN = 500  # values per IN (...) list
MAX_ERROR = 2000  # characters of a parked entry's reason (the column's size)


def queue_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Queue versions for the indexer inside the caller's write transaction (``seq``, ``type``, ``id``)."""
    if rows:
        conn.execute(insert(outbox), [{**row, "attempts": 0} for row in rows])


class SQLOutbox:
    """See :class:`fhir_server.storage.base.Outbox`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def pending(self, limit: int) -> list[OutboxEntry]:
        stmt = select(outbox.c.seq, outbox.c.type, outbox.c.id, outbox.c.attempts).order_by(outbox.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [OutboxEntry(r.seq, r.type, r.id, r.attempts) for r in conn.execute(stmt)]

    def max_seq(self) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(outbox.c.seq))).scalar_one()
        return int(value) if value is not None else None

    def pending_upto(self, seq: int) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(outbox.c.seq).where(outbox.c.seq <= seq).limit(1)).first() is not None

    def done(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with write_conn(self.engine) as conn:
            for i in range(0, len(seqs), _SQL_IN):
                conn.execute(delete(outbox).where(outbox.c.seq.in_(seqs[i:i + _SQL_IN])))

    def failed(self, entries: list[tuple[OutboxEntry, str]], max_attempts: int) -> None:
        """Count a failed attempt; past ``max_attempts`` park the entry in ``index_error``."""
        with write_conn(self.engine) as conn:
            for entry, error in entries:
                if entry.attempts + 1 >= max_attempts:
                    conn.execute(delete(index_error).where(index_error.c.seq == entry.seq))
                    conn.execute(insert(index_error).values(seq=entry.seq, type=entry.type, id=entry.id,
                                                            error=error[:MAX_ERROR]))
                    conn.execute(delete(outbox).where(outbox.c.seq == entry.seq))
                else:
                    conn.execute(update(outbox).where(outbox.c.seq == entry.seq)
                                 .values(attempts=outbox.c.attempts + 1))

    def enqueue(self, items: list[tuple[str, str]]) -> None:
        """Mark resources for re-indexing (reindex catch-up), keyed by their head ``seq``."""
        if not items:
            return
        with write_conn(self.engine) as conn:
            self._enqueue(conn, items)

    @staticmethod
    def _enqueue(conn: Connection, items: list[tuple[str, str]]) -> None:
        for type_, id_ in items:
            head = conn.execute(select(resource.c.seq).where(resource.c.type == type_,
                                                             resource.c.id == id_)).first()
            if head is None:
                continue
            exists = conn.execute(select(outbox.c.seq).where(outbox.c.seq == head.seq)).first()
            if exists is None:
                conn.execute(insert(outbox).values(seq=head.seq, type=type_, id=id_, attempts=0))

    def errors(self, limit: int | None = None) -> list[IndexFailure]:
        """The parked entries, oldest version first."""
        stmt = select(index_error).order_by(index_error.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [IndexFailure(r.seq, r.type, r.id, r.error) for r in conn.execute(stmt)]

    def retry_errors(self) -> int:
        """Queue every parked resource again (its current version) and clear the parked rows, in one
        transaction; returns how many rows were cleared. One that fails again is parked again."""
        with write_conn(self.engine) as conn:
            rows = conn.execute(select(index_error.c.type, index_error.c.id)).all()
            self._enqueue(conn, sorted({(r.type, r.id) for r in rows}))
            conn.execute(delete(index_error))
        return len(rows)
