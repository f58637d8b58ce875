"""The parse stage: documents still to parse, their stored bytes, their parsed elements."""

from __future__ import annotations

import json

import psycopg
from psycopg.types.json import Jsonb

from rag_pipeline.lib.parsing import ParsedDocument, ParsedElement
from rag_pipeline.lib.stores.pending import PendingDocument
from rag_pipeline.lib.stores.quarantine import release_quarantine


def documents_to_parse(
    conn: psycopg.Connection, source: str, parser_key: str
) -> list[PendingDocument]:
    rows = conn.execute(
        """
        SELECT d.doc_id, d.source, d.uri, d.relative_path, d.content_hash, d.mime_type,
               d.encoding, d.title
        FROM rag.documents d
        WHERE d.source = %(source)s AND d.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM rag.quarantine q
                          WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
                            AND NOT (q.stage = 'parse' AND q.processor_key <> %(parser)s))
          AND NOT EXISTS (SELECT 1 FROM rag.parsed_documents p
                          WHERE p.doc_id = d.doc_id AND p.content_hash = d.content_hash
                            AND p.parser_key = %(parser)s)
        ORDER BY d.doc_id
        """,
        {"source": source, "parser": parser_key},
    ).fetchall()
    return [PendingDocument(*row) for row in rows]


def load_blob(conn: psycopg.Connection, content_hash: str) -> bytes:
    row = conn.execute(
        "SELECT content FROM rag.source_blobs WHERE content_hash = %s", (content_hash,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no stored bytes for content hash {content_hash}")
    return bytes(row[0])


def save_parsed(
    conn: psycopg.Connection, doc: PendingDocument, parser_key: str, parsed: ParsedDocument
) -> None:
    release_quarantine(conn, doc, "parse")
    conn.execute(
        """
        INSERT INTO rag.parsed_documents (doc_id, content_hash, parser_key, title, elements,
            element_count, text_chars, duration_ms)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (doc_id, content_hash, parser_key) DO NOTHING
        """,
        (
            doc.doc_id,
            doc.content_hash,
            parser_key,
            parsed.title,
            Jsonb([element.to_json() for element in parsed.elements]),
            len(parsed.elements),
            parsed.text_chars,
            parsed.duration_ms,
        ),
    )


def load_parsed_elements(
    conn: psycopg.Connection, doc_id: str, content_hash: str, parser_key: str
) -> list[ParsedElement]:
    row = conn.execute(
        "SELECT elements FROM rag.parsed_documents"
        " WHERE doc_id = %s AND content_hash = %s AND parser_key = %s",
        (doc_id, content_hash, parser_key),
    ).fetchone()
    if row is None:
        raise LookupError(f"{doc_id} has no parse for {content_hash[:12]} by {parser_key}")
    elements = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return [ParsedElement.from_json(element) for element in elements]
