"""Dagster resources: the pipeline's configuration surface, each field settable from the env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import (
    DEFAULT_DIRECTORY_FILE,
    SourceConfig,
    find_source,
    load_sources,
    sources_file_from_env,
)
from rag_pipeline.lib.chunking import ChunkingConfig
from rag_pipeline.lib.connectors import DEFAULT_MAX_DOCUMENT_BYTES
from rag_pipeline.lib.embedding import (
    DEFAULT_BACKEND,
    DEFAULT_MODEL_NAME,
    HuggingFaceTokenCounter,
    SentenceTransformerEmbedder,
    load_embedder,
    load_token_counter,
    model_key_for,
)
from rag_pipeline.lib.index_versions import IndexKeys
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.redaction import redacting_chunker_key
from rag_pipeline.settings import Settings, current_settings


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
    """The embedding model (shipped in a package or a local directory; never downloaded), and
    the backend that runs it (`torch`, or a cached local `openvino`/`openvino-int8`/`onnx`
    export; empty `cache_dir`: `<data dir>/models`)."""

    model_name: str = DEFAULT_MODEL_NAME
    batch_size: int = 32
    backend: str = DEFAULT_BACKEND
    cache_dir: str = ""
    max_tokens: int = 256
    # Texts embedded and committed together: a killed run loses at most one such batch.
    commit_batch_size: int = 128

    def embedder(self) -> SentenceTransformerEmbedder:
        return load_embedder(
            self.model_name,
            self.batch_size,
            self.backend,
            Path(self.cache_dir).expanduser().resolve() if self.cache_dir else None,
        )

    def token_counter(self) -> HuggingFaceTokenCounter:
        return load_token_counter(self.model_name)

    def model_key(self) -> str:
        return model_key_for(self.model_name, self.backend)


class ChunkingResource(dg.ConfigurableResource):
    """Chunker settings; the token budget follows the embedder's sequence length."""

    min_tokens: int = 48

    def config(self, embedder: EmbedderResource) -> ChunkingConfig:
        return ChunkingConfig(max_tokens=embedder.max_tokens, min_tokens=self.min_tokens)

    def chunker_key(self, embedder: EmbedderResource) -> str:
        # Chunks are cut from redacted text: the redaction engine is part of the chunker key.
        return redacting_chunker_key(self.config(embedder).key(embedder.token_counter().name))


class ParsingResource(dg.ConfigurableResource):
    """Parser limits: a document that takes longer than `timeout_seconds` to parse is
    quarantined as `parse_timeout` and the run goes on."""

    timeout_seconds: float = 60.0


class IndexPolicyResource(dg.ConfigurableResource):
    """How candidates become serving versions, and how many old versions are kept."""

    auto_promote: bool = True
    max_removed_fraction: float = 0.25
    keep_versions: int = 5


class EvaluationResource(dg.ConfigurableResource):
    """Golden sets asked of every candidate, and the quality gate's tolerance and floors.

    Retrieval options, the generator and the evidence policy are the configured ones
    (`RAG_RETRIEVAL_*`, `RAG_LLM_*`, `RAG_ANSWER_*`): the report measures what users get.
    """

    golden_sets: list[str] = []
    directory_file: str = str(DEFAULT_DIRECTORY_FILE)
    tolerance: float = 0.02
    min_ndcg: float = 0.0
    min_refusal_accuracy: float = 0.0


def index_keys(embedder: EmbedderResource, chunking: ChunkingResource) -> IndexKeys:
    return IndexKeys(
        model_key=embedder.model_key(),
        parser_key=PARSER_KEY,
        chunker_key=chunking.chunker_key(embedder),
    )


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from one `Settings` object, the same one the CLI and runner read.

    Values are plain (resolved now), so code outside a run, such as the runner listing sources,
    reads them like any attribute. Only the database URL, which may hold a password, stays an
    `EnvVar` so that the UI shows where it comes from and never its value.
    """
    settings = settings or current_settings()
    database_url: Any = dg.EnvVar("RAG_DATABASE_URL") if settings.database_url else ""
    return {
        "postgres": PostgresResource(
            database_url=database_url,
            data_dir=str(settings.data_dir) if os.environ.get("RAG_DATA_DIR") else "",
        ),
        "catalog": SourceCatalogResource(
            sources_file=str(settings.sources_file),
            max_document_bytes=settings.max_document_bytes,
        ),
        "embedder": EmbedderResource(
            model_name=settings.embedding_model,
            batch_size=settings.embedding_batch_size,
            backend=settings.embedding_backend,
            cache_dir=str(settings.embedding_export_dir()),
        ),
        "chunking": ChunkingResource(),
        "parsing": ParsingResource(timeout_seconds=settings.parse_timeout_seconds),
        "index_policy": IndexPolicyResource(keep_versions=settings.keep_index_versions),
        "evaluation": EvaluationResource(
            golden_sets=[str(path) for path in settings.golden_set_files()],
            directory_file=str(settings.directory_file),
            tolerance=settings.quality_tolerance,
            min_ndcg=settings.quality_min_ndcg,
            min_refusal_accuracy=settings.quality_min_refusal_accuracy,
        ),
    }
