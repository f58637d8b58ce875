"""Quarantine and access-control health across every source, for the operator's overview.

Each `source_documents` partition reports its own quarantine; these queries answer the question
an operator asks first ("what is refused, everywhere?") and feed the per-source checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from rag_pipeline.lib.erasure_records import ERASED_REASON_CODE

# Above this share of a source's present documents in quarantine, its check warns: a few bad
# files are normal, a third of a share usually means a broken export or a wrong sidecar.
MAX_QUARANTINE_RATE = 0.10


@dataclass(frozen=True)
class QuarantinedDocument:
    source: str
    doc_id: str
    stage: str
    reason_code: str
    reason: str


@dataclass(frozen=True)
class SourceHealth:
    """One source's documents present at the source, refused ones and unreadable ones."""

    source: str
    documents: int
    quarantined: int
    # Served documents (present, not quarantined) whose ACL is empty: nobody can read them.
    without_acl: int
    without_acl_ids: tuple[str, ...]

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined / self.documents if self.documents else 0.0


# The same rows as `stores.quarantine.current_quarantine`, for every source at once: refusals of the
# current version of documents still present, and standing erasures.
_QUARANTINE_SQL = """
SELECT source, doc_id, stage, reason_code, reason FROM (
    SELECT d.source, q.doc_id, q.stage, q.reason_code, q.reason
    FROM rag.quarantine q
    JOIN rag.documents d ON d.doc_id = q.doc_id AND d.content_hash = q.content_hash
    WHERE d.deleted_at IS NULL
    UNION ALL
    SELECT t.source, t.doc_id, 'source', %(erased)s, 'erased on request (right to erasure)'
    FROM rag.erasure_tombstones t
    WHERE t.lifted_at IS NULL
) refused
ORDER BY source, doc_id, stage
"""

_HEALTH_SQL = """
WITH present AS (
    SELECT doc_id, source, content_hash, acl_principals
    FROM rag.documents
    WHERE deleted_at IS NULL AND (%(source)s::text IS NULL OR source = %(source)s)
), refused AS (
    SELECT DISTINCT p.doc_id
    FROM present p
    JOIN rag.quarantine q ON q.doc_id = p.doc_id AND q.content_hash = p.content_hash
)
SELECT p.source,
       count(*),
       count(r.doc_id),
       count(*) FILTER (WHERE r.doc_id IS NULL AND cardinality(p.acl_principals) = 0),
       coalesce(array_agg(p.doc_id ORDER BY p.doc_id)
                FILTER (WHERE r.doc_id IS NULL AND cardinality(p.acl_principals) = 0), '{}')
FROM present p
LEFT JOIN refused r ON r.doc_id = p.doc_id
GROUP BY p.source
ORDER BY p.source
"""


def quarantined_documents(conn: psycopg.Connection) -> list[QuarantinedDocument]:
    """Every current refusal of every source, ordered by source and document."""
    rows = conn.execute(_QUARANTINE_SQL, {"erased": ERASED_REASON_CODE}).fetchall()
    return [QuarantinedDocument(*row) for row in rows]


def source_health(conn: psycopg.Connection, source: str | None = None) -> list[SourceHealth]:
    """Per source (or only `source`): documents present, quarantined, served without an ACL."""
    rows = conn.execute(_HEALTH_SQL, {"source": source}).fetchall()
    return [
        SourceHealth(name, int(documents), int(refused), int(no_acl), tuple(ids))
        for name, documents, refused, no_acl, ids in rows
    ]


def health_of(conn: psycopg.Connection, source: str) -> SourceHealth:
    """One source's health; a source with no document yet has all zeros."""
    found = source_health(conn, source)
    return found[0] if found else SourceHealth(source, 0, 0, 0, ())
