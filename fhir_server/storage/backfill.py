"""Start-up backfills: data the store derives from stored versions, rebuilt when the rules deriving it change.

Schema changes are migrations (``migrations``); these are data: the match keys of every current resource
(``keys.extract_keys``, versioned by ``keys.RULES_VERSION`` in ``rules_version``) and the change-log rows of
the tracked types (``unit.TRACKED_TYPES``). Each is a no-op once done, so every process runs them at every start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from .engine import dialect_insert, write_conn
from .keys import RULES_MARKER, RULES_VERSION, extract_keys
from .schema import resource, resource_version, rules_version, type_log
from .unit import TRACKED_TYPES, SQLWriteUnit

if TYPE_CHECKING:
    from .sql import SQLResourceStore


def run_all(store: SQLResourceStore) -> None:
    """What every start runs, after the migrations."""
    backfill_match_keys(store)
    backfill_type_log(store)


def backfill_type_log(store: SQLResourceStore) -> None:
    """Create the ``type_log`` row of each tracked type that has none (a store older than the table, a new
    tracked type) from the versions already stored. SQLite: under the write lock, so exact. PostgreSQL: a
    writer committing meanwhile either creates the row first (it then counts from there: only differences
    of the marker matter) or bumps the one inserted here."""
    with store.engine.connect() as conn:
        missing = TRACKED_TYPES - {r.type for r in conn.execute(select(type_log.c.type))}
    if not missing:
        return
    v = resource_version
    with write_conn(store.engine) as conn:
        for type_ in sorted(missing):
            top, n = conn.execute(select(func.max(v.c.seq), func.count()).select_from(v)
                                  .where(v.c.type == type_)).one()
            conn.execute(dialect_insert(conn)(type_log).values(type=type_, seq=int(top or 0), versions=int(n))
                         .on_conflict_do_nothing(index_elements=[type_log.c.type]))


def backfill_match_keys(store: SQLResourceStore, force: bool = False, batch: int = 500) -> int:
    """Derive the match keys of every current resource when they predate the current rules.

    A no-op once ``rules_version`` holds :data:`keys.RULES_VERSION` (unless ``force``). A resource rewritten
    meanwhile is skipped (its writer stored fresh keys). Returns the number of resources whose keys were rebuilt.
    """
    with store.engine.connect() as conn:
        current = conn.execute(select(rules_version.c.version).where(rules_version.c.name == RULES_MARKER)).scalar()
        types = [r.type for r in conn.execute(select(resource.c.type).distinct())]
    if current == str(RULES_VERSION) and not force:
        return 0
    done = 0
    for type_ in types:
        for versions in store.iter_current(type_, batch):
            with write_conn(store.engine) as conn:
                unit = SQLWriteUnit(conn, for_update=store.dialect != "sqlite")
                done += sum(unit.rekey(type_, v.id, v.seq, extract_keys(v.resource())) for v in versions)
    with write_conn(store.engine) as conn:  # an upsert: another process starting meanwhile may write it too
        ins = dialect_insert(conn)(rules_version).values(name=RULES_MARKER, version=str(RULES_VERSION))
        conn.execute(ins.on_conflict_do_update(index_elements=[rules_version.c.name],
                                               set_={"version": ins.excluded.version}))
    return done
