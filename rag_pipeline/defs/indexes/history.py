"""The serving index's history on `active_index`'s page, whoever switched it.

Every promotion and rollback is a row of `rag.index_promotions` (written by
`lib.index_versions.promote`, which the jobs and `rag-pipeline index ...` share). Each row not
yet published becomes a materialization of `active_index` (the pointer it describes changed),
carrying who, why, the previous version and the gates the served version passed. The jobs
publish in their own run, `serving_history_sensor` publishes what the CLI did, and
`report_serving_changes` lets any other caller with a Dagster instance publish at once.
Publishing is idempotent: a row whose `promotion_id` is already on the page is skipped.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg

from rag_pipeline.defs.catalog_metadata import row_count_metadata
from rag_pipeline.defs.markdown import table
from rag_pipeline.defs.resources import PostgresResource
from rag_pipeline.lib.index_versions import GarbageCollection, active_version_id
from rag_pipeline.lib.serving_history import ServingChange, serving_changes_after

ACTIVE_INDEX = dg.AssetKey("active_index")
PROMOTION_ID = "promotion_id"
ACTION_WORDS = {"promote": "Promoted", "rollback": "Rolled back to"}


def change_metadata(change: ServingChange) -> dict[str, Any]:
    """The switch as metadata: only facts that exist (no placeholder for a missing reason)."""
    metadata: dict[str, Any] = {
        "serving_version_id": change.to_version,
        "action": change.action,
        "actor": change.actor,
        "reason": change.reason or "(no reason given)",
        PROMOTION_ID: change.promotion_id,
        "switched_at": dg.MetadataValue.timestamp(change.switched_at),
        "gates_passed": dg.MetadataValue.json(list(change.gates_passed)),
    }
    if change.from_version is not None:
        metadata["previous_version_id"] = change.from_version
    if change.gates_failed:
        metadata["gates_failed"] = dg.MetadataValue.json(list(change.gates_failed))
    if change.document_count is not None and change.chunk_count is not None:
        metadata["documents"] = change.document_count
        metadata["chunks"] = change.chunk_count
    metadata["preview"] = dg.MetadataValue.md(change_markdown(change))
    return metadata


def change_summary(change: ServingChange) -> str:
    """One plain line: what switched, from which version, when, by whom."""
    previous = (
        f"was version {change.from_version}"
        if change.from_version is not None
        else "first serving version"
    )
    return (
        f"{ACTION_WORDS.get(change.action, change.action)} version {change.to_version} "
        f"({previous}) at {change.switched_at:%Y-%m-%d %H:%M:%S %Z} by {change.actor}"
    )


def change_markdown(change: ServingChange) -> str:
    previous = (
        f" (was version {change.from_version})"
        if change.from_version is not None
        else " (first serving version)"
    )
    gates = ", ".join(f"`{name}`" for name in change.gates_passed) or "none recorded"
    lines = [
        f"{ACTION_WORDS.get(change.action, change.action)} version **{change.to_version}**"
        f"{previous} at {change.switched_at:%Y-%m-%d %H:%M:%S %Z}",
        "",
        f"- by: `{change.actor}`",
        f"- why: {change.reason or '(no reason given)'}",
        f"- gates passed ({len(change.gates_passed)}): {gates}",
    ]
    if change.gates_failed:
        lines.append(f"- gates failed: {', '.join(change.gates_failed)}")
    if change.action == "rollback":
        lines.append("- a rollback re-serves a version whose gates passed when it was built")
    return "\n".join(lines)


def change_materialization(
    change: ServingChange, extra: dict[str, Any] | None = None
) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=ACTIVE_INDEX,
        description=change_summary(change),
        metadata={**change_metadata(change), **(extra or {})},
    )


def last_published_promotion_id(instance: dg.DagsterInstance) -> int:
    """The newest `promotion_id` on `active_index`'s latest materialization, 0 if none."""
    records = instance.fetch_materializations(ACTIVE_INDEX, limit=1).records
    if not records or records[0].asset_materialization is None:
        return 0
    value = records[0].asset_materialization.metadata.get(PROMOTION_ID)
    return int(value.value) if value is not None else 0


def unpublished_changes(
    instance: dg.DagsterInstance, conn: psycopg.Connection
) -> list[dg.AssetMaterialization]:
    """Materializations of every switch newer than the page shows, oldest first."""
    after = last_published_promotion_id(instance)
    changes = serving_changes_after(conn, after)
    rows = row_count_metadata(conn, "active_index") if changes else {}
    return [change_materialization(change, rows) for change in changes]


def report_serving_changes(instance: dg.DagsterInstance, conn: psycopg.Connection) -> int:
    """Publish every unpublished switch outside any run (for callers such as the CLI)."""
    events = unpublished_changes(instance, conn)
    for event in events:
        instance.report_runless_asset_event(event)
    return len(events)


def garbage_collection_observation(
    report: GarbageCollection, serving_version_id: int | None, keep: int
) -> dg.AssetObservation:
    """What a garbage collection removed, as an observation of `active_index` (it never
    removes the serving version or its rollback target)."""
    removed = report.versions_removed
    metadata: dict[str, Any] = {
        "event": "garbage_collection",
        "versions_kept_newest": keep,
        "versions_removed_count": len(removed),
        "versions_removed": dg.MetadataValue.json(removed),
        "chunks_removed": report.chunks_removed,
        "parses_removed": report.parses_removed,
        "embeddings_removed": report.embeddings_removed,
        "blobs_removed": report.blobs_removed,
        "lexical_postings_removed": report.lexical_postings_removed,
    }
    if serving_version_id is not None:
        metadata["serving_version_id"] = serving_version_id
    shown = ", ".join(str(version) for version in removed[:20])
    more = f" and {len(removed) - 20} more" if len(removed) > 20 else ""
    metadata["preview"] = dg.MetadataValue.md(
        f"Garbage collection kept the newest {keep} versions"
        + (f", the serving version {serving_version_id}" if serving_version_id else "")
        + " and its rollback target; "
        + (f"removed versions {shown}{more}." if removed else "removed no version.")
        + "\n\n"
        + table(
            ("rows removed", "count"),
            [
                ("chunks", report.chunks_removed),
                ("parsed documents", report.parses_removed),
                ("embeddings", report.embeddings_removed),
                ("source blobs", report.blobs_removed),
                ("lexical postings", report.lexical_postings_removed),
            ],
        )
    )
    return dg.AssetObservation(asset_key=ACTIVE_INDEX, metadata=metadata)


def report_garbage_collection(
    instance: dg.DagsterInstance, conn: psycopg.Connection, report: GarbageCollection, keep: int
) -> None:
    """Publish a garbage collection outside any run (for callers such as the CLI)."""
    instance.report_runless_asset_event(
        garbage_collection_observation(report, active_version_id(conn), keep)
    )


SERVING_HISTORY_INTERVAL_SECONDS = 30


@dg.sensor(
    minimum_interval_seconds=SERVING_HISTORY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="On by default. Every 30 seconds, publishes promotions and rollbacks made "
    "outside Dagster runs (`rag-pipeline index promote/rollback`) as materializations of "
    "`active_index`, with who, why, the previous version and the gates passed, so the serving "
    "index's page never shows a version that no longer serves.",
)
def serving_history_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult:
    """Publish every switch of `rag.index_promotions` that `active_index`'s page lacks."""
    with postgres.connection() as conn:
        events = unpublished_changes(context.instance, conn)
    return dg.SensorResult(
        asset_events=list(events),
        skip_reason=None if events else "the serving history is up to date",
    )
