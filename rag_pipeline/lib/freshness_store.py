"""Freshness facts from Postgres, and the breach records (`rag.freshness_breaches`, sql/017).

The rules are in `rag_pipeline.lib.freshness`; this module only reads what they need and writes
what they decide, with bound parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg.sql

from rag_pipeline.lib.freshness import (
    ChangeEvent,
    Promotion,
    ServedContent,
    SourceFreshness,
    change_outcomes,
    plan_breaches,
    source_freshness,
    uncovered_late_changes,
)

DEFAULT_WINDOW = timedelta(days=7)


# Live, servable documents whose current content the serving version lacks. The served
# (document, content) pairs are collected once and hash-joined: a per-document NOT EXISTS over
# the memberships took 54 s for 20,000 documents (measured), this takes well under a second.
_UNSERVED = """
    WITH served AS MATERIALIZED (
        SELECT DISTINCT m.doc_id, c.content_hash
        FROM rag.active_index a
        JOIN rag.index_version_chunks m ON m.version_id = a.version_id
        JOIN rag.chunks c ON c.chunk_id = m.chunk_id
    )
    SELECT d.doc_id, d.source FROM rag.live_documents d
    LEFT JOIN served s ON s.doc_id = d.doc_id AND s.content_hash = d.content_hash
    WHERE d.source = ANY(%(sources)s::text[])
      AND cardinality(d.acl_principals) > 0
      AND s.doc_id IS NULL
"""


def documents_behind_serving(conn: psycopg.Connection, sources: Sequence[str]) -> dict[str, int]:
    """Per source, live servable documents whose current content the serving version lacks."""
    rows = conn.execute(
        "SELECT source, count(*) FROM (" + _UNSERVED + ") unserved GROUP BY source",
        {"sources": list(sources)},
    ).fetchall()
    return {source: int(count) for source, count in rows}


def load_changes(
    conn: psycopg.Connection, since: datetime, sources: Sequence[str]
) -> list[ChangeEvent]:
    """The events of `sources` detected since `since`, plus every event of a live document whose
    current content the serving version lacks, however old (a change pending for a month must
    still count)."""
    rows = conn.execute(
        """
        WITH unserved AS ("""
        + _UNSERVED
        + """)
        SELECT e.event_id, e.doc_id, e.source, e.event, e.recorded_at, e.content_hash,
               e.tenant, e.acl_principals,
               e.content_hash IS NOT NULL AND EXISTS (
                   SELECT 1 FROM rag.quarantine q
                   WHERE q.doc_id = e.doc_id AND q.content_hash = e.content_hash)
        FROM rag.document_events e
        WHERE e.source = ANY(%(sources)s::text[])
          AND (e.recorded_at >= %(since)s OR e.doc_id IN (SELECT doc_id FROM unserved))
        ORDER BY e.doc_id, e.recorded_at, e.event_id
        """,
        {"sources": list(sources), "since": since},
    ).fetchall()
    return [
        ChangeEvent(
            event_id=row[0],
            doc_id=row[1],
            source=row[2],
            event=row[3],
            detected_at=row[4],
            content_hash=row[5],
            tenant=row[6],
            acl_principals=tuple(row[7]) if row[7] is not None else None,
            quarantined=bool(row[8]),
        )
        for row in rows
    ]


def load_promotions(conn: psycopg.Connection) -> list[Promotion]:
    """Every switch of the serving pointer, oldest first (one row per promotion or rollback)."""
    rows = conn.execute(
        "SELECT to_version, switched_at FROM rag.index_promotions"
        " ORDER BY switched_at, promotion_id"
    ).fetchall()
    return [Promotion(version_id=int(row[0]), switched_at=row[1]) for row in rows]


def load_contents(
    conn: psycopg.Connection, version_ids: Sequence[int], doc_ids: Sequence[str]
) -> dict[tuple[int, str], list[ServedContent]]:
    """What each of these versions serves of each of these documents (versions removed by
    garbage collection have no rows left: they can no longer vouch for a change)."""
    if not version_ids or not doc_ids:
        return {}
    rows = conn.execute(
        """
        SELECT DISTINCT m.version_id, m.doc_id, c.content_hash, m.tenant, m.acl_principals
        FROM rag.index_version_chunks m
        JOIN rag.chunks c ON c.chunk_id = m.chunk_id
        WHERE m.version_id = ANY(%s::bigint[]) AND m.doc_id = ANY(%s::text[])
        """,
        (list(version_ids), list(doc_ids)),
    ).fetchall()
    contents: dict[tuple[int, str], list[ServedContent]] = {}
    for version_id, doc_id, content_hash, tenant, acl in rows:
        contents.setdefault((int(version_id), doc_id), []).append(
            ServedContent(content_hash, tenant, frozenset(acl))
        )
    return contents


def measure(
    conn: psycopg.Connection,
    targets: Mapping[str, timedelta | None],
    *,
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
    last_scans: Mapping[str, datetime] | None = None,
) -> list[SourceFreshness]:
    """The freshness of each source in `targets` (source -> target, None: no SLA) at `now`."""
    sources = sorted(targets)
    changes = load_changes(conn, now - window, sources)
    promotions = load_promotions(conn)
    earliest = min((c.detected_at for c in changes), default=now)
    # The version serving when the earliest change was detected, and every one after it.
    relevant = [p for p in promotions if p.switched_at > earliest]
    before = [p for p in promotions if p.switched_at <= earliest]
    if before:
        relevant.insert(0, before[-1])
    contents = load_contents(
        conn,
        sorted({p.version_id for p in relevant}),
        sorted({c.doc_id for c in changes}),
    )
    outcomes = change_outcomes(changes, relevant, contents)
    scans = last_scans or {}
    behind = documents_behind_serving(conn, sources)
    return [
        dataclasses.replace(
            source_freshness(
                name,
                outcomes,
                now=now,
                window=window,
                target=targets[name],
                last_scan_at=scans.get(name),
            ),
            documents_behind_serving=behind.get(name, 0),
        )
        for name in sources
    ]


@dataclass(frozen=True)
class BreachRecord:
    breach_id: int
    source: str
    detected_at: datetime
    target_seconds: float
    lag_seconds: float
    worst_lag_seconds: float
    pending_changes: int
    oldest_pending_doc_id: str
    oldest_pending_event: str
    oldest_pending_change_at: datetime
    last_evaluated_at: datetime
    resolved_at: datetime | None
    resolution: str | None

    def as_dict(self) -> dict[str, Any]:
        data = {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in self.__dict__.items()
        }
        return {key: value for key, value in data.items() if value is not None}


# The columns of `BreachRecord`, in its field order.
_RETURNING = psycopg.sql.SQL(
    " RETURNING breach_id, source, detected_at, target_seconds, lag_seconds, worst_lag_seconds,"
    " pending_changes, oldest_pending_doc_id, oldest_pending_event, oldest_pending_change_at,"
    " last_evaluated_at, resolved_at, resolution"
)


def list_breaches(
    conn: psycopg.Connection, *, open_only: bool = False, limit: int = 100
) -> list[BreachRecord]:
    """Recorded breaches, newest first."""
    rows = conn.execute(
        "SELECT breach_id, source, detected_at, target_seconds, lag_seconds, worst_lag_seconds,"
        " pending_changes, oldest_pending_doc_id, oldest_pending_event, oldest_pending_change_at,"
        " last_evaluated_at, resolved_at, resolution FROM rag.freshness_breaches"
        " WHERE resolved_at IS NULL OR NOT %s ORDER BY detected_at DESC, breach_id DESC LIMIT %s",
        (open_only, limit),
    ).fetchall()
    return [BreachRecord(*row) for row in rows]


@dataclass(frozen=True)
class BreachChanges:
    opened: list[BreachRecord]
    resolved: list[BreachRecord]
    ongoing: list[BreachRecord]
    # Breaches that began and ended between two evaluations, recorded after the fact.
    recorded_late: list[BreachRecord] = dataclasses.field(default_factory=list)


def record_breaches(
    conn: psycopg.Connection, states: Sequence[SourceFreshness], now: datetime
) -> BreachChanges:
    """Open a breach row for each newly breached source, refresh ongoing ones, resolve the rest.

    One transaction; the partial unique index (one open breach per source) makes a second row for
    an ongoing breach impossible even if two evaluations race: the loser inserts nothing.
    """
    opened: list[BreachRecord] = []
    resolved: list[BreachRecord] = []
    ongoing: list[BreachRecord] = []
    with conn.transaction():
        open_sources = [
            row[0]
            for row in conn.execute(
                "SELECT source FROM rag.freshness_breaches WHERE resolved_at IS NULL FOR UPDATE"
            ).fetchall()
        ]
        plan = plan_breaches(states, open_sources)
        for state in plan.to_open:
            assert state.target is not None and state.oldest_pending_change_at is not None
            lag = state.current_lag.total_seconds()
            row = conn.execute(
                psycopg.sql.SQL("""
                INSERT INTO rag.freshness_breaches (source, detected_at, target_seconds,
                    lag_seconds, worst_lag_seconds, pending_changes, oldest_pending_doc_id,
                    oldest_pending_event, oldest_pending_change_at, last_evaluated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (source) WHERE resolved_at IS NULL DO NOTHING""")
                + _RETURNING,
                (
                    state.source,
                    now,
                    state.target.total_seconds(),
                    lag,
                    lag,
                    state.pending_changes,
                    state.oldest_pending_doc_id,
                    state.oldest_pending_event,
                    state.oldest_pending_change_at,
                    now,
                ),
            ).fetchone()
            if row is not None:
                opened.append(BreachRecord(*row))
        for state in plan.still_open:
            row = conn.execute(
                psycopg.sql.SQL("""
                UPDATE rag.freshness_breaches SET
                    worst_lag_seconds = greatest(worst_lag_seconds, %s),
                    pending_changes = %s, last_evaluated_at = %s
                WHERE source = %s AND resolved_at IS NULL""")
                + _RETURNING,
                (state.current_lag.total_seconds(), state.pending_changes, now, state.source),
            ).fetchone()
            if row is not None:
                ongoing.append(BreachRecord(*row))
        for source, resolution in plan.to_resolve.items():
            row = conn.execute(
                psycopg.sql.SQL("""
                UPDATE rag.freshness_breaches SET resolved_at = %s, resolution = %s,
                    last_evaluated_at = %s
                WHERE source = %s AND resolved_at IS NULL""")
                + _RETURNING,
                (now, resolution, now, source),
            ).fetchone()
            if row is not None:
                resolved.append(BreachRecord(*row))
        recorded_late = [
            record
            for state in states
            if state.target is not None and state.late_changes
            for record in [_record_late(conn, state, now)]
            if record is not None
        ]
    return BreachChanges(
        opened=opened, resolved=resolved, ongoing=ongoing, recorded_late=recorded_late
    )


def _record_late(
    conn: psycopg.Connection, state: SourceFreshness, now: datetime
) -> BreachRecord | None:
    """One resolved breach row for the late changes of `state` no breach accounts for yet."""
    assert state.target is not None
    breaches = conn.execute(
        "SELECT oldest_pending_change_at, resolved_at FROM rag.freshness_breaches"
        " WHERE source = %s",
        (state.source,),
    ).fetchall()
    missed = uncovered_late_changes(state.late_changes, [(row[0], row[1]) for row in breaches])
    if not missed:
        return None
    oldest = missed[0]
    worst = max(change.lag for change in missed).total_seconds()
    row = conn.execute(
        psycopg.sql.SQL("""
        INSERT INTO rag.freshness_breaches (source, detected_at, target_seconds, lag_seconds,
            worst_lag_seconds, pending_changes, oldest_pending_doc_id, oldest_pending_event,
            oldest_pending_change_at, last_evaluated_at, resolved_at, resolution)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
            'searchable late, between two evaluations')""")
        + _RETURNING,
        (
            state.source,
            now,
            state.target.total_seconds(),
            oldest.lag.total_seconds(),
            worst,
            len(missed),
            oldest.doc_id,
            oldest.event,
            oldest.detected_at,
            now,
            now,
        ),
    ).fetchone()
    return BreachRecord(*row)


def database_now(conn: psycopg.Connection) -> datetime:
    """The database's clock: events are stamped by it, so lags are measured on it too."""
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]
