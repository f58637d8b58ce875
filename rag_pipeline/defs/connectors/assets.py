import time

import dagster as dg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.connectors.quarantine import quarantine_overview_metadata
from rag_pipeline.defs.markdown import table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import PostgresResource, SourceCatalogResource
from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.connectors import ScanState, scan_source
from rag_pipeline.lib.stores.quarantine import current_quarantine
from rag_pipeline.lib.stores.sources import sync_source


@dg.asset(
    partitions_def=SOURCE_PARTITIONS,
    group_name=LINEAGE_GROUP,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def source_documents(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    catalog: SourceCatalogResource,
) -> dg.MaterializeResult:
    """Documents of one source, as found by its connector, with their raw bytes.

    The source's `connector:` (filesystem, git, wiki export, ticket export) lists its items; each
    document has a stable id (`<source>:<item>`), uri, SHA-256 content hash, mime type, owner,
    tenant and ACL principals, and what the connector knows of it (commit, page, ticket).
    Connectors that can tell an unchanged item without reading it (git) skip its bytes.

    New, changed, restored and deleted documents are recorded as audit events, with the ACL
    each event leaves them with; deleted ones are tombstoned. An item that cannot be ingested,
    or whose access metadata is doubtful (a sidecar entry that does not match it exactly, a
    tenant the source may not publish into, a malformed field), is quarantined with a reason
    instead of failing the run; quarantine is re-evaluated on every scan. Only a problem of the
    whole source (missing folder or repository, no `tenants`, an unreadable sidecar or export)
    fails this partition.
    """
    started = time.perf_counter()
    try:
        source = catalog.source(context.partition_key)
        state = ScanState(max_document_bytes=catalog.max_document_bytes)
        with postgres.connection() as conn:
            report = sync_source(
                conn,
                source.name,
                scan_source(source, state),
                context.run_id,
                state=state,
                connector=source.connector,
            )
            quarantine = current_quarantine(conn, source.name)
            # Every source's quarantine, not only this partition's: the overview shows the
            # latest materialization, which is one source's.
            overview = quarantine_overview_metadata(conn)
            rows = row_count_metadata(conn, "source_documents", source.name)
        for warning in state.warnings:
            context.log.warning(warning)
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
            "connector": source.connector,
            "stale_sidecar_entries": dg.MetadataValue.json(state.stale_sidecar_entries),
            "cursor": dg.MetadataValue.json(state.next_cursor or {}),
            "duration_s": round(time.perf_counter() - started, 3),
            "quarantine": dg.MetadataValue.json(
                [
                    dict(zip(("doc_id", "stage", "reason_code", "reason"), row, strict=True))
                    for row in quarantine_rows
                ]
            ),
            **rows,
            **overview,
            "preview": dg.MetadataValue.md(
                f"**{source.name}** ({source.connector}): {report.discovered} items, "
                f"{len(report.added)} added, "
                f"{len(report.changed)} changed, {len(report.deleted)} deleted\n\n"
                + (
                    table(("doc_id", "stage", "reason", "detail"), quarantine_rows)
                    if quarantine_rows
                    else f"No quarantined documents in {source.name}."
                )
                # This page shows one partition at a time: say what the other sources hold.
                + f"\n\n**{overview['quarantined_all_sources']} quarantined across all sources**"
                " (table: `quarantine_all_sources`)."
            ),
        }
    )
