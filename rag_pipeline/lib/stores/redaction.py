"""Reads and writes of the redaction step and of the chunks cut from redacted documents.

Bound parameters only. Incremental like the other stages: each query asks only for what is
missing under the current keys, so a re-run with nothing new reads a few index pages and writes
nothing (not even the source's redaction pointer, which is only written when it changes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_pipeline.lib.chunking import Chunk
from rag_pipeline.lib.parsing import ParsedElement
from rag_pipeline.lib.redaction import (
    ElementFinding,
    RedactedDocument,
    RedactionPolicy,
)
from rag_pipeline.lib.safety import InjectionVerdict
from rag_pipeline.lib.stores.pending import PendingDocument
from rag_pipeline.lib.stores.quarantine import release_quarantine


@dataclass(frozen=True)
class SourceRedaction:
    redaction_key: str
    policy: RedactionPolicy


def switch_source_redaction(
    conn: psycopg.Connection,
    source: str,
    redaction_key: str,
    policy: RedactionPolicy,
    run_id: str | None,
) -> bool:
    """Point the source at `redaction_key`; True if it pointed elsewhere (or nowhere) before."""
    row = conn.execute(
        """
        INSERT INTO rag.source_redaction (source, redaction_key, policy, run_id)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (source) DO UPDATE SET
            redaction_key = EXCLUDED.redaction_key, policy = EXCLUDED.policy,
            run_id = EXCLUDED.run_id, switched_at = now()
        WHERE rag.source_redaction.redaction_key <> EXCLUDED.redaction_key
        RETURNING 1
        """,
        (source, redaction_key, Jsonb(policy.to_json()), run_id),
    ).fetchone()
    return row is not None


def source_redaction(conn: psycopg.Connection, source: str) -> SourceRedaction | None:
    """The redaction the source's chunks are to be made with (None: never redacted)."""
    row = conn.execute(
        "SELECT redaction_key, policy FROM rag.source_redaction WHERE source = %s", (source,)
    ).fetchone()
    if row is None:
        return None
    return SourceRedaction(row[0], RedactionPolicy.from_config(row[1], f"source {source}"))


def documents_to_redact(
    conn: psycopg.Connection, source: str, parser_key: str, redaction_key: str
) -> list[PendingDocument]:
    """Live, parsed, unrefused documents of the source with no redaction under this key."""
    rows = conn.execute(
        """
        SELECT d.doc_id, d.source, d.uri, d.relative_path, d.content_hash, d.mime_type,
               d.encoding, d.title
        FROM rag.parsed_documents_of(%(source)s, %(parser)s) d
        WHERE NOT EXISTS (SELECT 1 FROM rag.quarantine q
                          WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
                            AND q.stage <> 'chunk'
                            AND NOT (q.stage = 'redact' AND q.processor_key <> %(key)s))
          AND NOT EXISTS (SELECT 1 FROM rag.redacted_documents r
                          WHERE r.doc_id = d.doc_id AND r.content_hash = d.content_hash
                            AND r.parser_key = %(parser)s AND r.redaction_key = %(key)s)
        ORDER BY d.doc_id
        """,
        {"source": source, "parser": parser_key, "key": redaction_key},
    ).fetchall()
    return [PendingDocument(*row) for row in rows]


def load_scan(
    conn: psycopg.Connection, doc: PendingDocument, parser_key: str, scan_key: str
) -> list[ElementFinding] | None:
    """The stored findings of this document version for these detectors (None: not scanned)."""
    row = conn.execute(
        "SELECT findings FROM rag.redaction_scans"
        " WHERE doc_id = %s AND content_hash = %s AND parser_key = %s AND scan_key = %s",
        (doc.doc_id, doc.content_hash, parser_key, scan_key),
    ).fetchone()
    if row is None:
        return None
    findings = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return [ElementFinding.from_json(item) for item in findings]


def save_scan(
    conn: psycopg.Connection,
    doc: PendingDocument,
    parser_key: str,
    scan_key: str,
    findings: Sequence[ElementFinding],
    duration_ms: int,
    run_id: str | None,
) -> None:
    conn.execute(
        """
        INSERT INTO rag.redaction_scans (doc_id, content_hash, parser_key, scan_key, findings,
            finding_count, duration_ms, run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (doc_id, content_hash, parser_key, scan_key) DO NOTHING
        """,
        (
            doc.doc_id,
            doc.content_hash,
            parser_key,
            scan_key,
            Jsonb([finding.to_json() for finding in findings]),
            len(findings),
            duration_ms,
            run_id,
        ),
    )


def save_redacted(
    conn: psycopg.Connection,
    doc: PendingDocument,
    parser_key: str,
    redaction_key: str,
    detector_version: str,
    redacted: RedactedDocument,
    run_id: str | None,
) -> None:
    """The redacted elements and one audit row per finding, in the caller's transaction."""
    release_quarantine(conn, doc, "redact")
    inserted = conn.execute(
        """
        INSERT INTO rag.redacted_documents (doc_id, content_hash, parser_key, redaction_key,
            title, elements, counts, run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (doc_id, content_hash, parser_key, redaction_key) DO NOTHING
        RETURNING 1
        """,
        (
            doc.doc_id,
            doc.content_hash,
            parser_key,
            redaction_key,
            redacted.title,
            Jsonb([element.to_json() for element in redacted.elements]),
            Jsonb(redacted.counts()),
            run_id,
        ),
    ).fetchone()
    if inserted is None or not redacted.applied:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO rag.redaction_audit (doc_id, content_hash, parser_key, redaction_key,
                element_index, start_offset, end_offset, redacted_start, redacted_end,
                entity_type, detector, detector_version, score, action, run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            [
                (
                    doc.doc_id,
                    doc.content_hash,
                    parser_key,
                    redaction_key,
                    item.element,
                    item.start,
                    item.end,
                    item.new_start,
                    item.new_end,
                    item.type,
                    item.detector,
                    detector_version,
                    item.score,
                    item.action,
                    run_id,
                )
                for item in redacted.applied
            ],
        )


def documents_to_chunk(
    conn: psycopg.Connection,
    source: str,
    parser_key: str,
    chunker_key: str,
    redaction_key: str,
    processor_key: str,
) -> list[PendingDocument]:
    """Documents redacted under the source's key with no chunks for (chunker, redaction) yet.

    A chunk-stage refusal by another `processor_key` (chunker and redaction key) does not
    count: a new chunker or policy gives the document another try.
    """
    rows = conn.execute(
        """
        SELECT d.doc_id, d.source, d.uri, d.relative_path, d.content_hash, d.mime_type,
               d.encoding, r.title
        FROM rag.documents d
        JOIN rag.redacted_documents r
          ON r.doc_id = d.doc_id AND r.content_hash = d.content_hash
             AND r.parser_key = %(parser)s AND r.redaction_key = %(redaction)s
        WHERE d.source = %(source)s AND d.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM rag.quarantine q
                          WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
                            AND NOT (q.stage = 'chunk' AND q.processor_key <> %(processor)s))
          AND NOT EXISTS (SELECT 1 FROM rag.chunks c
                          WHERE c.doc_id = d.doc_id AND c.content_hash = d.content_hash
                            AND c.parser_key = %(parser)s AND c.chunker_key = %(chunker)s
                            AND c.redaction_key = %(redaction)s)
        ORDER BY d.doc_id
        """,
        {
            "source": source,
            "parser": parser_key,
            "chunker": chunker_key,
            "redaction": redaction_key,
            "processor": processor_key,
        },
    ).fetchall()
    return [PendingDocument(*row) for row in rows]


def load_redacted_elements(
    conn: psycopg.Connection, doc: PendingDocument, parser_key: str, redaction_key: str
) -> list[ParsedElement]:
    row = conn.execute(
        "SELECT elements FROM rag.redacted_documents WHERE doc_id = %s AND content_hash = %s"
        " AND parser_key = %s AND redaction_key = %s",
        (doc.doc_id, doc.content_hash, parser_key, redaction_key),
    ).fetchone()
    if row is None:
        raise LookupError(f"{doc.doc_id} has no redaction {redaction_key} of {doc.content_hash}")
    elements = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return [ParsedElement.from_json(element) for element in elements]


def cached_verdicts(
    conn: psycopg.Connection, detector_key: str, text_hashes: Sequence[str]
) -> dict[str, InjectionVerdict]:
    rows = conn.execute(
        "SELECT text_hash, injection, score, reasons FROM rag.injection_verdicts"
        " WHERE detector_key = %s AND text_hash = ANY(%s)",
        (detector_key, list(text_hashes)),
    ).fetchall()
    return {row[0]: InjectionVerdict(row[1], float(row[2]), tuple(row[3])) for row in rows}


def save_verdicts(
    conn: psycopg.Connection, detector_key: str, verdicts: dict[str, InjectionVerdict]
) -> None:
    if not verdicts:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO rag.injection_verdicts (detector_key, text_hash, injection, score,"
            " reasons) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (detector_key, text_hash, v.injection, v.score, list(v.reasons))
                for text_hash, v in verdicts.items()
            ],
        )


def redacted_chunk_id(
    doc: PendingDocument, parser_key: str, chunker_key: str, redaction_key: str, ordinal: int
) -> str:
    key = "\x1f".join(
        (doc.doc_id, doc.content_hash, parser_key, chunker_key, redaction_key, str(ordinal))
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def save_redacted_chunks(
    conn: psycopg.Connection,
    doc: PendingDocument,
    parser_key: str,
    chunker_key: str,
    redaction_key: str,
    chunks: Sequence[tuple[Chunk, InjectionVerdict]],
) -> int:
    """Insert the chunks (already cut from redacted elements) with their injection verdicts."""
    release_quarantine(conn, doc, "chunk")
    rows: list[tuple[Any, ...]] = []
    for chunk, verdict in chunks:
        rows.append(
            (
                redacted_chunk_id(doc, parser_key, chunker_key, redaction_key, chunk.ordinal),
                doc.doc_id,
                doc.content_hash,
                parser_key,
                chunker_key,
                redaction_key,
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
                verdict.injection,
                verdict.score,
                list(verdict.reasons),
            )
        )
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO rag.chunks (chunk_id, doc_id, content_hash, parser_key, chunker_key,
                redaction_key, ordinal, text, search_text, text_hash, token_count, heading_path,
                element_start, element_end, char_start, char_end, page_numbers, injection,
                injection_score, injection_reasons)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                %s)
            ON CONFLICT (chunk_id) DO NOTHING
            """,
            rows,
        )
    return len(rows)


def record_injections(
    conn: psycopg.Connection,
    doc: PendingDocument,
    chunker_key: str,
    redaction_key: str,
    flagged: Sequence[tuple[int, str, str, InjectionVerdict]],
    run_id: str | None,
) -> None:
    """Audit rows for flagged chunks: (ordinal, chunk id, action, verdict); never the text."""
    if not flagged:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO rag.injection_audit (doc_id, content_hash, chunker_key, redaction_key,
                ordinal, chunk_id, action, score, reasons, run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            [
                (
                    doc.doc_id,
                    doc.content_hash,
                    chunker_key,
                    redaction_key,
                    ordinal,
                    chunk_id,
                    action,
                    verdict.score,
                    list(verdict.reasons),
                    run_id,
                )
                for ordinal, chunk_id, action, verdict in flagged
            ],
        )
