"""Right to erasure: remove every trace of a document, keep an audited tombstone without content.

`erase_documents` deletes, in ONE transaction per request, every row that holds or points to the
documents' content. Tables are discovered, not listed, so tables added by later migrations are
covered without touching this module:

- every base table of schema `rag` with a `chunk_id` column: rows of the erased chunks (postings,
  lexical lengths, memberships in every index version, including the serving one and its
  rollback target);
- every base table with a `doc_id` column: the document's rows (parses, chunks, events,
  quarantine records, whatever other stages keep per document), `rag.documents` last;
- every table with a `content_hash` but no `doc_id` column (`rag.source_blobs`): the bytes,
  unless another document's row still uses the same hash;
- every table with a `text_hash` but no `doc_id`/`chunk_id` column (`rag.embeddings`): vectors
  of texts no remaining chunk has (an identical text in another document keeps its vector);
- `text[]` columns named `chunk_ids` (`rag.query_log`): the erased ids are removed from the
  arrays; the log row stays (it holds no text: the question is an HMAC), so counts and latency
  history stay true;
- any text or JSON value still holding a fragment of the text, or an erased chunk id inside
  JSON (gate details, evaluation rankings), is rewritten to `[erased]` (erasure_scan.py).

Foreign keys are honoured without knowing them: a delete refused by one is retried after the
others. The affected index versions keep serving the other documents: their BM25 statistics
(N, df, avgdl per tenant, sql/007), `document_count`, `chunk_count` and corpus snapshot are
recomputed in the same transaction.

Dagster's event log lives in another database, so it cannot share that transaction. It is
scrubbed before (so a crash in between leaves no preview behind) and again after the commit
(for events written meanwhile); the scrub is idempotent and `erase --verify DOC --text-file F`
re-runs it. Then every text-like and bytea column of both databases is scanned for fragments of
the text collected before the erasure (kept in memory only, never stored), and the result is
recorded with the tombstone. A standing erasure keeps the source scan from ingesting the
document again (pipeline_store.sync_source) until `erase --lift`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from rag_pipeline.lib import erasure_scan
from rag_pipeline.lib.index_versions import INDEX_BUILD_LOCK_KEY

SCHEMA = "rag"
TOMBSTONES = "rag.erasure_tombstones"
# Namespace of the per-source advisory lock that `erase` and the source scan share, so a scan
# in flight cannot write back a document an erasure just removed.
SOURCE_SCAN_LOCK = "rag_pipeline.source_scan"
ERASED_REASON_CODE = "erased"

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]


class ErasureError(ValueError):
    """The request cannot be carried out as given (unknown id, already erased, no reason...)."""


@dataclass(frozen=True)
class Target:
    doc_id: str
    source: str
    tenant: str


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


@dataclass(frozen=True)
class _Tables:
    """Base tables of schema rag by the key columns erasure deletes on."""

    columns: dict[str, dict[str, str]]  # "rag.table" -> column -> type name

    def having(self, column: str, without: Iterable[str] = ()) -> list[str]:
        lacking = tuple(without)
        return sorted(
            table
            for table, cols in self.columns.items()
            if column in cols and not any(other in cols for other in lacking)
        )


def _discover_tables(conn: psycopg.Connection) -> _Tables:
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, t.typname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        """,
        (SCHEMA,),
    ).fetchall()
    columns: dict[str, dict[str, str]] = {}
    for table, column, type_name in rows:
        columns.setdefault(f"{SCHEMA}.{table}", {})[column] = type_name
    columns.pop(TOMBSTONES, None)
    return _Tables(columns)


def _ident(qualified: str) -> sql.Identifier:
    schema, table = qualified.split(".", 1)
    return sql.Identifier(schema, table)


@dataclass(frozen=True)
class _Delete:
    table: str
    query: sql.Composed
    params: dict[str, Any]


def _run_deletes(conn: psycopg.Connection, steps: list[_Delete], counts: dict[str, int]) -> None:
    """Run every delete; one refused by a foreign key is retried after the others (each in a
    savepoint), so the order of tables other migrations add need not be known."""
    remaining = steps
    while remaining:
        deferred: list[_Delete] = []
        for step in remaining:
            try:
                with conn.transaction():
                    removed = conn.execute(step.query, step.params).rowcount
            except psycopg.errors.ForeignKeyViolation:
                deferred.append(step)
                continue
            if removed:
                counts[step.table] = counts.get(step.table, 0) + removed
        if len(deferred) == len(remaining):
            tables = ", ".join(step.table for step in deferred)
            raise ErasureError(f"foreign keys keep these rows from being erased: {tables}")
        remaining = deferred


def _erase_one(
    conn: psycopg.Connection, tables: _Tables, target: Target, fragments: Sequence[str]
) -> tuple[dict[str, int], set[int], list[str]]:
    """Delete one document's rows; returns (rows per table, versions touched, chunk ids)."""
    doc = target.doc_id
    chunk_rows = conn.execute(
        "SELECT chunk_id, text_hash FROM rag.chunks WHERE doc_id = %s", (doc,)
    ).fetchall()
    chunk_ids = [row[0] for row in chunk_rows]
    text_hashes = sorted({row[1] for row in chunk_rows})
    versions = {
        int(row[0])
        for row in conn.execute(
            "SELECT DISTINCT version_id FROM rag.index_version_chunks"
            " WHERE doc_id = %s OR chunk_id = ANY(%s::text[])",
            (doc, chunk_ids),
        ).fetchall()
    }
    doc_tables = tables.having("doc_id")
    content_hashes: set[str] = set()
    for table in doc_tables:
        for column in ("content_hash", "previous_content_hash"):
            if column in tables.columns[table]:
                query = sql.SQL("SELECT DISTINCT {col} FROM {t} WHERE doc_id = %s").format(
                    col=sql.Identifier(column), t=_ident(table)
                )
                content_hashes |= {row[0] for row in conn.execute(query, (doc,)) if row[0]}

    counts: dict[str, int] = {}
    steps: list[_Delete] = []
    for table in tables.having("chunk_id"):
        if table == "rag.chunks" or not chunk_ids:
            continue
        condition = "chunk_id = ANY(%(chunks)s::text[])"
        if "doc_id" in tables.columns[table]:
            condition += " OR doc_id = %(doc)s"
        steps.append(
            _Delete(
                table,
                sql.SQL("DELETE FROM {} WHERE " + condition).format(_ident(table)),
                {"chunks": chunk_ids, "doc": doc},
            )
        )
    for table in doc_tables:
        in_chunk_step = bool(chunk_ids) and "chunk_id" in tables.columns[table]
        if table in ("rag.chunks", "rag.documents") or in_chunk_step:
            continue
        steps.append(
            _Delete(
                table,
                sql.SQL("DELETE FROM {} WHERE doc_id = %(doc)s").format(_ident(table)),
                {"doc": doc},
            )
        )
    _run_deletes(conn, steps, counts)
    _run_deletes(
        conn,
        [
            _Delete(
                "rag.chunks", sql.SQL("DELETE FROM rag.chunks WHERE doc_id = %(doc)s"), {"doc": doc}
            )
        ],
        counts,
    )
    _run_deletes(
        conn,
        [
            _Delete(
                "rag.documents",
                sql.SQL("DELETE FROM rag.documents WHERE doc_id = %(doc)s"),
                {"doc": doc},
            )
        ],
        counts,
    )

    # Bytes: content-addressed tables, unless a remaining row of any document uses the hash.
    if content_hashes:
        still_used: set[str] = set()
        for table in doc_tables:
            if "content_hash" in tables.columns[table]:
                query = sql.SQL(
                    "SELECT DISTINCT content_hash FROM {} WHERE content_hash = ANY(%s::text[])"
                ).format(_ident(table))
                still_used |= {row[0] for row in conn.execute(query, (sorted(content_hashes),))}
        unused = sorted(content_hashes - still_used)
        for table in tables.having("content_hash", without=("doc_id",)):
            removed = conn.execute(
                sql.SQL("DELETE FROM {} WHERE content_hash = ANY(%s::text[])").format(
                    _ident(table)
                ),
                (unused,),
            ).rowcount
            if removed:
                counts[table] = counts.get(table, 0) + removed

    # Vectors: cached by text, so kept while any remaining chunk has the same text.
    if text_hashes:
        still_used = set()
        for table in tables.having("text_hash"):
            if "chunk_id" in tables.columns[table] or "doc_id" in tables.columns[table]:
                query = sql.SQL(
                    "SELECT DISTINCT text_hash FROM {} WHERE text_hash = ANY(%s::text[])"
                ).format(_ident(table))
                still_used |= {row[0] for row in conn.execute(query, (text_hashes,))}
        unused = sorted(set(text_hashes) - still_used)
        for table in tables.having("text_hash", without=("doc_id", "chunk_id")):
            removed = conn.execute(
                sql.SQL("DELETE FROM {} WHERE text_hash = ANY(%s::text[])").format(_ident(table)),
                (unused,),
            ).rowcount
            if removed:
                counts[table] = counts.get(table, 0) + removed

    # References in id arrays (the query log): the ids go, the rows stay.
    for table, cols in tables.columns.items():
        if cols.get("chunk_ids") in ("_text", "_varchar") and chunk_ids:
            rewritten = conn.execute(
                sql.SQL(
                    "UPDATE {t} SET chunk_ids = ARRAY(SELECT x FROM unnest(chunk_ids)"
                    " WITH ORDINALITY u(x, n) WHERE NOT (x = ANY(%(ids)s::text[])) ORDER BY n)"
                    " WHERE chunk_ids && %(ids)s::text[]"
                ).format(t=_ident(table)),
                {"ids": chunk_ids},
            ).rowcount
            if rewritten:
                counts[f"{table} (references rewritten)"] = rewritten

    # Anything else that still quotes the text, or names an erased chunk inside JSON.
    scrubbed = erasure_scan.scrub_database(
        conn, fragments, exclude_tables=(TOMBSTONES,), replace_exact=chunk_ids
    )
    for column, rows in scrubbed.items():
        counts[f"{column} (rewritten)"] = rows
    return counts, versions, chunk_ids


def _refresh_versions(conn: psycopg.Connection, versions: Iterable[int]) -> None:
    """Counts, corpus snapshot and BM25 statistics of versions that lost memberships."""
    for version_id in sorted(versions):
        conn.execute("SELECT rag.build_lexical_statistics(%s)", (version_id,))
        conn.execute(
            """
            UPDATE rag.index_versions v
            SET chunk_count = s.chunks, document_count = s.documents
            FROM (SELECT count(*) AS chunks, count(DISTINCT doc_id) AS documents
                  FROM rag.index_version_chunks WHERE version_id = %(v)s) s
            WHERE v.version_id = %(v)s
            """,
            {"v": version_id},
        )
        # The snapshot the index build would compute for these memberships, so an unchanged
        # corpus maps to this version again; kept as it was if another version already has it.
        conn.execute(
            """
            WITH snap AS (
                SELECT md5(coalesce(string_agg(
                    chunk_id || ':' || tenant || ':' || array_to_string(acl_principals, ','),
                    '|' ORDER BY chunk_id), '')) AS snapshot
                FROM rag.index_version_chunks WHERE version_id = %(v)s
            )
            UPDATE rag.index_versions v SET corpus_snapshot = snap.snapshot
            FROM snap
            WHERE v.version_id = %(v)s
              AND NOT EXISTS (SELECT 1 FROM rag.index_versions o
                              WHERE o.version_id <> v.version_id AND o.model_key = v.model_key
                                AND o.parser_key = v.parser_key
                                AND o.chunker_key = v.chunker_key
                                AND o.corpus_snapshot = snap.snapshot)
            """,
            {"v": version_id},
        )


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
        tables = _discover_tables(conn)
        for target in targets:
            counts, touched, _ = _erase_one(conn, tables, target, per_doc_fragments[target.doc_id])
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
        _refresh_versions(conn, versions)
        report.versions_updated = sorted(versions)
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
