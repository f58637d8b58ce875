import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.chunking.assets import chunks
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import ChunkingResource, EmbedderResource, PostgresResource
from rag_pipeline.lib.embedding_dimension import (
    EmbeddingDimensionError,
    require_configured_fit,
    require_fitting_dimension,
)
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.progress import ProgressLog
from rag_pipeline.lib.stores.embeddings import (
    count_current_chunks,
    save_embeddings,
    stored_dimension,
    texts_to_embed,
)


@contextmanager
def _fails_without_retry() -> Iterator[None]:
    """A model of the wrong size is configuration, not a transient fault: fail without retry."""
    try:
        yield
    except EmbeddingDimensionError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


@dg.asset(
    deps=[chunks],
    partitions_def=SOURCE_PARTITIONS,
    group_name=LINEAGE_GROUP,
    kinds={"pytorch", "postgres"},
    retry_policy=TRANSIENT_RETRY,
    pool="embedder",
)
def chunk_embeddings(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    chunking: ChunkingResource,
) -> dg.MaterializeResult:
    """Normalized sentence embeddings of every current chunk, through a per-text cache.

    The cache is keyed by (model, weights digest, backend, text hash): a text already embedded by
    the same model, in any document or any earlier run, is never embedded again. Batches are
    committed as they finish, so a killed run resumes without redoing them.
    """
    started = time.perf_counter()
    chunker_key = chunking.chunker_key(embedder)
    model_key = embedder.model_key()
    with postgres.connection() as conn:
        stored = stored_dimension(conn)
        with _fails_without_retry():
            require_configured_fit(embedder.model_name, stored)
        pending = texts_to_embed(conn, context.partition_key, PARSER_KEY, chunker_key, model_key)
        current = count_current_chunks(conn, context.partition_key, PARSER_KEY, chunker_key)
        embed_seconds = 0.0
        if pending:
            model = embedder.embedder()
            with _fails_without_retry():
                require_fitting_dimension(embedder.model_name, model.dimension, stored)
            step = embedder.commit_batch_size
            progress = ProgressLog(context.log.info, "embedded", len(pending), "texts")
            for offset in range(0, len(pending), step):
                batch = pending[offset : offset + step]
                batch_started = time.perf_counter()
                vectors = model.embed([text for _, text in batch])
                embed_seconds += time.perf_counter() - batch_started
                with conn.transaction():
                    save_embeddings(conn, model_key, [text_hash for text_hash, _ in batch], vectors)
                progress.advance(offset + len(batch))
    with postgres.connection() as conn:
        rows = row_count_metadata(conn, "chunk_embeddings", context.partition_key)
    return dg.MaterializeResult(
        metadata={
            **rows,
            "model": model_key,
            "texts_embedded": len(pending),
            "current_chunks": current,
            "cache_hits": current - len(pending),
            "embed_seconds": round(embed_seconds, 3),
            "chunks_per_second": round(len(pending) / embed_seconds, 1) if embed_seconds else 0.0,
            "duration_s": round(time.perf_counter() - started, 3),
            "preview": dg.MetadataValue.md(
                f"Embedded **{len(pending)}** new texts with `{model_key}`; "
                f"{current - len(pending)} of {current} current chunks came from the cache."
            ),
        }
    )
