"""Which index version a query reads: the serving one, or any existing version by id.

Called inside the query's REPEATABLE READ transaction, so the version read here and the rows
every leg reads afterwards belong to one snapshot: a query racing a promotion, a rollback or a
crash sees exactly one complete version.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from rag_pipeline.lib.retrieval.hits import NoServingIndexError, UnknownIndexVersionError


@dataclass(frozen=True)
class ResolvedVersion:
    version_id: int
    model_key: str
    serving: bool
    # False for a version built before lexical statistics existed and never backfilled.
    has_lexical_statistics: bool


def resolve_version(conn: psycopg.Connection, version_id: int | None = None) -> ResolvedVersion:
    """The serving version (`version_id=None`) or the given one, whatever its status.

    An explicit id may be a candidate that was never promoted (how evaluation measures a version
    before it serves) or an older, retired one. Readers are filtered by `rag.readable_chunks`
    either way, so choosing a version never widens access.
    """
    row = conn.execute(
        """
        SELECT v.version_id, v.model_key, a.version_id IS NOT NULL, v.lexical_stats_at IS NOT NULL
        FROM rag.index_versions v
        LEFT JOIN rag.active_index a ON a.version_id = v.version_id
        WHERE v.version_id
              = coalesce(%(version)s::bigint, (SELECT version_id FROM rag.active_index))
        """,
        {"version": version_id},
    ).fetchone()
    if row is None:
        if version_id is None:
            raise NoServingIndexError(
                "no index version has been promoted yet: run the pipeline first"
            )
        raise UnknownIndexVersionError(f"index version {version_id} does not exist")
    return ResolvedVersion(int(row[0]), str(row[1]), bool(row[2]), bool(row[3]))


def check_model(version: ResolvedVersion, model_key: str) -> None:
    """Refuse a query vector from another model than the version's (they are not comparable)."""
    if version.model_key != model_key:
        label = "serving version" if version.serving else "index version"
        raise NoServingIndexError(
            f"{label} {version.version_id} was embedded with {version.model_key}, "
            f"but the query embedder is {model_key}"
        )
