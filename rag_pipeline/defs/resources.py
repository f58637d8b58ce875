"""Dagster resources: the pipeline's configuration surface, each field settable from the env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import SourceConfig, find_source, load_sources, sources_file_from_env
from rag_pipeline.lib.chunking import ChunkingConfig
from rag_pipeline.lib.connectors import DEFAULT_MAX_DOCUMENT_BYTES
from rag_pipeline.lib.embedding import (
    DEFAULT_MODEL_NAME,
    HuggingFaceTokenCounter,
    SentenceTransformerEmbedder,
    load_embedder,
    load_token_counter,
    model_key_for,
)
from rag_pipeline.lib.index_versions import IndexKeys
from rag_pipeline.lib.parsing import PARSER_KEY


class PostgresResource(dg.ConfigurableResource):
    """The pipeline database. Empty `database_url` means the embedded server in `data_dir`."""

    database_url: str = ""
    data_dir: str = ""

    def url(self) -> str:
        return database.resolve_database_url(self.database_url or None, self.data_dir or None)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with database.connection(self.url()) as conn:
            yield conn


class SourceCatalogResource(dg.ConfigurableResource):
    """Where documents come from (a sources file) and how large a document may be."""

    sources_file: str = ""
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES

    def sources(self) -> list[SourceConfig]:
        return load_sources(self.sources_file or sources_file_from_env())

    def source(self, name: str) -> SourceConfig:
        return find_source(self.sources(), name)


class EmbedderResource(dg.ConfigurableResource):
    """The embedding model (shipped in a package or a local directory; never downloaded)."""

    model_name: str = DEFAULT_MODEL_NAME
    batch_size: int = 32
    max_tokens: int = 256
    # Texts embedded and committed together: a killed run loses at most one such batch.
    commit_batch_size: int = 128

    def embedder(self) -> SentenceTransformerEmbedder:
        return load_embedder(self.model_name, self.batch_size)

    def token_counter(self) -> HuggingFaceTokenCounter:
        return load_token_counter(self.model_name)

    def model_key(self) -> str:
        return model_key_for(self.model_name)


class ChunkingResource(dg.ConfigurableResource):
    """Chunker settings; the token budget follows the embedder's sequence length."""

    min_tokens: int = 48

    def config(self, embedder: EmbedderResource) -> ChunkingConfig:
        return ChunkingConfig(max_tokens=embedder.max_tokens, min_tokens=self.min_tokens)

    def chunker_key(self, embedder: EmbedderResource) -> str:
        return self.config(embedder).key(embedder.token_counter().name)


class IndexPolicyResource(dg.ConfigurableResource):
    """How candidates become serving versions, and how many old versions are kept."""

    auto_promote: bool = True
    max_removed_fraction: float = 0.25
    keep_versions: int = 5


def index_keys(embedder: EmbedderResource, chunking: ChunkingResource) -> IndexKeys:
    return IndexKeys(
        model_key=embedder.model_key(),
        parser_key=PARSER_KEY,
        chunker_key=chunking.chunker_key(embedder),
    )


def _env(name: str, default: Any) -> Any:
    """An `EnvVar` when the variable is set (so the UI shows where a value comes from)."""
    if os.environ.get(name):
        return dg.EnvVar.int(name) if isinstance(default, int) else dg.EnvVar(name)
    return default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "postgres": PostgresResource(
            database_url=_env("RAG_DATABASE_URL", ""), data_dir=_env("RAG_DATA_DIR", "")
        ),
        "catalog": SourceCatalogResource(
            sources_file=_env("RAG_SOURCES_FILE", ""),
            max_document_bytes=_env("RAG_MAX_DOCUMENT_BYTES", DEFAULT_MAX_DOCUMENT_BYTES),
        ),
        "embedder": EmbedderResource(
            model_name=_env("RAG_EMBEDDING_MODEL", DEFAULT_MODEL_NAME),
            batch_size=_env("RAG_EMBEDDING_BATCH_SIZE", 32),
        ),
        "chunking": ChunkingResource(),
        "index_policy": IndexPolicyResource(keep_versions=_env("RAG_KEEP_INDEX_VERSIONS", 5)),
    }
