"""Quality gates an index version must pass before it may serve.

Plain functions over a connection, so they are testable without Dagster; the Dagster asset checks
call them and record their outcome in `rag.index_version_checks`, where promotion reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from rag_pipeline.lib.index_versions import IndexKeys

EXPECTED_DIMENSION = 384
UNIT_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


def candidate_covers_live_documents(
    conn: psycopg.Connection, version_id: int, keys: IndexKeys
) -> GateResult:
    """Every live, unquarantined document has all its current chunks, embedded, in the version."""
    missing_docs, unembedded = conn.execute(
        """
        WITH expected AS (
            SELECT c.doc_id, c.chunk_id, c.text_hash
            FROM rag.live_chunks(%(parser)s, %(chunker)s) c)
        SELECT
            (SELECT array_agg(DISTINCT d.doc_id ORDER BY d.doc_id) FROM rag.live_documents d
             WHERE NOT EXISTS (SELECT 1 FROM rag.index_version_chunks m
                               WHERE m.version_id = %(version)s AND m.doc_id = d.doc_id)),
            (SELECT count(*) FROM expected x
             WHERE NOT EXISTS (SELECT 1 FROM rag.embeddings e
                               WHERE e.model_key = %(model)s AND e.text_hash = x.text_hash))
        """,
        {
            "parser": keys.parser_key,
            "chunker": keys.chunker_key,
            "model": keys.model_key,
            "version": version_id,
        },
    ).fetchone()
    missing = list(missing_docs or [])
    passed = not missing and unembedded == 0
    return GateResult(
        "candidate_covers_live_documents",
        passed,
        "all live documents are fully indexed"
        if passed
        else f"{len(missing)} live documents missing, {unembedded} chunks without embeddings: "
        "materialize the upstream partitions first",
        {
            "missing_documents": missing[:50],
            "missing_document_count": len(missing),
            "chunks_without_embedding": unembedded,
        },
    )


def chunks_within_token_budget(
    conn: psycopg.Connection, version_id: int, budget: int
) -> GateResult:
    """No chunk exceeds the embedder's budget, so nothing is silently truncated when embedded."""
    over, longest = conn.execute(
        "SELECT count(*) FILTER (WHERE c.token_count > %s), coalesce(max(c.token_count), 0)"
        " FROM rag.index_version_chunks m JOIN rag.chunks c ON c.chunk_id = m.chunk_id"
        " WHERE m.version_id = %s",
        (budget, version_id),
    ).fetchone()
    return GateResult(
        "chunks_within_token_budget",
        over == 0,
        f"longest chunk {longest} tokens, budget {budget}, {over} over budget",
        {"chunks_over_budget": over, "longest_chunk_tokens": longest, "budget": budget},
    )


def embeddings_are_unit_vectors(
    conn: psycopg.Connection, version_id: int, model_key: str
) -> GateResult:
    """Every embedding has the expected dimension and unit length (cosine = inner product)."""
    bad, total = conn.execute(
        """
        SELECT count(*) FILTER (WHERE vector_dims(e.embedding) <> %(dim)s
                                   OR abs(vector_norm(e.embedding) - 1) > %(tol)s),
               count(*)
        FROM rag.index_version_chunks m
        JOIN rag.chunks c ON c.chunk_id = m.chunk_id
        JOIN rag.embeddings e ON e.model_key = %(model)s AND e.text_hash = c.text_hash
        WHERE m.version_id = %(version)s
        """,
        {
            "dim": EXPECTED_DIMENSION,
            "tol": UNIT_NORM_TOLERANCE,
            "model": model_key,
            "version": version_id,
        },
    ).fetchone()
    return GateResult(
        "embeddings_are_unit_vectors",
        bad == 0 and total > 0,
        f"{total} embeddings checked, {bad} malformed",
        {"embeddings_checked": total, "malformed": bad, "dimension": EXPECTED_DIMENSION},
    )


def no_unexpected_document_loss(
    conn: psycopg.Connection, version_id: int, max_removed_fraction: float
) -> GateResult:
    """The candidate does not drop more than a set fraction of the serving version's documents.

    Catches an unmounted share or an expired credential that makes a source look empty.
    """
    row = conn.execute(
        """
        SELECT (SELECT count(DISTINCT doc_id) FROM rag.index_version_chunks m
                WHERE m.version_id = a.version_id),
               (SELECT count(DISTINCT o.doc_id) FROM rag.index_version_chunks o
                WHERE o.version_id = a.version_id AND NOT EXISTS (
                    SELECT 1 FROM rag.index_version_chunks n
                    WHERE n.version_id = %s AND n.doc_id = o.doc_id))
        FROM rag.active_index a
        """,
        (version_id,),
    ).fetchone()
    if row is None:
        return GateResult("no_unexpected_document_loss", True, "no serving version yet", {})
    active_docs, removed = row
    fraction = removed / active_docs if active_docs else 0.0
    return GateResult(
        "no_unexpected_document_loss",
        fraction <= max_removed_fraction,
        f"{removed} of {active_docs} serving documents would disappear ({fraction:.0%}, "
        f"limit {max_removed_fraction:.0%})",
        {
            "removed_documents": removed,
            "serving_documents": active_docs,
            "removed_fraction": round(fraction, 4),
            "limit": max_removed_fraction,
        },
    )


def chunks_trace_to_source(conn: psycopg.Connection, version_id: int) -> GateResult:
    """Every chunk leads back to its document, its parsed elements and the stored source bytes."""
    broken = conn.execute(
        """
        SELECT count(*)
        FROM rag.index_version_chunks m
        JOIN rag.chunks c ON c.chunk_id = m.chunk_id
        LEFT JOIN rag.documents d ON d.doc_id = c.doc_id
        LEFT JOIN rag.source_blobs b ON b.content_hash = c.content_hash
        LEFT JOIN rag.parsed_documents p ON p.doc_id = c.doc_id
            AND p.content_hash = c.content_hash AND p.parser_key = c.parser_key
        WHERE m.version_id = %s
          AND (d.doc_id IS NULL OR b.content_hash IS NULL OR p.doc_id IS NULL
               OR c.element_end > p.element_count OR c.char_end < c.char_start)
        """,
        (version_id,),
    ).fetchone()[0]
    return GateResult(
        "chunks_trace_to_source",
        broken == 0,
        f"{broken} chunks without a complete lineage to their source bytes",
        {"chunks_without_lineage": broken},
    )


# Names of the gates that must have passed for a version to be promoted.
BLOCKING_GATES = (
    "candidate_covers_live_documents",
    "chunks_within_token_budget",
    "embeddings_are_unit_vectors",
    "no_unexpected_document_loss",
    "chunks_trace_to_source",
)

# Every check that must have passed for a version to serve: the gates above, the Great
# Expectations suite on its chunks (`rag_pipeline.lib.chunk_expectations`, a check of its own),
# the canary leak probes (`rag_pipeline.lib.canary_probes`, a check of its own) and the
# retrieval quality gate of its evaluation report (`rag_pipeline.lib.evaluation`).
PROMOTION_CHECKS = (
    *BLOCKING_GATES,
    "chunk_expectations",
    "no_canary_leaks",
    "retrieval_quality_not_regressed",
)
