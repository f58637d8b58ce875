import time

import dagster as dg

from rag_pipeline.defs.markdown import table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import PostgresResource, SourceCatalogResource
from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.connectors import scan_filesystem_source, stale_sidecar_entries
from rag_pipeline.lib.pipeline_store import current_quarantine, sync_source


@dg.asset(
    partitions_def=SOURCE_PARTITIONS,
    group_name="connectors",
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def source_documents(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    catalog: SourceCatalogResource,
) -> dg.MaterializeResult:
    """Documents of one source, as found by its connector, with their raw bytes.

    Each document has a stable id (`<source>:<path>`), uri, SHA-256 content hash, mime type,
    owner, tenant and ACL principals from the source's sidecar metadata. New, changed, restored
    and deleted documents are recorded as audit events, with the ACL each event leaves them
    with; deleted ones are tombstoned. A file that cannot be ingested, or whose access metadata
    is doubtful (a sidecar entry that does not match it exactly, a tenant the source may not
    publish into, a malformed field), is quarantined with a reason instead of failing the run;
    quarantine is re-evaluated on every scan. Only a problem of the whole source (missing
    folder, no `tenants` in the sources file, unreadable sidecar) fails this partition.
    """
    started = time.perf_counter()
    try:
        source = catalog.source(context.partition_key)
        stale = stale_sidecar_entries(source)
        if stale:
            context.log.warning(f"sidecar entries without a file in {source.name}: {stale}")
        documents = scan_filesystem_source(source, catalog.max_document_bytes)
        with postgres.connection() as conn:
            report = sync_source(
                conn, source.name, documents, context.run_id, stale_sidecar_entries=stale
            )
            quarantine = current_quarantine(conn, source.name)
    except ConfigurationError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    quarantine_rows = [(q.doc_id, q.stage, q.reason_code, q.reason) for q in quarantine]
    return dg.MaterializeResult(
        metadata={
            "documents_discovered": report.discovered,
            "documents_added": len(report.added),
            "documents_changed": len(report.changed),
            "documents_metadata_changed": len(report.metadata_changed),
            "documents_restored": len(report.restored),
            "documents_newly_quarantined": len(report.newly_quarantined),
            "documents_released": len(report.released),
            "documents_deleted": len(report.deleted),
            "documents_unchanged": report.unchanged,
            "documents_quarantined": len(quarantine_rows),
            "bytes_scanned": report.bytes_read,
            "stale_sidecar_entries": dg.MetadataValue.json(stale),
            "duration_s": round(time.perf_counter() - started, 3),
            "quarantine": dg.MetadataValue.json(
                [
                    dict(zip(("doc_id", "stage", "reason_code", "reason"), row, strict=True))
                    for row in quarantine_rows
                ]
            ),
            "preview": dg.MetadataValue.md(
                f"**{source.name}**: {report.discovered} files, {len(report.added)} added, "
                f"{len(report.changed)} changed, {len(report.deleted)} deleted\n\n"
                + (
                    table(("doc_id", "stage", "reason", "detail"), quarantine_rows)
                    if quarantine_rows
                    else "No quarantined documents."
                )
            ),
        }
    )
