"""One scan of a source applied to `rag.documents`, and the tombstones of removed sources.

Change detection (added, changed, metadata changed, restored, deleted), rename detection through
stale sidecar entries, source-stage quarantine and the audit trail of `rag.document_events`.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

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
from rag_pipeline.lib.erasure_records import lock_source, standing_erasures
from rag_pipeline.lib.stores.quarantine import record_quarantine
from rag_pipeline.lib.stores.source_state import (
    RecordedDocument,
    load_cursor,
    recorded_documents,
    save_cursor,
)


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


def _event_detail(doc: DiscoveredDocument, previous: RecordedDocument | None) -> Jsonb | None:
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
        known = recorded_documents(conn, source)
        if state is not None:
            state.known = {
                doc_id: KnownDocument(row.change_token, row.metadata_hash, row.deleted)
                for doc_id, row in known.items()
            }
            state.cursor = load_cursor(conn, source)
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
                record_quarantine(
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
            save_cursor(conn, source, connector, state.next_cursor, run_id)
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
    known: dict[str, RecordedDocument],
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
