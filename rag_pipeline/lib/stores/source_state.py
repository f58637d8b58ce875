"""What is recorded of a source before a scan: its documents and its connector's cursor.

`sources.sync_source` reads both at the start of a scan (a connector skips documents whose
change token is unchanged, and resumes from the cursor) and saves the next cursor in the scan's
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class RecordedDocument:
    """One document of the source as `rag.documents` holds it (live or tombstoned)."""

    content_hash: str
    metadata_hash: str
    deleted: bool
    relative_path: str
    tenant: str
    acl_principals: tuple[str, ...]
    # Refused by the source stage for its current bytes.
    source_quarantined: bool
    change_token: str | None


def recorded_documents(conn: psycopg.Connection, source: str) -> dict[str, RecordedDocument]:
    """Every document ever recorded for the source, by doc id."""
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
        row[0]: RecordedDocument(
            row[1], row[2], row[3], row[4], row[5], tuple(row[6]), row[7], row[8]
        )
        for row in rows
    }


def load_cursor(conn: psycopg.Connection, source: str) -> dict[str, object] | None:
    """The cursor the connector left after the source's last committed scan (None: none yet)."""
    row = conn.execute(
        "SELECT cursor FROM rag.source_cursors WHERE source = %s", (source,)
    ).fetchone()
    return None if row is None else dict(row[0])


def save_cursor(
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
