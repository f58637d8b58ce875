"""What an erasure leaves behind, and the check of it: tombstones, standing erasures, verification.

A tombstone per erased document keeps who asked, why, the rows removed per table and the result
of the verification, never the content. While it stands (not lifted), the source scan does not
ingest the document again; the scan and `erase` take the same per-source lock (`lock_source`) so
neither commits between the other's read and write. The verification scrubs Dagster's event log
and scans every text-like and bytea column of both databases for fragments of the erased text
(`erasure_scan.py`); its result is recorded with the tombstone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_pipeline.lib import erasure_scan

TOMBSTONES = "rag.erasure_tombstones"
# Namespace of the per-source advisory lock that `erase` and the source scan share, so a scan
# in flight cannot write back a document an erasure just removed.
SOURCE_SCAN_LOCK = "rag_pipeline.source_scan"
ERASED_REASON_CODE = "erased"

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]


class ErasureError(ValueError):
    """The request cannot be carried out as given (unknown id, already erased, no reason...)."""


@dataclass
class ErasedDocument:
    doc_id: str
    source: str
    tenant: str
    rows_removed: dict[str, int] = field(default_factory=dict)
    fragments: int = 0


@dataclass
class ErasureReport:
    request_id: str
    dry_run: bool
    documents: list[ErasedDocument]
    versions_updated: list[int]
    dagster: dict[str, int] | None = None
    dagster_note: str = ""
    fragments: int = 0
    hits: list[erasure_scan.ScanHit] = field(default_factory=list)
    scanned: bool = False

    @property
    def clean(self) -> bool:
        return self.scanned and not self.hits and self.dagster is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["clean"] = self.clean
        return data


def lock_source(conn: psycopg.Connection, source: str) -> None:
    """The per-source lock shared by erasure and the source scan (transaction-scoped)."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (SOURCE_SCAN_LOCK, source)
    )


def standing_erasures(conn: psycopg.Connection, source: str) -> set[str]:
    """Doc ids of the source whose erasure stands: the source scan must not ingest them."""
    rows = conn.execute(
        "SELECT doc_id FROM rag.erasure_tombstones WHERE source = %s AND lifted_at IS NULL",
        (source,),
    ).fetchall()
    return {row[0] for row in rows}


def record_tombstones(
    conn: psycopg.Connection, report: ErasureReport, requested_by: str, reason: str
) -> None:
    """One tombstone per erased document of the request, in the erasure's transaction."""
    for erased in report.documents:
        conn.execute(
            """
            INSERT INTO rag.erasure_tombstones (doc_id, source, tenant, requested_by,
                reason, rows_removed, request_id, versions_updated)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                erased.doc_id,
                erased.source,
                erased.tenant,
                requested_by.strip(),
                reason.strip(),
                Jsonb(erased.rows_removed),
                report.request_id,
                report.versions_updated,
            ),
        )


def scrub_dagster(
    dagster: ConnectionFactory, fragments: Sequence[str], dry_run: bool = False
) -> dict[str, int]:
    """Rewrite Dagster's stored events (event log, cached latest materializations, tags) that
    quote the text; one transaction; returns rows per `table.column`."""
    with dagster() as conn, conn.transaction(force_rollback=dry_run):
        return erasure_scan.scrub_database(conn, fragments, dry_run=dry_run)


def verify_everywhere(
    conn: psycopg.Connection, dagster: ConnectionFactory | None, fragments: Sequence[str]
) -> list[erasure_scan.ScanHit]:
    """Scan every text-like and bytea column of both databases for the fragments."""
    hits = erasure_scan.scan(conn, fragments, "rag")
    if dagster is not None:
        with dagster() as dagster_conn:
            hits += erasure_scan.scan(dagster_conn, fragments, "dagster")
    return hits


def record_verification(
    conn: psycopg.Connection, doc_ids: Sequence[str], report: ErasureReport
) -> None:
    conn.execute(
        """
        UPDATE rag.erasure_tombstones
        SET dagster_scrub = %s, verification = %s, verified_at = now()
        WHERE doc_id = ANY(%s::text[]) AND lifted_at IS NULL
        """,
        (
            Jsonb(report.dagster) if report.dagster is not None else None,
            Jsonb(
                {
                    "clean": report.clean,
                    "fragments": report.fragments,
                    "hits": [asdict(hit) for hit in report.hits],
                    "note": report.dagster_note,
                }
            ),
            list(doc_ids),
        ),
    )


def lift_erasure(conn: psycopg.Connection, doc_id: str, requested_by: str, reason: str) -> None:
    """Let the source scan ingest the document again (it comes back as a new document)."""
    if not reason or not reason.strip():
        raise ErasureError("lifting an erasure needs a --reason")
    lifted = conn.execute(
        "UPDATE rag.erasure_tombstones SET lifted_at = now(), lifted_by = %s, lift_reason = %s"
        " WHERE doc_id = %s AND lifted_at IS NULL",
        (requested_by, reason.strip(), doc_id),
    ).rowcount
    if not lifted:
        raise ErasureError(f"no standing erasure of {doc_id!r}")


def tombstones(conn: psycopg.Connection, doc_id: str | None = None) -> list[dict[str, Any]]:
    """Tombstones, newest first (for the CLI and tests)."""
    rows = conn.execute(
        """
        SELECT erasure_id, doc_id, source, tenant, requested_by, reason, erased_at,
               rows_removed, request_id::text, versions_updated, dagster_scrub, verification,
               verified_at, lifted_at, lifted_by, lift_reason
        FROM rag.erasure_tombstones
        WHERE %(doc)s::text IS NULL OR doc_id = %(doc)s
        ORDER BY erasure_id DESC
        """,
        {"doc": doc_id},
    )
    names = [column.name for column in rows.description or []]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]
