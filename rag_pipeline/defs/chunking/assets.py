import time

import dagster as dg

from rag_pipeline.defs.markdown import excerpt, table
from rag_pipeline.defs.parsing.assets import parsed_documents
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import ChunkingResource, EmbedderResource, PostgresResource
from rag_pipeline.lib.chunking import chunk_document
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.pipeline_store import (
    documents_to_chunk,
    load_parsed_elements,
    quarantine_document,
    save_chunks,
)


@dg.asset(
    deps=[parsed_documents],
    partitions_def=SOURCE_PARTITIONS,
    group_name="chunking",
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def chunks(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    chunking: ChunkingResource,
) -> dg.MaterializeResult:
    """Section-aware chunks within the embedder's token budget, with heading path and offsets.

    Each chunk keeps its document id, element range and character range in the parsed text, so a
    citation can be traced back to the exact source bytes. Documents already chunked with this
    chunker configuration are skipped.
    """
    started = time.perf_counter()
    counter = embedder.token_counter()
    config = chunking.config(embedder)
    chunker_key = config.key(counter.name)
    written, documents, token_counts, preview = 0, 0, [], []
    with postgres.connection() as conn:
        for doc in documents_to_chunk(conn, context.partition_key, PARSER_KEY, chunker_key):
            elements = load_parsed_elements(conn, doc.doc_id, doc.content_hash, PARSER_KEY)
            doc_chunks = chunk_document(doc.title or doc.relative_path, elements, counter, config)
            if not doc_chunks:
                quarantine_document(
                    conn,
                    doc,
                    "chunk",
                    chunker_key,
                    "no_chunks",
                    "parsed text produced no chunks",
                    context.run_id,
                )
                continue
            with conn.transaction():
                written += save_chunks(conn, doc, PARSER_KEY, chunker_key, doc_chunks)
            documents += 1
            token_counts += [chunk.token_count for chunk in doc_chunks]
            first = doc_chunks[0]
            preview.append(
                (
                    doc.doc_id,
                    len(doc_chunks),
                    " > ".join(first.heading_path),
                    excerpt(first.text, 100),
                )
            )
    return dg.MaterializeResult(
        metadata={
            "chunker": chunker_key,
            "token_budget": config.budget,
            "documents_chunked": documents,
            "chunks_written": written,
            "max_chunk_tokens": max(token_counts, default=0),
            "mean_chunk_tokens": round(sum(token_counts) / len(token_counts), 1)
            if token_counts
            else 0.0,
            "duration_s": round(time.perf_counter() - started, 3),
            "preview": dg.MetadataValue.md(
                table(("doc_id", "chunks", "first heading path", "first chunk"), preview)
                if preview
                else "Nothing new to chunk."
            ),
        }
    )
