"""Reads and writes of the ingestion stages (documents, parses, chunks, embeddings) in Postgres.

Every query here uses bound parameters. Each stage asks for exactly the work that is missing for
the current (content hash, parser, chunker, model) keys, which is what makes re-runs incremental:
an unchanged document has nothing missing, so nothing is parsed, chunked or embedded again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from rag_pipeline.lib.chunking import Chunk
from rag_pipeline.lib.connectors import (
    SIDECAR_FILE,
    UNREAD_CONTENT_HASH,
    DiscoveredDocument,
    QuarantineReason,
    RemovedDocument,
    ScannedItem,
    ScanState,
    UnchangedDocument,
)
from rag_pipeline.lib.connectors.base import KnownDocument
from rag_pipeline.lib.erasure import ERASED_REASON_CODE, lock_source, standing_erasures
from rag_pipeline.lib.parsing import ParsedDocument, ParsedElement


@dataclass
class SourceSyncReport:
    discovered: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    metadata_changed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Refused (`quarantined`) or accepted again (`released`) by the source stage although
    # neither bytes nor metadata changed.
    newly_quarantined: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    unchanged: int = 0
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)
    bytes_read: int = 0
    # Still at the source, but erased on request (right to erasure): not ingested.
    erased: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PendingDocument:
    doc_id: str
    source: str
    uri: str
    relative_path: str
    content_hash: str
    mime_type: str
    encoding: str | None
    title: str | None


@dataclass(frozen=True)
class QuarantineRecord:
    doc_id: str
    stage: str
    reason_code: str
    reason: str


@dataclass(frozen=True)
class _KnownDocument:
    content_hash: str
    metadata_hash: str
    deleted: bool
    relative_path: str
    tenant: str
    acl_principals: tuple[str, ...]
    # Refused by the source stage for its current bytes.
    source_quarantined: bool
    change_token: str | None


def _known_documents(conn: psycopg.Connection, source: str) -> dict[str, _KnownDocument]:
    rows = conn.execute(
        """
        SELECT d.doc_id, d.content_hash, d.metadata_hash, d.deleted_at IS NOT NULL,
               d.relative_path, d.tenant, d.acl_principals,
               EXISTS (SELECT 1 FROM rag.quarantine q
                       WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
                         AND q.stage = 'source'),
               d.change_token
        FROM rag.documents d WHERE d.source = %s
        """,
        (source,),
    ).fetchall()
    return {
        row[0]: _KnownDocument(
            row[1], row[2], row[3], row[4], row[5], tuple(row[6]), row[7], row[8]
        )
        for row in rows
    }


def _load_cursor(conn: psycopg.Connection, source: str) -> dict[str, object] | None:
    row = conn.execute(
        "SELECT cursor FROM rag.source_cursors WHERE source = %s", (source,)
    ).fetchone()
    return None if row is None else dict(row[0])


def _save_cursor(
    conn: psycopg.Connection,
    source: str,
    connector: str,
    cursor: dict[str, object],
    run_id: str | None,
) -> None:
    conn.execute(
        """
        INSERT INTO rag.source_cursors (source, connector, cursor, run_id) VALUES (%s, %s, %s, %s)
        ON CONFLICT (source) DO UPDATE SET connector = EXCLUDED.connector,
            cursor = EXCLUDED.cursor, run_id = EXCLUDED.run_id, updated_at = now()
        """,
        (source, connector, Jsonb(cursor), run_id),
    )


def _detect_rename(
    doc: DiscoveredDocument, renamed_from: dict[str, list[tuple[str, str]]]
) -> DiscoveredDocument:
    """Quarantine a file that has no sidecar entry but the bytes of a document whose entry is
    stale: most likely that document renamed, whose entry (perhaps a narrower ACL) must not be
    silently replaced by the defaults."""
    if doc.quarantine is not None or doc.has_sidecar_entry:
        return doc
    origins = [item for item in renamed_from.get(doc.content_hash, []) if item[0] != doc.doc_id]
    if not origins:
        return doc
    origin_id, origin_path = origins[0]
    return doc.quarantined(
        QuarantineReason(
            "sidecar_mismatch",
            f"same bytes as {origin_id}, whose {SIDECAR_FILE} entry {origin_path!r} names no "
            "file any more (renamed?); move that entry to this file's path, or remove it",
        )
    )


def _event_detail(doc: DiscoveredDocument, previous: _KnownDocument | None) -> Jsonb | None:
    detail: dict[str, object] = {}
    if doc.source_metadata:
        # Per version: lineage of an older chunk shows the commit or export it came from.
        detail["source_metadata"] = dict(doc.source_metadata)
    if doc.quarantine is not None:
        detail["quarantine"] = {"code": doc.quarantine.code, "reason": doc.quarantine.message}
    if previous is not None and (previous.tenant, previous.acl_principals) != (
        doc.tenant,
        doc.acl_principals,
    ):
        detail["previous_tenant"] = previous.tenant
        detail["previous_acl_principals"] = list(previous.acl_principals)
    return Jsonb(detail) if detail else None


def sync_source(
    conn: psycopg.Connection,
    source: str,
    documents: Iterable[ScannedItem],
    run_id: str | None,
    stale_sidecar_entries: Collection[str] = (),
    *,
    state: ScanState | None = None,
    connector: str = "filesystem",
) -> SourceSyncReport:
    """Bring `rag.documents` in line with one scan of a source, in one transaction.

    Documents absent from the scan are tombstoned (deleted_at set, an event recorded), not
    removed: their history stays auditable and the next index version drops their chunks.
    Every event records the tenant and ACL it leaves the document with.

    Quarantine is re-evaluated on every scan: source-stage refusals of documents this scan did
    not refuse are cleared (one statement), and a metadata change clears the parse- and
    chunk-stage refusals of that document version, so those stages try it again (the encoding
    or title they used may have been the cause). `stale_sidecar_entries` (sidecar keys naming
    no file, also taken from `state` once the scan started) enable rename detection: see
    `_detect_rename`.

    `documents` may be a connector's lazy scan (`connectors.scan_source`): before the first item
    is drawn, `state` (if given) receives what is recorded of every document and the source's
    cursor, and the connector's `next_cursor` is saved in this same transaction after the last
    item, so a scan that fails leaves both documents and cursor as they were.
    """
    report = SourceSyncReport()
    with conn.transaction():
        # Right to erasure: the same lock as `rag-pipeline erase`, so an erasure never commits
        # between this scan's read and its writes; a standing erasure is never ingested again.
        lock_source(conn, source)
        erased = standing_erasures(conn, source)
        known = _known_documents(conn, source)
        if state is not None:
            state.known = {
                doc_id: KnownDocument(row.change_token, row.metadata_hash, row.deleted)
                for doc_id, row in known.items()
            }
            state.cursor = _load_cursor(conn, source)
        items = iter(documents)
        # The first item is drawn before the rename map is built: a connector reports its
        # stale sidecar entries when its scan starts.
        first = list(itertools.islice(items, 1))
        stale = set(stale_sidecar_entries) | set(state.stale_sidecar_entries if state else ())
        renamed_from: dict[str, list[tuple[str, str]]] = {}
        for doc_id, row in sorted(known.items()):
            if row.relative_path in stale and row.content_hash != UNREAD_CONTENT_HASH:
                renamed_from.setdefault(row.content_hash, []).append((doc_id, row.relative_path))
        seen: set[str] = set()
        refused: list[str] = []
        removal_reasons: dict[str, str] = {}
        for scanned in itertools.chain(first, items):
            if isinstance(scanned, RemovedDocument):
                removal_reasons[scanned.doc_id] = scanned.reason
                continue
            if scanned.doc_id in erased:
                # Nothing of it is stored, not even its bytes or an event: it shows in the
                # quarantine list (`current_quarantine`) until `rag-pipeline erase --lift`.
                report.discovered += 1
                report.erased.append(scanned.doc_id)
                continue
            if isinstance(scanned, UnchangedDocument):
                _keep_unchanged(scanned.doc_id, known, report, seen, refused)
                continue
            doc = _detect_rename(scanned, renamed_from)
            report.discovered += 1
            report.bytes_read += doc.byte_size
            seen.add(doc.doc_id)
            previous = known.get(doc.doc_id)
            if previous is None:
                event = "added"
            elif previous.deleted:
                event = "restored"
            elif previous.content_hash != doc.content_hash:
                event = "changed"
            elif previous.metadata_hash != doc.metadata_hash:
                event = "metadata_changed"
            elif doc.quarantine is not None and not previous.source_quarantined:
                event = "quarantined"
            elif doc.quarantine is None and previous.source_quarantined:
                event = "released"
            else:
                event = None
            if doc.quarantine is not None:
                refused.append(doc.doc_id)
                report.quarantined.append((doc.doc_id, doc.quarantine.code, doc.quarantine.message))
                _record_quarantine(
                    conn,
                    doc.doc_id,
                    doc.content_hash,
                    "source",
                    source,
                    doc.uri,
                    doc.quarantine.code,
                    doc.quarantine.message,
                    run_id,
                )
            if event is None:
                report.unchanged += 1
                if doc.change_token is not None and previous.change_token != doc.change_token:
                    # First scan since the connector began to give tokens: record it so the
                    # next scan can skip this document without reading it.
                    conn.execute(
                        "UPDATE rag.documents SET change_token = %s, source_metadata = %s"
                        " WHERE doc_id = %s",
                        (doc.change_token, Jsonb(dict(doc.source_metadata)), doc.doc_id),
                    )
                continue
            {
                "added": report.added,
                "restored": report.restored,
                "changed": report.changed,
                "metadata_changed": report.metadata_changed,
                "quarantined": report.newly_quarantined,
                "released": report.released,
            }[event].append(doc.doc_id)
            if doc.content is not None:
                conn.execute(
                    "INSERT INTO rag.source_blobs (content_hash, byte_size, content)"
                    " VALUES (%s, %s, %s) ON CONFLICT (content_hash) DO NOTHING",
                    (doc.content_hash, len(doc.content), doc.content),
                )
            conn.execute(
                """
                INSERT INTO rag.documents (doc_id, source, uri, relative_path, title,
                    content_hash, metadata_hash, byte_size, mime_type, encoding, owner, tenant,
                    acl_principals, updated_at, source_metadata, change_token)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (doc_id) DO UPDATE SET
                    uri = EXCLUDED.uri, title = EXCLUDED.title,
                    source_metadata = EXCLUDED.source_metadata,
                    change_token = EXCLUDED.change_token,
                    content_hash = EXCLUDED.content_hash, metadata_hash = EXCLUDED.metadata_hash,
                    byte_size = EXCLUDED.byte_size, mime_type = EXCLUDED.mime_type,
                    encoding = EXCLUDED.encoding, owner = EXCLUDED.owner, tenant = EXCLUDED.tenant,
                    acl_principals = EXCLUDED.acl_principals, updated_at = EXCLUDED.updated_at,
                    last_seen_at = now(), deleted_at = NULL
                """,
                (
                    doc.doc_id,
                    source,
                    doc.uri,
                    doc.relative_path,
                    doc.title,
                    doc.content_hash,
                    doc.metadata_hash,
                    doc.byte_size,
                    doc.mime_type,
                    doc.encoding,
                    doc.owner,
                    doc.tenant,
                    list(doc.acl_principals),
                    doc.updated_at,
                    Jsonb(dict(doc.source_metadata)),
                    doc.change_token,
                ),
            )
            if (
                previous is not None
                and previous.content_hash == doc.content_hash
                and previous.metadata_hash != doc.metadata_hash
            ):
                conn.execute(
                    "DELETE FROM rag.quarantine WHERE doc_id = %s AND content_hash = %s"
                    " AND stage IN ('parse', 'chunk')",
                    (doc.doc_id, doc.content_hash),
                )
            conn.execute(
                "INSERT INTO rag.document_events (doc_id, source, event, content_hash,"
                " previous_content_hash, run_id, tenant, acl_principals, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    doc.doc_id,
                    source,
                    event,
                    doc.content_hash,
                    previous.content_hash if previous else None,
                    run_id,
                    doc.tenant,
                    list(doc.acl_principals),
                    _event_detail(doc, previous),
                ),
            )
        gone = [doc_id for doc_id, row in known.items() if not row.deleted and doc_id not in seen]
        for doc_id in sorted(gone):
            row = known[doc_id]
            conn.execute("UPDATE rag.documents SET deleted_at = now() WHERE doc_id = %s", (doc_id,))
            conn.execute(
                "INSERT INTO rag.document_events (doc_id, source, event, previous_content_hash,"
                " run_id, tenant, acl_principals, detail)"
                " VALUES (%s, %s, 'deleted', %s, %s, %s, %s, %s)",
                (
                    doc_id,
                    source,
                    row.content_hash,
                    run_id,
                    row.tenant,
                    list(row.acl_principals),
                    Jsonb({"reason": removal_reasons.get(doc_id, "no longer found at the source")}),
                ),
            )
        report.deleted = sorted(gone)
        # One statement for the whole source: a refusal this scan did not repeat (its cause was
        # fixed, in the bytes, the sidecar or the sources file) no longer applies.
        conn.execute(
            "DELETE FROM rag.quarantine WHERE source = %s AND stage = 'source'"
            " AND NOT (doc_id = ANY(%s::text[]))",
            (source, refused),
        )
        if state is not None and state.next_cursor is not None:
            _save_cursor(conn, source, connector, state.next_cursor, run_id)
        # Refreshed at most daily: rewriting every row on every no-op run would make re-runs
        # cost in proportion to the corpus and bloat the table with dead tuples.
        conn.execute(
            "UPDATE rag.documents SET last_seen_at = now()"
            " WHERE source = %s AND deleted_at IS NULL"
            " AND last_seen_at < now() - interval '1 day'",
            (source,),
        )
    return report


def _keep_unchanged(
    doc_id: str,
    known: dict[str, _KnownDocument],
    report: SourceSyncReport,
    seen: set[str],
    refused: list[str],
) -> None:
    """Account for a document the connector did not read because its token is unchanged."""
    previous = known.get(doc_id)
    if previous is None or previous.deleted:
        raise RuntimeError(
            f"connector reported {doc_id} unchanged, but it is not a live recorded document"
        )
    report.discovered += 1
    report.unchanged += 1
    seen.add(doc_id)
    if previous.source_quarantined:
        refused.append(doc_id)  # still refused: its bytes and metadata are the same


def tombstone_removed_sources(
    conn: psycopg.Connection, configured_sources: Collection[str], run_id: str | None
) -> list[str]:
    """Tombstone the live documents of every source no longer configured; returns their ids.

    Each gets `deleted_at` and a `source_removed` event (with the run id and the ACL it had), in
    one transaction. The next index version then lacks them and `no_unexpected_document_loss`
    judges that like any mass deletion. If the source comes back, its next scan restores them.
    """
    if not configured_sources:
        # Never a valid configuration (load_sources refuses it); a caller bug must not wipe the
        # whole corpus.
        raise ValueError("tombstone_removed_sources needs the configured sources, got none")
    rows = conn.execute(
        """
        WITH removed AS (
            UPDATE rag.documents SET deleted_at = now()
            WHERE deleted_at IS NULL AND NOT (source = ANY(%(sources)s::text[]))
            RETURNING doc_id, source, content_hash, tenant, acl_principals
        )
        INSERT INTO rag.document_events (doc_id, source, event, previous_content_hash, run_id,
            tenant, acl_principals, detail)
        SELECT doc_id, source, 'source_removed', content_hash, %(run_id)s, tenant,
               acl_principals, %(detail)s
        FROM removed
        RETURNING doc_id
        """,
        {
            "sources": sorted(configured_sources),
            "run_id": run_id,
            "detail": Jsonb({"reason": "source no longer in the sources file"}),
        },
    ).fetchall()
    return sorted(row[0] for row in rows)


def _record_quarantine(
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
    _record_quarantine(
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


def release_quarantine(conn: psycopg.Connection, doc: PendingDocument, stage: str) -> None:
    """A stage succeeded on this document version: an earlier processor's refusal is void."""
    conn.execute(
        "DELETE FROM rag.quarantine WHERE doc_id = %s AND content_hash = %s AND stage = %s",
        (doc.doc_id, doc.content_hash, stage),
    )


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


def documents_to_chunk(
    conn: psycopg.Connection, source: str, parser_key: str, chunker_key: str
) -> list[PendingDocument]:
    rows = conn.execute(
        """
        SELECT d.doc_id, d.source, d.uri, d.relative_path, d.content_hash, d.mime_type,
               d.encoding, p.title
        FROM rag.documents d
        JOIN rag.parsed_documents p
          ON p.doc_id = d.doc_id AND p.content_hash = d.content_hash
             AND p.parser_key = %(parser)s
        WHERE d.source = %(source)s AND d.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM rag.quarantine q
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
