import time

import dagster as dg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.markdown import table
from rag_pipeline.defs.parsing.assets import parsed_documents
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import PostgresResource, SourceCatalogResource
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.redaction import (
    apply_policy,
    detector_version,
    redaction_key,
    scan_document,
    scan_key,
    sensitive_detector,
)
from rag_pipeline.lib.stores.parsed import load_parsed_elements
from rag_pipeline.lib.stores.quarantine import quarantine_document
from rag_pipeline.lib.stores.redaction import (
    documents_to_redact,
    load_scan,
    save_redacted,
    save_scan,
    switch_source_redaction,
)


@dg.asset(
    deps=[parsed_documents],
    partitions_def=SOURCE_PARTITIONS,
    group_name=LINEAGE_GROUP,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def redacted_documents(
    context: dg.AssetExecutionContext, postgres: PostgresResource, catalog: SourceCatalogResource
) -> dg.MaterializeResult:
    """Parsed documents with PII and secrets redacted, masked or flagged per the source's policy.

    Chunking reads these, never the parsed text, so chunks, embeddings, the full-text index and
    every response hold only what the policy leaves. Detection runs once per document version
    and detector version (findings are stored as types and offsets, never values); a policy
    change re-applies the stored findings without scanning again. Every redaction gets an audit
    row (`rag.redaction_audit`). The redaction key (detector and step version, policy) selects
    the source's current chunks, so a policy change rebuilds only this source's chunks.
    """
    started = time.perf_counter()
    source = context.partition_key
    policy = catalog.source(source).redaction
    version = detector_version()
    key = redaction_key(version, policy)
    scanning = scan_key(version, policy.pii_scope)
    detect = None
    scanned, redacted, failed = 0, 0, []
    totals: dict[str, int] = {}
    preview = []
    with postgres.connection() as conn:
        with conn.transaction():
            switched = switch_source_redaction(conn, source, key, policy, context.run_id)
        for doc in documents_to_redact(conn, source, PARSER_KEY, key):
            elements = load_parsed_elements(conn, doc.doc_id, doc.content_hash, PARSER_KEY)
            title = doc.title or doc.relative_path
            findings = load_scan(conn, doc, PARSER_KEY, scanning)
            try:
                if findings is None:
                    detect = detect or sensitive_detector(policy.pii_scope)
                    scan_started = time.perf_counter()
                    findings = scan_document(title, elements, detect)
                    duration_ms = round((time.perf_counter() - scan_started) * 1000)
                    with conn.transaction():
                        save_scan(
                            conn, doc, PARSER_KEY, scanning, findings, duration_ms, context.run_id
                        )
                    scanned += 1
                result = apply_policy(title, elements, findings, policy)
            except (ValueError, RuntimeError) as error:
                # Fail closed: a document the step cannot redact is never chunked or served.
                with conn.transaction():
                    quarantine_document(
                        conn,
                        doc,
                        "redact",
                        key,
                        "redaction_failed",
                        # The type only: a detector's message might quote the text.
                        f"{type(error).__name__} while redacting",
                        context.run_id,
                    )
                failed.append((doc.doc_id, type(error).__name__))
                context.log.warning(f"quarantined {doc.doc_id}: redaction failed")
                continue
            with conn.transaction():
                save_redacted(conn, doc, PARSER_KEY, key, version, result, context.run_id)
            redacted += 1
            counts = result.counts()
            for name, count in counts.items():
                totals[name] = totals.get(name, 0) + count
            if counts:
                preview.append(
                    (doc.doc_id, ", ".join(f"{name} x{count}" for name, count in counts.items()))
                )
    with postgres.connection() as conn:
        rows = row_count_metadata(conn, "redacted_documents", context.partition_key)
    return dg.MaterializeResult(
        metadata={
            **rows,
            "redaction_key": key,
            "policy_switched": switched,
            "documents_scanned": scanned,
            "documents_redacted": redacted,
            "documents_quarantined": len(failed),
            "findings": sum(totals.values()),
            "findings_by_type_and_action": dg.MetadataValue.json(totals),
            "duration_s": round(time.perf_counter() - started, 3),
            # Types and counts only: metadata lands in Dagster's event log, which must never
            # hold a detected value.
            "preview": dg.MetadataValue.md(
                (
                    table(("doc_id", "findings (type:action)"), preview)
                    if preview
                    else f"Nothing new with findings ({redacted} documents redacted)."
                )
                + ("\n\n**Quarantined**\n\n" + table(("doc_id", "error"), failed) if failed else "")
            ),
        }
    )
