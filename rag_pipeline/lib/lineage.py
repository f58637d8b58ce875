"""Trace a search hit back to the exact source bytes, for auditors.

A chunk leads to its document version (content hash) and what its connector recorded of that
version (a git commit and path, a wiki page id and breadcrumbs, a ticket key), the stored bytes
(re-hashed here to prove they are the bytes that were parsed), the parsed elements it was cut
from, the index versions that served it, and the document's audit events.

Only for a reader who may read the document now (`rag.readable_documents`: not deleted, metadata
accepted, same tenant, ACL names one of their principals). Anyone else gets the same error as for
a chunk that does not exist, so lineage cannot be used to learn what exists.
"""

from __future__ import annotations

from typing import Any

import psycopg

from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.retrieval.session import serving_transaction


class UnknownChunkError(LookupError):
    """No chunk with this id that the reader may read (it may not exist, may have been
    garbage-collected, or may belong to a document the reader cannot read now)."""


def trace_chunk(conn: psycopg.Connection, chunk_id: str, access: UserAccess) -> dict[str, Any]:
    """The lineage of one chunk, if `access` may read its document now.

    Read in a serving transaction (`rag_serving`, row-level security, sql/015): the reader's
    role may not read stored bytes or parsed elements, so `rag.chunk_source_evidence` hashes
    the bytes in the database and returns the redacted elements after checking the reader.
    """
    with serving_transaction(conn, access):
        return _trace(conn, chunk_id, access)


def _trace(conn: psycopg.Connection, chunk_id: str, access: UserAccess) -> dict[str, Any]:
    row = conn.execute(
        """
        SELECT c.doc_id, c.content_hash, c.parser_key, c.chunker_key, c.ordinal, c.text,
               c.heading_path, c.element_start, c.element_end, c.char_start, c.char_end,
               c.page_numbers, d.source, d.uri, d.owner, d.tenant, d.acl_principals,
               d.content_hash AS current_hash, d.deleted_at, e.stored, e.byte_size,
               e.sha256_verified,
               -- Redacted elements (parsed ones only for a chunk written without redaction).
               e.elements,
               c.injection, c.injection_score, c.injection_reasons,
               -- What the connector recorded with this very version (commit, page, ticket),
               -- else what it knows of the current one.
               COALESCE((SELECT ev.detail -> 'source_metadata' FROM rag.document_events ev
                         WHERE ev.doc_id = c.doc_id AND ev.content_hash = c.content_hash
                           AND ev.detail ? 'source_metadata'
                         ORDER BY ev.event_id DESC LIMIT 1),
                        d.source_metadata) AS source_metadata
        FROM rag.chunks c
        JOIN rag.documents d ON d.doc_id = c.doc_id
        JOIN rag.chunk_source_evidence(c.chunk_id) e ON true
        WHERE c.chunk_id = %(chunk)s
          AND EXISTS (SELECT 1 FROM rag.readable_documents(%(tenant)s, %(principals)s::text[]) r
                      WHERE r.doc_id = c.doc_id)
        """,
        {"chunk": chunk_id, "tenant": access.tenant, "principals": list(access.principals)},
    ).fetchone()
    if row is None:
        raise UnknownChunkError(f"no chunk {chunk_id!r}")
    (
        doc_id,
        content_hash,
        parser_key,
        chunker_key,
        ordinal,
        text,
        heading_path,
        element_start,
        element_end,
        char_start,
        char_end,
        pages,
        source,
        uri,
        owner,
        tenant,
        acl,
        current_hash,
        deleted_at,
        stored,
        byte_size,
        sha256_verified,
        elements,
        injection,
        injection_score,
        injection_reasons,
        source_metadata,
    ) = row
    versions = conn.execute(
        "SELECT m.version_id, v.status FROM rag.index_version_chunks m"
        " JOIN rag.index_versions v USING (version_id) WHERE m.chunk_id = %s"
        " ORDER BY m.version_id",
        (chunk_id,),
    ).fetchall()
    events = conn.execute(
        "SELECT event, content_hash, run_id, recorded_at FROM rag.document_events"
        " WHERE doc_id = %s ORDER BY event_id",
        (doc_id,),
    ).fetchall()
    return {
        "chunk": {
            "chunk_id": chunk_id,
            "ordinal": ordinal,
            "text": text,
            "heading_path": list(heading_path),
            "char_range": [char_start, char_end],
            "element_range": [element_start, element_end],
            "pages": list(pages),
            "parser": parser_key,
            "chunker": chunker_key,
            # The prompt-injection verdict at ingest (answers leave flagged chunks out).
            "injection": {
                "flagged": bool(injection),
                "score": float(injection_score),
                "reasons": list(injection_reasons),
            },
        },
        "document": {
            "doc_id": doc_id,
            "source": source,
            "uri": uri,
            "owner": owner,
            "tenant": tenant,
            "acl_principals": list(acl),
            "content_hash": content_hash,
            "is_current_version": current_hash == content_hash and deleted_at is None,
            "source_metadata": source_metadata or {},
        },
        "source_bytes": {
            "stored": bool(stored),
            "byte_size": byte_size,
            "sha256_verified": bool(sha256_verified),
        },
        "elements": (elements or [])[element_start:element_end],
        "index_versions": [{"version_id": v, "status": s} for v, s in versions],
        "document_events": [
            {"event": e, "content_hash": h, "run_id": r, "recorded_at": t.isoformat()}
            for e, h, r, t in events
        ],
    }
