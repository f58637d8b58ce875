"""Dense leg: nearest chunks by cosine similarity among those the reader may read.

HNSW (pgvector) with a strict iterative scan, so filtering by permissions inside the scan never
returns fewer rows than asked while readable ones remain; a reader admitted to only a few
chunks is searched exactly instead (faster there, and exact). "May read" is
`rag.readable_chunks` (sql/006_serving_permissions.sql): the version's ACL snapshot and the
document's current state must both allow it.
"""

from __future__ import annotations

import numpy as np
import psycopg

from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.retrieval.hits import SearchHit
from rag_pipeline.lib.retrieval.hydrate import RankedChunk, load_hits
from rag_pipeline.lib.retrieval.session import serving_transaction
from rag_pipeline.lib.retrieval.versions import check_model, resolve_version

HNSW_EF_SEARCH = 400
# A reader whose version snapshot admits at most this many chunks is searched exactly: distances
# to all of them, sorted. At 100,000 chunks, for a reader of 1% (1,131 chunks) that took 15 ms
# (p50, top 10) against 75-110 ms for the HNSW scan, which walks about 100 index tuples per
# row it returns, at recall@10 0.92-0.95 (benchmarks/bench_query.py).
EXACT_SCAN_MAX_CHUNKS = 2000

# (chunk id, cosine similarity), best first.
VectorCandidates = list[tuple[str, float]]


def configure_vector_scan(conn: psycopg.Connection) -> None:
    """Per-transaction settings of the HNSW scan; call inside the query's transaction."""
    # Let the HNSW scan keep going until enough rows survive the permission filter, in exact
    # distance order. A wider candidate list than pgvector's default of 40: for a reader allowed
    # 10% of rows, recall@10 went from 0.86 to 0.92 for about 1 ms at 20,000 chunks
    # (benchmarks/bench_search_scaling.py); at 100,000 chunks derived from SciFact, 200 gave
    # recall@10 0.94 for readers of 10% and of a whole tenant (single queries at 0.0: a
    # candidate list stuck in a dense cluster), 400 gave 0.98-0.99 at the same latency
    # (benchmarks/bench_query.py).
    conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(HNSW_EF_SEARCH),))


def vector_candidates(
    conn: psycopg.Connection,
    version_id: int,
    query_vector: np.ndarray,
    model_key: str,
    access: UserAccess,
    limit: int,
) -> VectorCandidates:
    """The `limit` nearest readable chunks of `version_id`; run after `configure_vector_scan`."""
    params = {
        "query": query_vector,
        "version": version_id,
        "model": model_key,
        "tenant": access.tenant,
        "principals": list(access.principals),
        "limit": limit,
    }
    # How many chunks the version's snapshot admits for this reader, counted up to the cap
    # (a necessary condition of `rag.readable_chunks`; a few milliseconds at most).
    admitted = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT 1 FROM rag.index_version_chunks m
            WHERE m.version_id = %(version)s AND m.tenant = %(tenant)s
              AND m.acl_principals && %(principals)s::text[]
            LIMIT %(cap)s) s
        """,
        {**params, "cap": EXACT_SCAN_MAX_CHUNKS + 1},
        prepare=False,
    ).fetchone()[0]
    if admitted <= EXACT_SCAN_MAX_CHUNKS:
        # Exact: the distance to every readable chunk. The CTE has no ORDER BY, so the HNSW
        # index cannot drive it; the same rule, `rag.readable_chunks`, selects the rows.
        rows = conn.execute(
            """
            WITH candidates AS MATERIALIZED (
                SELECT c.chunk_id, e.embedding <=> %(query)s AS distance
                FROM rag.readable_chunks(%(version)s, %(tenant)s, %(principals)s::text[]) r
                JOIN rag.chunks c ON c.chunk_id = r.chunk_id
                JOIN rag.embeddings e ON e.model_key = %(model)s AND e.text_hash = c.text_hash
            )
            SELECT chunk_id, 1 - distance AS score
            FROM candidates
            ORDER BY distance
            LIMIT %(limit)s
            """,
            params,
            prepare=False,
        ).fetchall()
        return [(str(chunk_id), float(score)) for chunk_id, score in rows]
    rows = conn.execute(
        """
        SELECT c.chunk_id, 1 - (e.embedding <=> %(query)s) AS score
        FROM rag.embeddings e
        JOIN rag.chunks c ON c.text_hash = e.text_hash
        JOIN rag.readable_chunks(%(version)s, %(tenant)s, %(principals)s::text[]) r
          ON r.chunk_id = c.chunk_id
        WHERE e.model_key = %(model)s
        ORDER BY e.embedding <=> %(query)s
        LIMIT %(limit)s
        """,
        params,
        # Never a server-side prepared statement: psycopg prepares after five executions, and
        # the generic plan that follows cannot see the version or filters and falls back to a
        # sequential scan plus sort (50 ms instead of 2 ms at 20k chunks).
        prepare=False,
    ).fetchall()
    return [(str(chunk_id), float(score)) for chunk_id, score in rows]


def vector_search(
    conn: psycopg.Connection,
    query_vector: np.ndarray,
    model_key: str,
    access: UserAccess,
    limit: int = 5,
) -> list[SearchHit]:
    """Nearest chunks of the serving version by cosine similarity, best first (dense only).

    Kept for callers that already hold a query vector (benchmarks, the permission fuzz test);
    `rag_pipeline.lib.retrieval.retrieve` is the entry point for everything else.
    """
    with serving_transaction(conn, access):
        configure_vector_scan(conn)
        version = resolve_version(conn, None)
        check_model(version, model_key)
        found = vector_candidates(conn, version.version_id, query_vector, model_key, access, limit)
        return load_hits(
            conn,
            version.version_id,
            [
                RankedChunk(chunk_id, score, {"vector": score}, {"vector": rank})
                for rank, (chunk_id, score) in enumerate(found, 1)
            ],
        )
