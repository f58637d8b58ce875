"""Refusals by any stage (source, parse, redaction, chunking) and the list an operator sees.

A refusal is recorded per document version (content hash) and stage; a parse- or chunk-stage
refusal also names the processor, so a new parser or chunker version gives the document another
try.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from rag_pipeline.lib.erasure_records import ERASED_REASON_CODE
from rag_pipeline.lib.stores.pending import PendingDocument


@dataclass(frozen=True)
class QuarantineRecord:
    doc_id: str
    stage: str
    reason_code: str
    reason: str


def record_quarantine(
    conn: psycopg.Connection,
    doc_id: str,
    content_hash: str,
    stage: str,
    source: str,
    uri: str,
    reason_code: str,
    reason: str,
    run_id: str | None,
    processor_key: str = "",
) -> None:
    """Record (or refresh) one refusal of this document version by a stage."""
    conn.execute(
        """
        INSERT INTO rag.quarantine (doc_id, content_hash, stage, source, uri, reason_code,
            reason, run_id, processor_key)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (doc_id, content_hash, stage) DO UPDATE SET
            reason_code = EXCLUDED.reason_code, reason = EXCLUDED.reason,
            run_id = EXCLUDED.run_id, processor_key = EXCLUDED.processor_key,
            last_seen_at = now()
        """,
        (doc_id, content_hash, stage, source, uri, reason_code, reason, run_id, processor_key),
    )


def quarantine_document(
    conn: psycopg.Connection,
    doc: PendingDocument,
    stage: str,
    processor_key: str,
    reason_code: str,
    reason: str,
    run_id: str | None,
) -> None:
    """Record that `processor_key` (a parser or chunker) refused this document version.

    Only that processor: a new parser or chunker version gives the document another try.
    """
    record_quarantine(
        conn,
        doc.doc_id,
        doc.content_hash,
        stage,
        doc.source,
        doc.uri,
        reason_code,
        reason,
        run_id,
        processor_key,
    )


def current_quarantine(conn: psycopg.Connection, source: str) -> list[QuarantineRecord]:
    """Quarantine records that apply to the current version of the source's live documents,
    and the source's standing erasures (reason `erased`: not ingested while the erasure stands)."""
    rows = conn.execute(
        """
        SELECT doc_id, stage, reason_code, reason FROM (
            SELECT q.doc_id, q.stage, q.reason_code, q.reason
            FROM rag.quarantine q
            JOIN rag.documents d ON d.doc_id = q.doc_id AND d.content_hash = q.content_hash
            WHERE d.source = %(source)s AND d.deleted_at IS NULL
            UNION ALL
            SELECT t.doc_id, 'source', %(erased)s,
                   'erased on request (right to erasure); not ingested again until'
                   || ' `rag-pipeline erase --lift DOC`'
            FROM rag.erasure_tombstones t
            WHERE t.source = %(source)s AND t.lifted_at IS NULL
        ) refused
        ORDER BY doc_id, stage
        """,
        {"source": source, "erased": ERASED_REASON_CODE},
    ).fetchall()
    return [QuarantineRecord(*row) for row in rows]


def release_quarantine(conn: psycopg.Connection, doc: PendingDocument, stage: str) -> None:
    """A stage succeeded on this document version: an earlier processor's refusal is void."""
    conn.execute(
        "DELETE FROM rag.quarantine WHERE doc_id = %s AND content_hash = %s AND stage = %s",
        (doc.doc_id, doc.content_hash, stage),
    )
