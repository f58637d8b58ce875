"""Chunks cut straight from parses, without the redaction step.

The pipeline's chunking asset chunks redacted documents (`stores.redaction`); this path is what
the benchmarks and the tests that skip redaction use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import psycopg

from rag_pipeline.lib.chunking import Chunk
from rag_pipeline.lib.stores.pending import PendingDocument
from rag_pipeline.lib.stores.quarantine import release_quarantine


def documents_to_chunk(
    conn: psycopg.Connection, source: str, parser_key: str, chunker_key: str
) -> list[PendingDocument]:
    rows = conn.execute(
        """
        SELECT d.doc_id, d.source, d.uri, d.relative_path, d.content_hash, d.mime_type,
               d.encoding, d.title
        FROM rag.parsed_documents_of(%(source)s, %(parser)s) d
        WHERE NOT EXISTS (SELECT 1 FROM rag.quarantine q
                          WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
                            AND NOT (q.stage = 'chunk' AND q.processor_key <> %(chunker)s))
          AND NOT EXISTS (SELECT 1 FROM rag.chunks c
                          WHERE c.doc_id = d.doc_id AND c.content_hash = d.content_hash
                            AND c.parser_key = %(parser)s AND c.chunker_key = %(chunker)s)
        ORDER BY d.doc_id
        """,
        {"source": source, "parser": parser_key, "chunker": chunker_key},
    ).fetchall()
    return [PendingDocument(*row) for row in rows]


def chunk_id_for(doc: PendingDocument, parser_key: str, chunker_key: str, ordinal: int) -> str:
    key = f"{doc.doc_id}\x1f{doc.content_hash}\x1f{parser_key}\x1f{chunker_key}\x1f{ordinal}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def save_chunks(
    conn: psycopg.Connection,
    doc: PendingDocument,
    parser_key: str,
    chunker_key: str,
    chunks: Sequence[Chunk],
) -> int:
    release_quarantine(conn, doc, "chunk")
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO rag.chunks (chunk_id, doc_id, content_hash, parser_key, chunker_key,
                ordinal, text, search_text, text_hash, token_count, heading_path,
                element_start, element_end, char_start, char_end, page_numbers)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (chunk_id) DO NOTHING
            """,
            [
                (
                    chunk_id_for(doc, parser_key, chunker_key, chunk.ordinal),
                    doc.doc_id,
                    doc.content_hash,
                    parser_key,
                    chunker_key,
                    chunk.ordinal,
                    chunk.text,
                    chunk.search_text,
                    chunk.text_hash,
                    chunk.token_count,
                    list(chunk.heading_path),
                    chunk.element_start,
                    chunk.element_end,
                    chunk.char_start,
                    chunk.char_end,
                    list(chunk.page_numbers),
                )
                for chunk in chunks
            ],
        )
    return len(chunks)
