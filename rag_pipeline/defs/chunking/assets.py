import time

import dagster as dg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.markdown import excerpt, table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.redaction.assets import redacted_documents
from rag_pipeline.defs.resources import ChunkingResource, EmbedderResource, PostgresResource
from rag_pipeline.lib.chunking import chunk_document
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.progress import log_progress
from rag_pipeline.lib.redaction import decide_injection, detector_version, redact_text
from rag_pipeline.lib.safety import InjectionVerdict
from rag_pipeline.lib.stores.quarantine import quarantine_document
from rag_pipeline.lib.stores.redaction import (
    cached_verdicts,
    documents_to_chunk,
    load_redacted_elements,
    record_injections,
    redacted_chunk_id,
    save_redacted_chunks,
    save_verdicts,
    source_redaction,
)


@dg.asset(
    deps=[redacted_documents],
    partitions_def=SOURCE_PARTITIONS,
    group_name=LINEAGE_GROUP,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def chunks(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    chunking: ChunkingResource,
) -> dg.MaterializeResult:
    """Section-aware chunks within the embedder's token budget, cut from the redacted text.

    Each chunk keeps its document id, element range and character range in the redacted text, so
    a citation can be traced back to the exact source bytes. Documents already chunked with this
    chunker configuration and the source's redaction key are skipped. Each new chunk's text is
    judged by the prompt-injection detector (once per text and detector version); the source's
    policy tags a flagged chunk (indexed, left out of answers) or quarantines it (not indexed; a
    document left with no chunk is quarantined `prompt_injection`).
    """
    from rag_pipeline.lib.safety import detect_injection

    started = time.perf_counter()
    counter = embedder.token_counter()
    config = chunking.config(embedder)
    chunker_key = chunking.chunker_key(embedder)
    verdict_key = detector_version()
    written, documents, judged, token_counts, preview, flagged_rows = 0, 0, 0, [], [], []
    with postgres.connection() as conn:
        redaction = source_redaction(conn, context.partition_key)
        pending = []
        if redaction is not None:
            processor_key = f"{chunker_key}|{redaction.redaction_key}"
            pending = documents_to_chunk(
                conn,
                context.partition_key,
                PARSER_KEY,
                chunker_key,
                redaction.redaction_key,
                processor_key,
            )
        for doc in log_progress(context.log.info, "chunked", "documents", pending, len(pending)):
            assert redaction is not None
            elements = load_redacted_elements(conn, doc, PARSER_KEY, redaction.redaction_key)
            doc_chunks = chunk_document(doc.title or doc.relative_path, elements, counter, config)
            verdicts = cached_verdicts(conn, verdict_key, [c.text_hash for c in doc_chunks])
            new_verdicts: dict[str, InjectionVerdict] = {}
            for chunk in doc_chunks:
                if chunk.text_hash not in verdicts:
                    verdict = detect_injection(chunk.search_text)
                    verdicts[chunk.text_hash] = new_verdicts[chunk.text_hash] = verdict
            judged += len(new_verdicts)
            kept, flagged = [], []
            for chunk in doc_chunks:
                verdict = verdicts[chunk.text_hash]
                decision = decide_injection(
                    verdict.injection, verdict.score, verdict.reasons, redaction.policy
                )
                chunk_id = redacted_chunk_id(
                    doc, PARSER_KEY, chunker_key, redaction.redaction_key, chunk.ordinal
                )
                if decision.injection:
                    flagged.append((chunk.ordinal, chunk_id, decision.action, verdict))
                    flagged_rows.append(
                        (
                            chunk_id,
                            doc.doc_id,
                            decision.action,
                            round(verdict.score, 3),
                            ", ".join(verdict.reasons),
                        )
                    )
                if decision.action != "quarantined":
                    kept.append((chunk, verdict))
            with conn.transaction():
                save_verdicts(conn, verdict_key, new_verdicts)
                record_injections(
                    conn, doc, chunker_key, redaction.redaction_key, flagged, context.run_id
                )
            if not kept:
                code, reason = (
                    ("prompt_injection", "every chunk was flagged as a prompt injection")
                    if flagged
                    else ("no_chunks", "parsed text produced no chunks")
                )
                with conn.transaction():
                    quarantine_document(
                        conn, doc, "chunk", processor_key, code, reason, context.run_id
                    )
                continue
            with conn.transaction():
                written += save_redacted_chunks(
                    conn, doc, PARSER_KEY, chunker_key, redaction.redaction_key, kept
                )
            documents += 1
            token_counts += [chunk.token_count for chunk, _ in kept]
            first, first_verdict = kept[0]
            shown = excerpt(redact_text(first.text), 100)
            preview.append(
                (
                    doc.doc_id,
                    len(kept),
                    " > ".join(first.heading_path),
                    # Never a flagged text, and nothing a `flag` policy kept verbatim.
                    "(flagged)" if first_verdict.injection else shown,
                )
            )
    tagged = sum(1 for row in flagged_rows if row[2] == "tagged")
    with postgres.connection() as conn:
        rows = row_count_metadata(conn, "chunks", context.partition_key)
    return dg.MaterializeResult(
        metadata={
            **rows,
            "chunker": chunker_key,
            "redaction_key": redaction.redaction_key if redaction else "",
            "token_budget": config.budget,
            "documents_chunked": documents,
            "chunks_written": written,
            "texts_judged_for_injection": judged,
            "injection_tagged": tagged,
            "injection_quarantined": len(flagged_rows) - tagged,
            "max_chunk_tokens": max(token_counts, default=0),
            "mean_chunk_tokens": round(sum(token_counts) / len(token_counts), 1)
            if token_counts
            else 0.0,
            "duration_s": round(time.perf_counter() - started, 3),
            "preview": dg.MetadataValue.md(
                (
                    table(("doc_id", "chunks", "first heading path", "first chunk"), preview)
                    if preview
                    else "Nothing new to chunk."
                )
                + (
                    "\n\n**Prompt injections** (ids and reasons only)\n\n"
                    + table(("chunk_id", "doc_id", "action", "score", "reasons"), flagged_rows)
                    if flagged_rows
                    else ""
                )
            ),
        }
    )
