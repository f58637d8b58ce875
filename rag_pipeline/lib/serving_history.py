"""The serving pointer's history as operators read it: each switch with who, why and the gates.

`rag.index_promotions` records every promotion and rollback, whichever entry point made it (the
`build_index_job`, `promote_index_job`/`rollback_index_job`, or `rag-pipeline index ...`). This
module reads it back with the state the new serving version was in, so the Dagster side can
publish each switch as an event of `active_index` (`rag_pipeline.defs.indexes.history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True)
class ServingChange:
    """One switch of the serving pointer and the recorded gate results of the version it serves."""

    promotion_id: int
    action: str  # 'promote' or 'rollback'
    from_version: int | None
    to_version: int
    actor: str
    reason: str | None
    switched_at: datetime
    # The version's stored check results (a rollback re-uses the gates it passed when built).
    gates_passed: tuple[str, ...]
    gates_failed: tuple[str, ...]
    # The version's status now: 'active' while it still serves, 'retired' once replaced.
    to_status: str | None
    document_count: int | None
    chunk_count: int | None


_CHANGES_SQL = """
SELECT p.promotion_id, p.action, p.from_version, p.to_version, p.actor, p.reason, p.switched_at,
       coalesce(array_agg(c.check_name ORDER BY c.check_name) FILTER (WHERE c.passed), '{}'),
       coalesce(array_agg(c.check_name ORDER BY c.check_name)
                FILTER (WHERE NOT c.passed AND c.blocking), '{}'),
       v.status, v.document_count, v.chunk_count
FROM rag.index_promotions p
LEFT JOIN rag.index_versions v ON v.version_id = p.to_version
LEFT JOIN rag.index_version_checks c ON c.version_id = p.to_version
WHERE p.promotion_id > %(after)s
GROUP BY p.promotion_id, v.version_id
ORDER BY p.promotion_id
LIMIT %(limit)s
"""


def serving_changes_after(
    conn: psycopg.Connection, after_promotion_id: int, limit: int = 100
) -> list[ServingChange]:
    """Switches recorded after `after_promotion_id` (0: from the first), oldest first."""
    rows = conn.execute(_CHANGES_SQL, {"after": after_promotion_id, "limit": limit}).fetchall()
    return [
        ServingChange(
            promotion_id=int(row[0]),
            action=row[1],
            from_version=int(row[2]) if row[2] is not None else None,
            to_version=int(row[3]),
            actor=row[4],
            reason=row[5],
            switched_at=row[6],
            gates_passed=tuple(row[7]),
            gates_failed=tuple(row[8]),
            to_status=row[9],
            document_count=row[10],
            chunk_count=row[11],
        )
        for row in rows
    ]


def latest_promotion_id(conn: psycopg.Connection) -> int | None:
    """The id of the latest switch, None before the first promotion."""
    row = conn.execute("SELECT max(promotion_id) FROM rag.index_promotions").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def latest_serving_change(conn: psycopg.Connection) -> ServingChange | None:
    """The switch that made the current serving version serve, None before the first."""
    latest = latest_promotion_id(conn)
    if latest is None:
        return None
    return serving_changes_after(conn, latest - 1, limit=1)[0]
