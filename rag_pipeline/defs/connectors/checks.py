"""Per-source health checks on `source_documents`: warnings for operators, never gates.

Both are partitioned like the asset, so each source shows its own result, and non-blocking: a
source with many refused files or unreadable documents still ingests the rest (the blocking
gates on `vector_index` decide what may serve). They run after the source's whole ingestion in
the same run (`additional_deps`), so refusals by the parser and chunker count too.
"""

import warnings

import dagster as dg

from rag_pipeline.defs.connectors.assets import source_documents
from rag_pipeline.defs.embeddings.assets import chunk_embeddings
from rag_pipeline.defs.markdown import table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.defs.resources import PostgresResource
from rag_pipeline.lib.quarantine_summary import MAX_QUARANTINE_RATE, health_of
from rag_pipeline.lib.stores.quarantine import current_quarantine

QUARANTINE_RATE_CHECK = "quarantine_rate_within_limit"
ACL_CHECK = "served_documents_have_acl"


# Partitioned checks are a Dagster preview feature; its warning would be printed by every
# command that loads the definitions. Silenced for these two definitions only.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=source_documents,
        name=QUARANTINE_RATE_CHECK,
        blocking=False,
        partitions_def=SOURCE_PARTITIONS,
        additional_deps=[chunk_embeddings],
        description=f"Warns when more than {MAX_QUARANTINE_RATE:.0%} of the source's present "
        "documents are quarantined (any stage); lists them with their reasons. Non-blocking.",
    )
    def quarantine_rate_within_limit(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """The share of the source's present documents that some stage refused, with the list."""
        source = context.partition_key
        with postgres.connection() as conn:
            health = health_of(conn, source)
            refused = current_quarantine(conn, source)
        passed = health.quarantine_rate <= MAX_QUARANTINE_RATE
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{source}: {health.quarantined} of {health.documents} documents quarantined "
                f"({health.quarantine_rate:.0%}; limit {MAX_QUARANTINE_RATE:.0%})"
            ),
            metadata={
                "source": source,
                "documents": health.documents,
                "quarantined": health.quarantined,
                "quarantine_rate": round(health.quarantine_rate, 4),
                "max_quarantine_rate": MAX_QUARANTINE_RATE,
                "quarantined_documents": dg.MetadataValue.md(
                    table(
                        ("document", "stage", "reason", "detail"),
                        [(q.doc_id, q.stage, q.reason_code, q.reason) for q in refused],
                    )
                    if refused
                    else "None."
                ),
            },
        )

    @dg.asset_check(
        asset=source_documents,
        name=ACL_CHECK,
        blocking=False,
        partitions_def=SOURCE_PARTITIONS,
        additional_deps=[chunk_embeddings],
        description="Warns when a document of the source that is not quarantined has an empty ACL: "
        "it is indexed but nobody can read it (usually a sidecar without owner or acl). "
        "Non-blocking.",
    )
    def served_documents_have_acl(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Every present, non-quarantined document of the source names at least one reader."""
        source = context.partition_key
        with postgres.connection() as conn:
            health = health_of(conn, source)
        return dg.AssetCheckResult(
            passed=health.without_acl == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{source}: {health.without_acl} of {health.documents - health.quarantined} "
                "served documents have no ACL principal"
            ),
            metadata={
                "source": source,
                "documents_without_acl": health.without_acl,
                "documents_served": health.documents - health.quarantined,
                "documents": dg.MetadataValue.md(
                    table(("document",), [(doc_id,) for doc_id in health.without_acl_ids])
                    if health.without_acl_ids
                    else "None."
                ),
            },
        )
