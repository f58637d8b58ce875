"""Pseudo-relevance feedback for the dense leg: move the query vector towards the best chunks.

Rocchio's rule on embeddings: q' = normalise((1 - w) * q + w * mean(top-n chunk vectors)), where
the top n come from the first round's final ranking (fused, in hybrid mode), so the lexical leg's
evidence also steers the second dense round. Offline, no model beyond the embedder, one extra
index scan. Measured on SciFact (reports/eval.md): it helps on the half the parameters were chosen
on and is within noise on the held-out half, so it is off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import psycopg


def expanded_query_vector(
    conn: psycopg.Connection,
    query_vector: np.ndarray,
    feedback_chunk_ids: Sequence[str],
    model_key: str,
    weight: float,
) -> np.ndarray:
    """The query vector moved `weight` of the way towards the mean of the chunks' embeddings.

    The chunk ids come from the reader's own first-round result, so they are already filtered by
    permissions; chunks without an embedding of this model are skipped, and with none left the
    query vector is returned unchanged.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"feedback weight must be between 0 and 1 (got {weight})")
    if weight == 0 or not feedback_chunk_ids:
        return query_vector
    rows = conn.execute(
        "SELECT e.embedding FROM rag.chunks c"
        " JOIN rag.embeddings e ON e.text_hash = c.text_hash AND e.model_key = %s"
        " WHERE c.chunk_id = ANY(%s)",
        (model_key, list(feedback_chunk_ids)),
        prepare=False,
    ).fetchall()
    if not rows:
        return query_vector
    centroid = np.mean([_as_array(row[0]) for row in rows], axis=0)
    moved = (1.0 - weight) * np.asarray(query_vector, dtype=np.float32) + weight * centroid
    norm = float(np.linalg.norm(moved))
    return moved / norm if norm else query_vector


def _as_array(value: object) -> np.ndarray:
    # pgvector's psycopg adapter returns a `Vector` where registered, a numpy array otherwise.
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)
