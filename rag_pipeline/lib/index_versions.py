"""Versioned serving indexes: build a candidate, diff it, promote it atomically, roll back.

A version is a set of chunk memberships (plus each document's ACL at that time) over the shared
chunk and embedding tables, so building one copies no vectors and re-indexing an unchanged corpus
costs nothing. The `rag.active_index` row is the only thing search reads to pick a version;
promotion and rollback rewrite it in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Arbitrary constant: one index build at a time across all processes.
INDEX_BUILD_LOCK_KEY = 7_320_114_002
DIFF_LIST_LIMIT = 200


class IndexVersionError(RuntimeError):
    """A version does not exist or cannot take the requested transition."""


class PromotionBlockedError(IndexVersionError):
    """A version's blocking quality gates have not all passed."""


@dataclass(frozen=True)
class IndexKeys:
    model_key: str
    parser_key: str
    chunker_key: str


@dataclass(frozen=True)
class Candidate:
    version_id: int
    created: bool
    status: str
    document_count: int
    chunk_count: int
    diff: dict[str, Any]


@dataclass(frozen=True)
class VersionInfo:
    version_id: int
    status: str
    model_key: str
    parser_key: str
    chunker_key: str
    document_count: int
    chunk_count: int
    created_at: Any
    promoted_at: Any
    failed_checks: list[str]


def active_version_id(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT version_id FROM rag.active_index").fetchone()
    return int(row[0]) if row else None


def build_candidate(
    conn: psycopg.Connection, keys: IndexKeys, run_id: str | None = None
) -> Candidate:
    """Create the version the current corpus state defines, or find the identical existing one.

    Runs in one REPEATABLE READ transaction, so the snapshot hash and the membership rows
    describe the same state even while other partitions keep writing; a crash leaves nothing.
    """
    params = {"model": keys.model_key, "parser": keys.parser_key, "chunker": keys.chunker_key}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_BUILD_LOCK_KEY,))
        chunk_count, document_count, snapshot = conn.execute(
            """
            SELECT count(*), count(DISTINCT doc_id),
                   md5(coalesce(string_agg(
                       chunk_id || ':' || tenant || ':' || array_to_string(acl_principals, ','),
                       '|' ORDER BY chunk_id), ''))
            FROM rag.current_chunks(%(model)s, %(parser)s, %(chunker)s)
            """,
            params,
        ).fetchone()
        existing = conn.execute(
            "SELECT version_id, status, diff FROM rag.index_versions"
            " WHERE model_key = %(model)s AND parser_key = %(parser)s"
            " AND chunker_key = %(chunker)s AND corpus_snapshot = %(snapshot)s",
            {**params, "snapshot": snapshot},
        ).fetchone()
        if existing is not None:
            version_id, status, diff = existing
            # An unchanged corpus does no lexical work, except once for a version built before
            # lexical statistics existed (normally backfilled by sql/007 already).
            ensure_lexical_statistics(conn, version_id)
            return Candidate(version_id, False, status, document_count, chunk_count, diff)
        # Looked up first rather than ON CONFLICT, which would burn an identity value on every
        # no-op run; the advisory lock above means no concurrent build can insert in between.
        version_id = conn.execute(
            """
            INSERT INTO rag.index_versions (model_key, parser_key, chunker_key, corpus_snapshot,
                document_count, chunk_count, run_id)
            VALUES (%(model)s, %(parser)s, %(chunker)s, %(snapshot)s, %(documents)s,
                %(chunks)s, %(run_id)s)
            RETURNING version_id
            """,
            {
                **params,
                "snapshot": snapshot,
                "documents": document_count,
                "chunks": chunk_count,
                "run_id": run_id,
            },
        ).fetchone()[0]
        conn.execute(
            """
            INSERT INTO rag.index_version_chunks (version_id, chunk_id, doc_id, tenant,
                acl_principals)
            SELECT %(version)s, chunk_id, doc_id, tenant, acl_principals
            FROM rag.current_chunks(%(model)s, %(parser)s, %(chunker)s)
            """,
            {**params, "version": version_id},
        )
        # In the same transaction as the memberships: a version never exists without its
        # BM25 statistics. Only chunks never indexed before are tokenized (sql/007).
        conn.execute("SELECT rag.build_lexical_statistics(%s)", (version_id,))
        diff = diff_versions(conn, version_id, active_version_id(conn))
        conn.execute(
            "UPDATE rag.index_versions SET diff = %s WHERE version_id = %s",
            (Jsonb(diff), version_id),
        )
    # Fresh statistics before the version can serve: with the new memberships unknown to the
    # planner, search drives from the wrong table instead of the HNSW index (20x slower).
    conn.execute(
        "ANALYZE rag.index_version_chunks, rag.chunks, rag.embeddings, rag.chunk_terms,"
        " rag.index_version_terms"
    )
    return Candidate(version_id, True, "candidate", document_count, chunk_count, diff)


def ensure_lexical_statistics(conn: psycopg.Connection, version_id: int) -> bool:
    """Compute the version's BM25 statistics if it has none yet; True if it computed them."""
    row = conn.execute(
        "SELECT lexical_stats_at IS NULL FROM rag.index_versions WHERE version_id = %s",
        (version_id,),
    ).fetchone()
    if row is None:
        raise IndexVersionError(f"index version {version_id} does not exist")
    if not row[0]:
        return False
    conn.execute("SELECT rag.build_lexical_statistics(%s)", (version_id,))
    return True


def diff_versions(conn: psycopg.Connection, version_id: int, base_id: int | None) -> dict[str, Any]:
    """What changes for readers if `version_id` replaces `base_id` (None: an empty index)."""
    documents = conn.execute(
        """
        WITH new AS (
            SELECT doc_id, tenant, acl_principals, array_agg(chunk_id ORDER BY chunk_id) AS chunks
            FROM rag.index_version_chunks WHERE version_id = %(new)s
            GROUP BY doc_id, tenant, acl_principals),
        old AS (
            SELECT doc_id, tenant, acl_principals, array_agg(chunk_id ORDER BY chunk_id) AS chunks
            FROM rag.index_version_chunks WHERE version_id = %(old)s
            GROUP BY doc_id, tenant, acl_principals)
        SELECT coalesce(new.doc_id, old.doc_id) AS doc_id,
               old.doc_id IS NULL AS added,
               new.doc_id IS NULL AS removed,
               new.chunks IS DISTINCT FROM old.chunks AS content_changed,
               (new.acl_principals IS DISTINCT FROM old.acl_principals
                OR new.tenant IS DISTINCT FROM old.tenant) AS acl_changed
        FROM new FULL OUTER JOIN old ON new.doc_id = old.doc_id
        ORDER BY 1
        """,
        {"new": version_id, "old": base_id},
    ).fetchall()
    added = [row[0] for row in documents if row[1]]
    removed = [row[0] for row in documents if row[2]]
    changed = [row[0] for row in documents if not row[1] and not row[2] and row[3]]
    acl_changed = [row[0] for row in documents if not row[1] and not row[2] and row[4]]
    chunks_added, chunks_removed, chunks_kept = conn.execute(
        """
        SELECT count(*) FILTER (WHERE old.chunk_id IS NULL),
               count(*) FILTER (WHERE new.chunk_id IS NULL),
               count(*) FILTER (WHERE new.chunk_id IS NOT NULL AND old.chunk_id IS NOT NULL)
        FROM (SELECT chunk_id FROM rag.index_version_chunks WHERE version_id = %(new)s) new
        FULL OUTER JOIN (SELECT chunk_id FROM rag.index_version_chunks
                         WHERE version_id = %(old)s) old ON new.chunk_id = old.chunk_id
        """,
        {"new": version_id, "old": base_id},
    ).fetchone()
    keys = conn.execute(
        "SELECT v.model_key, v.parser_key, v.chunker_key, b.model_key, b.parser_key,"
        " b.chunker_key FROM rag.index_versions v"
        " LEFT JOIN rag.index_versions b ON b.version_id = %(old)s"
        " WHERE v.version_id = %(new)s",
        {"new": version_id, "old": base_id},
    ).fetchone()

    def listed(ids: list[str]) -> dict[str, Any]:
        return {"count": len(ids), "ids": ids[:DIFF_LIST_LIMIT]}

    return {
        "base_version": base_id,
        "documents": {
            "added": listed(added),
            "removed": listed(removed),
            "changed": listed(changed),
            "acl_changed": listed(acl_changed),
        },
        "chunks": {"added": chunks_added, "removed": chunks_removed, "unchanged": chunks_kept},
        "model_changed": base_id is not None and keys[0] != keys[3],
        "parser_changed": base_id is not None and keys[1] != keys[4],
        "chunker_changed": base_id is not None and keys[2] != keys[5],
    }


def record_check(
    conn: psycopg.Connection,
    version_id: int,
    check_name: str,
    passed: bool,
    blocking: bool,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        """
        INSERT INTO rag.index_version_checks (version_id, check_name, passed, blocking, detail)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (version_id, check_name) DO UPDATE SET passed = EXCLUDED.passed,
            blocking = EXCLUDED.blocking, detail = EXCLUDED.detail, checked_at = now()
        """,
        (version_id, check_name, passed, blocking, Jsonb(detail)),
    )
    # A version is 'rejected' exactly while one of its blocking checks stands failed.
    conn.execute(
        """
        UPDATE rag.index_versions v SET status = CASE
            WHEN EXISTS (SELECT 1 FROM rag.index_version_checks c WHERE c.version_id = v.version_id
                         AND c.blocking AND NOT c.passed) THEN 'rejected' ELSE 'candidate' END
        WHERE v.version_id = %s AND v.status IN ('candidate', 'rejected')
        """,
        (version_id,),
    )


def promote(
    conn: psycopg.Connection,
    version_id: int,
    *,
    actor: str,
    required_checks: tuple[str, ...],
    reason: str | None = None,
    action: str = "promote",
) -> bool:
    """Make `version_id` the serving version; returns False if it already was.

    Refuses unless every name in `required_checks` was recorded for this version and passed, and
    no blocking check failed. Readers see the old or the new version, never a mix.
    """
    with conn.transaction():
        current = conn.execute("SELECT version_id FROM rag.active_index FOR UPDATE").fetchone()
        current_id = int(current[0]) if current else None
        row = conn.execute(
            "SELECT status FROM rag.index_versions WHERE version_id = %s FOR UPDATE",
            (version_id,),
        ).fetchone()
        if row is None:
            raise IndexVersionError(f"index version {version_id} does not exist")
        if current_id == version_id:
            return False
        checks = dict(
            conn.execute(
                "SELECT check_name, passed FROM rag.index_version_checks"
                " WHERE version_id = %s AND (blocking OR check_name = ANY(%s))",
                (version_id, list(required_checks)),
            ).fetchall()
        )
        failed = sorted(name for name, passed in checks.items() if not passed)
        missing = sorted(set(required_checks) - set(checks))
        if failed or missing:
            raise PromotionBlockedError(
                f"index version {version_id} cannot be promoted: "
                + "; ".join(
                    part
                    for part in (
                        f"failed checks {failed}" if failed else "",
                        f"checks never run {missing}" if missing else "",
                    )
                    if part
                )
            )
        if current_id is not None:
            conn.execute(
                "UPDATE rag.index_versions SET status = 'retired' WHERE version_id = %s",
                (current_id,),
            )
        conn.execute(
            "UPDATE rag.index_versions SET status = 'active', promoted_at = now()"
            " WHERE version_id = %s",
            (version_id,),
        )
        conn.execute(
            "INSERT INTO rag.active_index (singleton, version_id) VALUES (true, %s)"
            " ON CONFLICT (singleton) DO UPDATE SET version_id = EXCLUDED.version_id,"
            " switched_at = now()",
            (version_id,),
        )
        conn.execute(
            "INSERT INTO rag.index_promotions (action, from_version, to_version, actor, reason)"
            " VALUES (%s, %s, %s, %s, %s)",
            (action, current_id, version_id, actor, reason),
        )
    return True


def rollback(conn: psycopg.Connection, *, actor: str, reason: str | None = None) -> int:
    """Re-point serving to the version that was active before the current one."""
    current_id = active_version_id(conn)
    if current_id is None:
        raise IndexVersionError("no active index version to roll back from")
    row = conn.execute(
        "SELECT p.from_version FROM rag.index_promotions p"
        " JOIN rag.index_versions v ON v.version_id = p.from_version"
        " WHERE p.to_version = %s ORDER BY p.promotion_id DESC LIMIT 1",
        (current_id,),
    ).fetchone()
    if row is None or row[0] is None:
        raise IndexVersionError(f"version {current_id} has no earlier version to roll back to")
    previous_id = int(row[0])
    # The previous version passed its gates when it was promoted; they are not re-run.
    promote(conn, previous_id, actor=actor, required_checks=(), reason=reason, action="rollback")
    return previous_id


def list_versions(conn: psycopg.Connection, limit: int = 20) -> list[VersionInfo]:
    rows = conn.execute(
        """
        SELECT v.version_id, v.status, v.model_key, v.parser_key, v.chunker_key,
               v.document_count, v.chunk_count, v.created_at, v.promoted_at,
               coalesce(array_agg(c.check_name ORDER BY c.check_name)
                        FILTER (WHERE c.blocking AND NOT c.passed), '{}')
        FROM rag.index_versions v
        LEFT JOIN rag.index_version_checks c ON c.version_id = v.version_id
        GROUP BY v.version_id
        ORDER BY v.version_id DESC
        LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [VersionInfo(*row[:9], failed_checks=list(row[9])) for row in rows]


def version_diff(conn: psycopg.Connection, version_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT diff FROM rag.index_versions WHERE version_id = %s", (version_id,)
    ).fetchone()
    if row is None:
        raise IndexVersionError(f"index version {version_id} does not exist")
    return dict(row[0])


@dataclass(frozen=True)
class GarbageCollection:
    versions_removed: list[int]
    chunks_removed: int
    parses_removed: int
    embeddings_removed: int
    blobs_removed: int
    lexical_postings_removed: int = 0


def garbage_collect(conn: psycopg.Connection, keep: int) -> GarbageCollection:
    """Drop all but the newest `keep` versions (never the serving one or its rollback target),
    then whatever no remaining version and no live document still needs.

    One transaction under the build lock, so it never races a candidate build.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_BUILD_LOCK_KEY,))
        removed = [
            row[0]
            for row in conn.execute(
                """
                DELETE FROM rag.index_versions v
                WHERE v.version_id NOT IN (
                        SELECT version_id FROM rag.index_versions
                        ORDER BY version_id DESC LIMIT %(keep)s)
                  AND v.version_id NOT IN (SELECT version_id FROM rag.active_index)
                  AND v.version_id NOT IN (
                        SELECT p.from_version FROM rag.index_promotions p
                        JOIN rag.active_index a ON a.version_id = p.to_version
                        WHERE p.from_version IS NOT NULL)
                RETURNING v.version_id
                """,
                {"keep": keep},
            ).fetchall()
        ]
        chunks_removed = conn.execute(
            """
            DELETE FROM rag.chunks c
            WHERE NOT EXISTS (SELECT 1 FROM rag.index_version_chunks m
                              WHERE m.chunk_id = c.chunk_id)
              AND NOT EXISTS (SELECT 1 FROM rag.documents d
                              WHERE d.doc_id = c.doc_id AND d.content_hash = c.content_hash
                                AND d.deleted_at IS NULL)
            """
        ).rowcount
        # Postings have no foreign key (it would need a second index on chunk_id): the ones of
        # removed chunks go here, in the same transaction. A version's statistics go with the
        # version (ON DELETE CASCADE).
        lexical_postings_removed = 0
        if chunks_removed:
            lexical_postings_removed = conn.execute(
                """
                DELETE FROM rag.chunk_terms t
                WHERE NOT EXISTS (SELECT 1 FROM rag.chunks c WHERE c.chunk_id = t.chunk_id)
                """
            ).rowcount
        parses_removed = conn.execute(
            """
            DELETE FROM rag.parsed_documents p
            WHERE NOT EXISTS (SELECT 1 FROM rag.chunks c
                              WHERE c.doc_id = p.doc_id AND c.content_hash = p.content_hash)
              AND NOT EXISTS (SELECT 1 FROM rag.documents d
                              WHERE d.doc_id = p.doc_id AND d.content_hash = p.content_hash
                                AND d.deleted_at IS NULL)
            """
        ).rowcount
        embeddings_removed = conn.execute(
            """
            DELETE FROM rag.embeddings e
            WHERE NOT EXISTS (SELECT 1 FROM rag.chunks c WHERE c.text_hash = e.text_hash)
            """
        ).rowcount
        blobs_removed = conn.execute(
            """
            DELETE FROM rag.source_blobs b
            WHERE NOT EXISTS (SELECT 1 FROM rag.chunks c WHERE c.content_hash = b.content_hash)
              AND NOT EXISTS (SELECT 1 FROM rag.documents d
                              WHERE d.content_hash = b.content_hash AND d.deleted_at IS NULL)
            """
        ).rowcount
    return GarbageCollection(
        removed,
        chunks_removed,
        parses_removed,
        embeddings_removed,
        blobs_removed,
        lexical_postings_removed,
    )
