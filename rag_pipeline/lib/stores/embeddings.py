"""The embedding stage: texts of current chunks still without a vector, and the vectors.

Vectors are cached by (model, text hash), so an identical text in any document is embedded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import psycopg


def texts_to_embed(
    conn: psycopg.Connection, source: str, parser_key: str, chunker_key: str, model_key: str
) -> list[tuple[str, str]]:
    """(text hash, text) of the source's current chunks with no cached embedding for the model."""
    return conn.execute(
        """
        SELECT DISTINCT ON (c.text_hash) c.text_hash, c.search_text
        FROM rag.live_chunks(%s, %s) c
        WHERE c.source = %s
          AND NOT EXISTS (SELECT 1 FROM rag.embeddings e
                          WHERE e.model_key = %s AND e.text_hash = c.text_hash)
        ORDER BY c.text_hash
        """,
        (parser_key, chunker_key, source, model_key),
    ).fetchall()


def count_current_chunks(
    conn: psycopg.Connection, source: str, parser_key: str, chunker_key: str
) -> int:
    row = conn.execute(
        """
        SELECT count(*) FROM rag.live_chunks(%s, %s) c WHERE c.source = %s
        """,
        (parser_key, chunker_key, source),
    ).fetchone()
    return int(row[0]) if row else 0


def save_embeddings(
    conn: psycopg.Connection, model_key: str, text_hashes: Sequence[str], vectors: np.ndarray
) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO rag.embeddings (model_key, text_hash, embedding) VALUES (%s, %s, %s)"
            " ON CONFLICT (model_key, text_hash) DO NOTHING",
            [
                (model_key, text_hash, vector)
                for text_hash, vector in zip(text_hashes, vectors, strict=True)
            ],
        )


def stored_dimension(conn: psycopg.Connection) -> int:
    """The size of the vectors `rag.embeddings` stores (pgvector keeps it as the type modifier)."""
    row = conn.execute(
        """
        SELECT a.atttypmod FROM pg_attribute a
        WHERE a.attrelid = 'rag.embeddings'::regclass AND a.attname = 'embedding'
        """
    ).fetchone()
    if row is None or int(row[0]) <= 0:
        raise RuntimeError("rag.embeddings.embedding has no fixed dimension; see sql/003")
    return int(row[0])
