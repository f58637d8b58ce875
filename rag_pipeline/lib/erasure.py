"""Right to erasure: remove every trace of a document, keep an audited tombstone without content.

`erase_documents` deletes, in ONE transaction per request, every row that holds or points to the
documents' content (`erasure_delete.py`: tables are discovered, not listed), recomputes the index
versions that lost memberships, and writes a tombstone per document (`erasure_records.py`).

Dagster's event log lives in another database, so it cannot share that transaction. It is
scrubbed before (so a crash in between leaves no preview behind) and again after the commit
(for events written meanwhile); the scrub is idempotent and `erase --verify DOC --text-file F`
re-runs it. Then every text-like and bytea column of both databases is scanned for fragments of
the text collected before the erasure (kept in memory only, never stored), and the result is
recorded with the tombstone. A standing erasure keeps the source scan from ingesting the
document again (stores.sources.sync_source) until `erase --lift`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from rag_pipeline.lib import erasure_scan
from rag_pipeline.lib.erasure_delete import discover_tables, erase_document_rows, refresh_versions
from rag_pipeline.lib.erasure_records import (
    TOMBSTONES,
    ConnectionFactory,
    ErasedDocument,
    ErasureError,
    ErasureReport,
    lock_source,
    record_tombstones,
    record_verification,
    scrub_dagster,
    verify_everywhere,
)
from rag_pipeline.lib.index_versions import INDEX_BUILD_LOCK_KEY


@dataclass(frozen=True)
class Target:
    doc_id: str
    source: str
    tenant: str


def resolve_targets(
    conn: psycopg.Connection, doc_ids: Sequence[str] = (), owner: str | None = None
) -> list[Target]:
    """The documents a request names, every id checked; deleted documents are included (their
    text is still stored). Fails on an unknown or already erased id, or an owner with none."""
    if not doc_ids and owner is None:
        raise ErasureError("name the documents to erase: --doc ID (repeatable) or --owner OWNER")
    targets: dict[str, Target] = {}
    if doc_ids:
        rows = conn.execute(
            "SELECT doc_id, source, tenant FROM rag.documents WHERE doc_id = ANY(%s::text[])",
            (list(doc_ids),),
        ).fetchall()
        found = {row[0]: Target(*row) for row in rows}
        missing = sorted(set(doc_ids) - set(found))
        if missing:
            erased = _erased_already(conn, missing)
            if erased:
                raise ErasureError(f"already erased (tombstone exists): {', '.join(erased)}")
            raise ErasureError(f"unknown document id(s): {', '.join(missing)}")
        targets.update(found)
    if owner is not None:
        if ":" not in owner or not owner.split(":", 1)[1]:
            raise ErasureError(
                f"owner {owner!r} must be a principal as stored in rag.documents.owner, "
                "for example 'user:alice' or 'group:hr'"
            )
        rows = conn.execute(
            "SELECT doc_id, source, tenant FROM rag.documents WHERE owner = %s ORDER BY doc_id",
            (owner,),
        ).fetchall()
        if not rows:
            raise ErasureError(f"no document is owned by {owner!r}")
        targets.update({row[0]: Target(*row) for row in rows})
    return [targets[doc_id] for doc_id in sorted(targets)]


def _erased_already(conn: psycopg.Connection, doc_ids: Sequence[str]) -> list[str]:
    rows = conn.execute(
        "SELECT doc_id FROM rag.erasure_tombstones"
        " WHERE doc_id = ANY(%s::text[]) AND lifted_at IS NULL ORDER BY doc_id",
        (list(doc_ids),),
    ).fetchall()
    return [row[0] for row in rows]


def collect_fragments(
    conn: psycopg.Connection, doc_ids: Sequence[str], request_doc_ids: Sequence[str] = ()
) -> list[str]:
    """Distinctive fragments of the documents' text: windows of their chunks and parsed
    elements, their titles and headings, minus any that another document (outside the request)
    also holds, since that text legitimately stays."""
    texts = [
        row[0]
        for row in conn.execute(
            """
            SELECT text FROM rag.chunks WHERE doc_id = ANY(%(docs)s::text[])
            UNION ALL
            SELECT e->>'text' FROM rag.parsed_documents p, jsonb_array_elements(p.elements) e
            WHERE p.doc_id = ANY(%(docs)s::text[]) AND jsonb_typeof(p.elements) = 'array'
            """,
            {"docs": list(doc_ids)},
        ).fetchall()
        if row[0]
    ]
    titles = [
        row[0]
        for row in conn.execute(
            """
            SELECT title FROM rag.documents WHERE doc_id = ANY(%(docs)s::text[])
            UNION SELECT title FROM rag.parsed_documents WHERE doc_id = ANY(%(docs)s::text[])
            UNION SELECT unnest(heading_path) FROM rag.chunks WHERE doc_id = ANY(%(docs)s::text[])
            """,
            {"docs": list(doc_ids)},
        ).fetchall()
        if row[0]
    ]
    fragments = erasure_scan.text_fragments(texts, titles)
    shared = shared_elsewhere(conn, fragments, request_doc_ids or doc_ids)
    return [fragment for fragment in fragments if fragment not in shared]


def shared_elsewhere(
    conn: psycopg.Connection, fragments: Sequence[str], doc_ids: Sequence[str]
) -> set[str]:
    """The fragments some document other than `doc_ids` holds (chunk, element or title)."""
    if not fragments:
        return set()
    rows = conn.execute(
        r"""
        WITH other AS MATERIALIZED (
            SELECT c.search_text AS v FROM rag.chunks c
            WHERE NOT (c.doc_id = ANY(%(docs)s::text[]))
            UNION ALL
            SELECT regexp_replace(c.search_text, '\s+', ' ', 'g') FROM rag.chunks c
            WHERE NOT (c.doc_id = ANY(%(docs)s::text[]))
            UNION ALL
            SELECT e->>'text' FROM rag.parsed_documents p, jsonb_array_elements(p.elements) e
            WHERE NOT (p.doc_id = ANY(%(docs)s::text[])) AND jsonb_typeof(p.elements) = 'array'
            UNION ALL
            SELECT d.title FROM rag.documents d
            WHERE NOT (d.doc_id = ANY(%(docs)s::text[])) AND d.title IS NOT NULL
        )
        SELECT f FROM unnest(%(frags)s::text[]) f
        WHERE EXISTS (SELECT 1 FROM other o WHERE strpos(o.v, f) > 0)
        """,
        {"docs": list(doc_ids), "frags": list(fragments)},
    ).fetchall()
    return {row[0] for row in rows}


def erase_documents(
    conn: psycopg.Connection,
    targets: Sequence[Target],
    reason: str,
    requested_by: str,
    dry_run: bool = False,
    dagster: ConnectionFactory | None = None,
    dagster_note: str = "",
) -> ErasureReport:
    """Erase the documents (one transaction), scrub Dagster's event log, verify, record.

    With `dry_run` everything runs inside a transaction that is rolled back, so the counts are
    exact and nothing changes; Dagster's database is only counted.
    """
    if not reason or not reason.strip():
        raise ErasureError("an erasure needs a --reason (it is kept in the audit tombstone)")
    if not requested_by or not requested_by.strip():
        raise ErasureError("an erasure needs --requested-by (who asked)")
    if not targets:
        raise ErasureError("no document to erase")
    doc_ids = [target.doc_id for target in targets]
    per_doc_fragments = {
        target.doc_id: collect_fragments(conn, [target.doc_id], doc_ids) for target in targets
    }
    all_fragments = list(dict.fromkeys(f for fs in per_doc_fragments.values() for f in fs))
    report = ErasureReport(
        request_id=str(uuid.uuid4()),
        dry_run=dry_run,
        documents=[],
        versions_updated=[],
        fragments=len(all_fragments),
        dagster_note=dagster_note,
    )
    # Before the commit: a crash after it must not leave previews behind with nobody holding
    # the fragments to find them (they are never stored).
    if dagster is not None:
        report.dagster = scrub_dagster(dagster, all_fragments, dry_run=dry_run)

    versions: set[int] = set()
    with conn.transaction(force_rollback=dry_run):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_BUILD_LOCK_KEY,))
        for source in sorted({target.source for target in targets}):
            lock_source(conn, source)
        locked = conn.execute(
            "SELECT doc_id FROM rag.documents WHERE doc_id = ANY(%s::text[]) FOR UPDATE",
            (doc_ids,),
        ).fetchall()
        gone = sorted(set(doc_ids) - {row[0] for row in locked})
        if gone:
            raise ErasureError(f"erased or removed meanwhile: {', '.join(gone)}")
        tables = discover_tables(conn)
        for target in targets:
            counts, touched, _ = erase_document_rows(
                conn, tables, target.doc_id, per_doc_fragments[target.doc_id]
            )
            versions |= touched
            report.documents.append(
                ErasedDocument(
                    target.doc_id,
                    target.source,
                    target.tenant,
                    dict(sorted(counts.items())),
                    len(per_doc_fragments[target.doc_id]),
                )
            )
        refresh_versions(conn, versions)
        report.versions_updated = sorted(versions)
        record_tombstones(conn, report, requested_by, reason)
    if dry_run:
        return report

    try:
        if dagster is not None:
            # Again after the commit: events written while the erasure ran.
            again = scrub_dagster(dagster, all_fragments)
            for key, rows in again.items():
                report.dagster[key] = report.dagster.get(key, 0) + rows  # type: ignore[index]
        report.hits = verify_everywhere(conn, dagster, all_fragments)
        report.scanned = True
    except (psycopg.Error, ValueError) as error:
        # The erasure is committed; only the second step failed. Say so, and how to redo it.
        report.dagster = None
        report.dagster_note = (
            f"the erasure is committed, but the Dagster scrub or the verification failed "
            f"({type(error).__name__}: {error}); re-run "
            "`rag-pipeline erase --verify DOC --text-file FILE`"
        )
    record_verification(conn, doc_ids, report)
    return report


def reverify(
    conn: psycopg.Connection,
    doc_id: str,
    text: str,
    dagster: ConnectionFactory | None,
    dagster_note: str = "",
) -> ErasureReport:
    """Re-run the Dagster scrub and the scan for an erased document, with fragments of a text
    the operator supplies (the original file): the erasure itself never stores them."""
    row = conn.execute(
        "SELECT source, tenant FROM rag.erasure_tombstones WHERE doc_id = %s AND lifted_at IS NULL",
        (doc_id,),
    ).fetchone()
    if row is None:
        raise ErasureError(f"no standing erasure of {doc_id!r}")
    fragments = erasure_scan.text_fragments([text])
    shared = shared_elsewhere(conn, fragments, [doc_id])
    fragments = [fragment for fragment in fragments if fragment not in shared]
    if not fragments:
        raise ErasureError("the text file holds no distinctive fragment to look for")
    report = ErasureReport(
        request_id="",
        dry_run=False,
        documents=[ErasedDocument(doc_id, row[0], row[1], {}, len(fragments))],
        versions_updated=[],
        fragments=len(fragments),
        dagster_note=dagster_note,
    )
    if dagster is not None:
        report.dagster = scrub_dagster(dagster, fragments)
    with conn.transaction():
        scrubbed = erasure_scan.scrub_database(conn, fragments, exclude_tables=(TOMBSTONES,))
    report.documents[0].rows_removed = {f"{k} (rewritten)": v for k, v in scrubbed.items()}
    report.hits = verify_everywhere(conn, dagster, fragments)
    report.scanned = True
    record_verification(conn, [doc_id], report)
    return report
