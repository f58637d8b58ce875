import time
from typing import Any

import dagster as dg
import psycopg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.connectors.quarantine import quarantine_overview_metadata
from rag_pipeline.defs.embeddings.assets import chunk_embeddings
from rag_pipeline.defs.freshness.sensors import freshness_metadata, last_successful_scans
from rag_pipeline.defs.indexes.history import change_markdown, change_metadata
from rag_pipeline.defs.resources import (
    ChunkingResource,
    EmbedderResource,
    IndexPolicyResource,
    PostgresResource,
    SourceCatalogResource,
    index_keys,
)
from rag_pipeline.lib.audit import audit_markdown, audit_trail
from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.freshness_store import database_now, measure
from rag_pipeline.lib.index_versions import (
    PromotionBlockedError,
    active_version_id,
    build_candidate,
    promote,
)
from rag_pipeline.lib.quality_gates import PROMOTION_CHECKS
from rag_pipeline.lib.serving_history import latest_serving_change
from rag_pipeline.lib.stores.sources import tombstone_removed_sources

# Document ids listed per kind of change in the diff preview (the JSON `diff` holds up to 200).
DIFF_IDS_SHOWN = 10


def diff_markdown(diff: dict[str, Any]) -> str:
    documents = diff.get("documents", {})
    base = diff.get("base_version")
    lines = [f"Against version **{base}**" if base is not None else "First version", ""]
    for kind in ("added", "removed", "changed", "acl_changed"):
        entry = documents.get(kind, {"count": 0, "ids": []})
        shown = ", ".join(f"`{doc_id}`" for doc_id in entry["ids"][:DIFF_IDS_SHOWN])
        more = entry["count"] - min(len(entry["ids"]), DIFF_IDS_SHOWN)
        lines.append(
            f"- documents {kind}: **{entry['count']}** {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    chunk_counts = diff.get("chunks", {})
    lines.append(
        f"- chunks: +{chunk_counts.get('added', 0)} / -{chunk_counts.get('removed', 0)} "
        f"/ ={chunk_counts.get('unchanged', 0)}"
    )
    for key in ("model_changed", "parser_changed", "chunker_changed"):
        if diff.get(key):
            lines.append(f"- **{key.replace('_', ' ')}**")
    return "\n".join(lines)


@dg.asset(
    deps=[chunk_embeddings],
    group_name=LINEAGE_GROUP,
    kinds={"pgvector", "postgres"},
    automation_condition=dg.AutomationCondition.eager(),
)
def vector_index(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    chunking: ChunkingResource,
    catalog: SourceCatalogResource,
) -> dg.MaterializeResult:
    """A candidate index version over all sources: every current, embedded chunk with its ACL.

    First, the documents of sources no longer in the sources file are tombstoned (audited as
    `source_removed`), so they leave this candidate and its removal gate judges that like any
    mass deletion; nothing is tombstoned while the sources file fails to load. A version is
    identified by (embedding model, parser, chunker, corpus snapshot); an unchanged corpus maps
    to the existing version and nothing is written. Vectors are served through an HNSW index
    (cosine) and text through a GIN-indexed tsvector. The candidate carries a diff against the
    serving version and is promoted by `active_index` only if its gates pass.
    """
    started = time.perf_counter()
    keys = index_keys(embedder, chunking)
    try:
        configured = [source.name for source in catalog.sources()]
        sources_error = ""
    except ConfigurationError as error:
        # An unreadable sources file says nothing about which sources were removed.
        configured, sources_error = [], str(error)
        context.log.warning(f"not tombstoning removed sources: {error}")
    with postgres.connection() as conn:
        removed = tombstone_removed_sources(conn, configured, context.run_id) if configured else []
        candidate = build_candidate(conn, keys, context.run_id)
        serving = active_version_id(conn)
        rows = row_count_metadata(conn, "vector_index")
        overview = quarantine_overview_metadata(conn)
    return dg.MaterializeResult(
        metadata={
            "version_id": candidate.version_id,
            "version_created": candidate.created,
            # Not the version's status: that changes when `active_index` promotes it, after
            # this event is written (`rag-pipeline index status` has the current one).
            **({"serving_version_id_at_build": serving} if serving is not None else {}),
            "documents": candidate.document_count,
            "chunks": candidate.chunk_count,
            "model": keys.model_key,
            "chunker": keys.chunker_key,
            "parser": keys.parser_key,
            "documents_of_removed_sources_tombstoned": len(removed),
            **({"sources_file_error": sources_error} if sources_error else {}),
            **rows,
            **overview,
            "diff": dg.MetadataValue.json(candidate.diff),
            "duration_s": round(time.perf_counter() - started, 3),
            "preview": dg.MetadataValue.md(diff_markdown(candidate.diff)),
        }
    )


def latest_candidate_version(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
) -> int:
    """The version the latest `vector_index` materialization built or found."""
    event = context.instance.get_latest_materialization_event(vector_index.key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("vector_index has never been materialized", allow_retries=False)
    return int(event.asset_materialization.metadata["version_id"].value)


# The candidate's evaluation report (rag_pipeline.defs.evaluation), by key: that module imports
# this one. Its blocking quality gate must pass before promotion.
EVALUATION_REPORT = dg.AssetKey("evaluation_report")


@dg.asset(
    deps=[vector_index, EVALUATION_REPORT],
    group_name=LINEAGE_GROUP,
    kinds={"postgres"},
    automation_condition=dg.AutomationCondition.eager(),
)
def active_index(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    index_policy: IndexPolicyResource,
    catalog: SourceCatalogResource,
) -> dg.MaterializeResult:
    """The serving index version: the latest candidate, once all its blocking gates passed.

    Promotion is one transaction on the `rag.active_index` pointer, so queries see the old or
    the new version, never a mix; `rag-pipeline index rollback` re-points to the previous one.
    Every promotion and rollback, by this asset, `promote_index_job`/`rollback_index_job` or the
    CLI (published by `serving_history_sensor`), is a materialization here saying which version
    serves, the previous one, who, why and the gates it passed. The metadata also carries the
    audit trail (the latest promotions, rollbacks, overrides and erasures: who, why, from which
    version, the gates' results) and each source's measured freshness (how long its changes took
    to become searchable, what is still pending).
    """
    version_id = latest_candidate_version(context)
    with postgres.connection() as conn:
        switched = False
        if index_policy.auto_promote:
            try:
                switched = promote(
                    conn,
                    version_id,
                    actor=f"dagster run {context.run_id}",
                    required_checks=PROMOTION_CHECKS,
                    reason="automatic promotion after checks",
                )
            except PromotionBlockedError as error:
                raise dg.Failure(str(error), allow_retries=False) from error
        serving = active_version_id(conn)
        change = latest_serving_change(conn)
        # One more than shown, to say whether older entries exist.
        trail = audit_trail(conn, limit=AUDIT_ENTRIES_IN_METADATA + 1)
        older = len(trail) > AUDIT_ENTRIES_IN_METADATA
        trail = trail[:AUDIT_ENTRIES_IN_METADATA]
        freshness = _measured_freshness(context, conn, catalog)
        rows = row_count_metadata(conn, "active_index")
    # The switch that made the serving version serve (this run's, or an earlier one when
    # nothing changed): who, why, previous version, gates. Its `promotion_id` tells
    # `serving_history_sensor` that this switch is already on the page.
    serving_facts = change_metadata(change) if change is not None else {}
    serving_facts.pop("preview", None)
    return dg.MaterializeResult(
        metadata={
            # Only facts that exist: a placeholder would be plotted or read as a version.
            **serving_facts,
            **({"serving_version_id": serving} if serving is not None else {}),
            "switched": switched,
            "preview": dg.MetadataValue.md(
                (change_markdown(change) if change is not None else "No version serves yet.")
                + ("" if switched else "\n\nThis run did not switch the serving version.")
            ),
            **rows,
            "audit_trail": dg.MetadataValue.json([entry.as_dict() for entry in trail]),
            "audit_table": dg.MetadataValue.md(
                audit_markdown(trail)
                + (
                    f"\n\nThe latest {AUDIT_ENTRIES_IN_METADATA} entries; older ones: "
                    "`rag-pipeline audit --limit N`."
                    if older
                    else ""
                )
            ),
            **freshness,
        }
    )


AUDIT_ENTRIES_IN_METADATA = 10


def _measured_freshness(
    context: dg.AssetExecutionContext, conn: psycopg.Connection, catalog: SourceCatalogResource
) -> dict[str, Any]:
    """Each configured source's freshness right after this promotion (none while the sources
    file does not load: `vector_index` reports that error)."""
    try:
        targets = {source.name: source.freshness for source in catalog.sources()}
    except ConfigurationError:
        return {}
    scans = last_successful_scans(context.instance, sorted(targets))
    states = measure(conn, targets, now=database_now(conn), last_scans=scans)
    return freshness_metadata(states)
