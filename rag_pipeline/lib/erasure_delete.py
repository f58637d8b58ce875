"""The deletion itself: every row that holds or points to one document's content.

Tables are discovered, not listed, so tables added by later migrations are covered without
touching this module:

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
others. `refresh_versions` then recomputes the BM25 statistics (N, df, avgdl per tenant,
sql/007), `document_count`, `chunk_count` and corpus snapshot of the index versions that lost
memberships, so they keep serving the other documents. Both run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from rag_pipeline.lib import erasure_scan
from rag_pipeline.lib.erasure_records import TOMBSTONES, ErasureError

SCHEMA = "rag"


@dataclass(frozen=True)
class ErasableTables:
    """Base tables of schema rag by the key columns erasure deletes on."""

    columns: dict[str, dict[str, str]]  # "rag.table" -> column -> type name

    def having(self, column: str, without: Iterable[str] = ()) -> list[str]:
        lacking = tuple(without)
        return sorted(
            table
            for table, cols in self.columns.items()
            if column in cols and not any(other in cols for other in lacking)
        )


def discover_tables(conn: psycopg.Connection) -> ErasableTables:
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
    return ErasableTables(columns)


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


def erase_document_rows(
    conn: psycopg.Connection, tables: ErasableTables, doc: str, fragments: Sequence[str]
) -> tuple[dict[str, int], set[int], list[str]]:
    """Delete one document's rows; returns (rows per table, versions touched, chunk ids)."""
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


def refresh_versions(conn: psycopg.Connection, versions: Iterable[int]) -> None:
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
