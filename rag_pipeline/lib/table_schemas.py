"""The Postgres tables behind each asset, with their columns, for the data catalog.

Declared here rather than read from the database at load time: the code location must load
without a database. `rag_pipeline_tests/test_operator_view.py` compares every column (name, type,
nullability) with `information_schema` of a freshly migrated database, so this cannot drift from
`sql/` unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

SCHEMA = "rag"


@dataclass(frozen=True)
class Column:
    name: str
    # As PostgreSQL spells it in `format_type`-like short form: `text`, `bigint`, `text[]`, ...
    type: str
    nullable: bool
    description: str


@dataclass(frozen=True)
class AssetTables:
    """The table an asset's rows live in (its catalog entry) and the others it also writes."""

    table: str
    columns: tuple[Column, ...]
    also_writes: tuple[str, ...] = ()

    @property
    def qualified_name(self) -> str:
        return f"{SCHEMA}.{self.table}"


def _col(name: str, type_: str, description: str, nullable: bool = False) -> Column:
    return Column(name, type_, nullable, description)


_TIMESTAMP = "timestamp with time zone"

ASSET_TABLES: dict[str, AssetTables] = {
    "source_documents": AssetTables(
        "documents",
        (
            _col("doc_id", "text", "stable id `<source>:<item>`"),
            _col("source", "text", "source name (the Dagster partition)"),
            _col("uri", "text", "where the connector found the item"),
            _col("relative_path", "text", "path inside the source, `/`-separated"),
            _col("title", "text", "declared or parsed title", nullable=True),
            _col("content_hash", "text", "SHA-256 of the bytes (key into source_blobs)"),
            _col("metadata_hash", "text", "hash of the access metadata"),
            _col("byte_size", "bigint", "size of the bytes"),
            _col("mime_type", "text", "detected media type", nullable=True),
            _col("encoding", "text", "declared text encoding", nullable=True),
            _col("owner", "text", "owner principal", nullable=True),
            _col("tenant", "text", "tenant the document is served in"),
            _col("acl_principals", "text[]", "principals allowed to read it (empty: nobody)"),
            _col("updated_at", _TIMESTAMP, "when the source says it changed"),
            _col("first_seen_at", _TIMESTAMP, "first scan that found it"),
            _col("last_seen_at", _TIMESTAMP, "latest scan that found it"),
            _col("deleted_at", _TIMESTAMP, "tombstone: gone from the source", nullable=True),
            _col("source_metadata", "jsonb", "what the connector knows (commit, page, ticket)"),
            _col("change_token", "text", "connector's cheap change marker", nullable=True),
        ),
        also_writes=("source_blobs", "document_events", "quarantine"),
    ),
    "parsed_documents": AssetTables(
        "parsed_documents",
        (
            _col("doc_id", "text", "document id"),
            _col("content_hash", "text", "document version parsed"),
            _col("parser_key", "text", "parser and its version"),
            _col("title", "text", "title found by the parser", nullable=True),
            _col("elements", "jsonb", "typed elements: type, text, heading depth, page"),
            _col("element_count", "integer", "number of elements"),
            _col("text_chars", "integer", "characters of text"),
            _col("duration_ms", "integer", "parse time"),
            _col("parsed_at", _TIMESTAMP, "when it was parsed"),
        ),
        also_writes=("quarantine",),
    ),
    "redacted_documents": AssetTables(
        "redacted_documents",
        (
            _col("doc_id", "text", "document id"),
            _col("content_hash", "text", "document version"),
            _col("parser_key", "text", "parser of the elements redacted"),
            _col("redaction_key", "text", "detector, step version and policy"),
            _col("title", "text", "redacted title"),
            _col("elements", "jsonb", "elements with PII and secrets redacted"),
            _col("counts", "jsonb", "redactions by type and action"),
            _col("run_id", "text", "Dagster run that wrote it", nullable=True),
            _col("redacted_at", _TIMESTAMP, "when it was redacted"),
        ),
        also_writes=("redaction_scans", "redaction_audit", "source_redaction", "quarantine"),
    ),
    "chunks": AssetTables(
        "chunks",
        (
            _col("chunk_id", "text", "chunk id"),
            _col("doc_id", "text", "document id"),
            _col("content_hash", "text", "document version"),
            _col("parser_key", "text", "parser"),
            _col("chunker_key", "text", "chunker configuration"),
            _col("ordinal", "integer", "position in the document"),
            _col("text", "text", "chunk text (redacted)"),
            _col("search_text", "text", "text embedded and indexed (with heading path)"),
            _col("text_hash", "text", "hash of search_text (embedding cache key)"),
            _col("token_count", "integer", "word pieces, within the embedder's budget"),
            _col("heading_path", "text[]", "headings above the chunk"),
            _col("element_start", "integer", "first parsed element"),
            _col("element_end", "integer", "last parsed element"),
            _col("char_start", "integer", "start offset in the redacted text"),
            _col("char_end", "integer", "end offset in the redacted text"),
            _col("page_numbers", "integer[]", "pages it spans"),
            _col("tsv", "tsvector", "full-text vector (GIN index)", nullable=True),
            _col("created_at", _TIMESTAMP, "when it was cut"),
            _col("redaction_key", "text", "redaction the text was cut from"),
            _col("injection", "boolean", "flagged as a prompt injection"),
            _col("injection_score", "real", "injection detector score"),
            _col("injection_reasons", "text[]", "why it was flagged"),
        ),
        also_writes=("quarantine",),
    ),
    "chunk_embeddings": AssetTables(
        "embeddings",
        (
            _col("model_key", "text", "model, weights digest and backend"),
            _col("text_hash", "text", "hash of the embedded text"),
            _col("embedding", "vector(384)", "normalized 384-dimensional vector (HNSW, cosine)"),
            _col("created_at", _TIMESTAMP, "when it was embedded"),
        ),
    ),
    "vector_index": AssetTables(
        "index_versions",
        (
            _col("version_id", "bigint", "index version"),
            _col("model_key", "text", "embedding model"),
            _col("parser_key", "text", "parser"),
            _col("chunker_key", "text", "chunker"),
            _col("corpus_snapshot", "text", "hash of the chunks and ACLs it holds"),
            _col("status", "text", "candidate, active, retired or rejected"),
            _col("document_count", "integer", "documents"),
            _col("chunk_count", "integer", "chunks"),
            _col("diff", "jsonb", "diff against the version serving when it was built"),
            _col("run_id", "text", "Dagster run that built it", nullable=True),
            _col("created_at", _TIMESTAMP, "when it was built"),
            _col("promoted_at", _TIMESTAMP, "when it last started serving", nullable=True),
            _col("lexical_stats_at", _TIMESTAMP, "when its BM25 statistics were built", True),
        ),
        also_writes=("index_version_chunks", "index_version_checks", "index_version_terms"),
    ),
    "evaluation_report": AssetTables(
        "evaluation_metrics",
        (
            _col("evaluation_id", "bigint", "evaluation run (rag.evaluation_runs)"),
            _col("version_id", "bigint", "index version measured"),
            _col("golden_set", "text", "golden set"),
            _col("configuration", "text", "default, vector or lexical retrieval"),
            _col("metric", "text", "metric name (ndcg_at_10, recall_at_100, ...)"),
            _col("value", "double precision", "value; null when not measured", nullable=True),
            _col("evaluated_at", _TIMESTAMP, "when it was measured"),
        ),
        also_writes=("evaluation_runs", "index_version_checks"),
    ),
    "active_index": AssetTables(
        "active_index",
        (
            _col("singleton", "boolean", "always true: exactly one row"),
            _col("version_id", "bigint", "the serving index version"),
            _col("switched_at", _TIMESTAMP, "when serving last switched"),
        ),
        also_writes=("index_promotions",),
    ),
}


# The rows an asset (or one source's partition of it) holds in its table. The embedding cache is
# shared by every source (keyed by text), so `chunk_embeddings` reports the whole cache.
_ROW_COUNT_SQL: dict[str, str] = {
    "source_documents": "SELECT count(*) FROM rag.documents WHERE source = %(source)s",
    "parsed_documents": (
        "SELECT count(*) FROM rag.parsed_documents p"
        " JOIN rag.documents d ON d.doc_id = p.doc_id WHERE d.source = %(source)s"
    ),
    "redacted_documents": (
        "SELECT count(*) FROM rag.redacted_documents r"
        " JOIN rag.documents d ON d.doc_id = r.doc_id WHERE d.source = %(source)s"
    ),
    "chunks": (
        "SELECT count(*) FROM rag.chunks c"
        " JOIN rag.documents d ON d.doc_id = c.doc_id WHERE d.source = %(source)s"
    ),
    "chunk_embeddings": "SELECT count(*) FROM rag.embeddings",
    "vector_index": "SELECT count(*) FROM rag.index_versions",
    "evaluation_report": "SELECT count(*) FROM rag.evaluation_metrics",
    "active_index": "SELECT count(*) FROM rag.active_index",
}


def row_count(conn: psycopg.Connection, asset: str, source: str | None = None) -> int:
    """Rows of `asset`'s table: the source's rows for a per-source asset, else all rows."""
    row = conn.execute(_ROW_COUNT_SQL[asset], {"source": source}).fetchone()
    return int(row[0]) if row else 0
