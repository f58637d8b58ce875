"""Freshness SLAs: Dagster freshness policies on the assets, and the sensor that records breaches.

Two layers, on purpose. Dagster's freshness policy (evaluated by the daemon's freshness loop)
only knows when an asset last materialized: it tells that the pipeline runs. Whether a change
at a source reached search in time is measured by `rag_pipeline.lib.freshness` from the document
events and the serving history, per source, and enforced by `freshness_sla_sensor`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from rag_pipeline.defs.markdown import table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.defs.resources import PostgresResource, SourceCatalogResource
from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.freshness import SourceFreshness, format_duration
from rag_pipeline.lib.freshness_store import database_now, measure, record_breaches

SOURCE_DOCUMENTS = dg.AssetKey("source_documents")
# The assets whose Dagster freshness policy follows the tightest source target: the scan, the
# candidate and the serving pointer (what "searchable" means).
FRESHNESS_POLICY_ASSETS = ("source_documents", "vector_index", "active_index")
SENSOR_INTERVAL_SECONDS = 300


def tightest_target(sources: Iterable[SourceConfig]) -> timedelta | None:
    """The shortest `freshness:` target of the sources, None if none declares one."""
    targets = [source.freshness for source in sources if source.freshness is not None]
    return min(targets) if targets else None


def asset_freshness_policy(sources: Iterable[SourceConfig]) -> dg.FreshnessPolicy | None:
    """A time-window policy failing when an asset has not materialized within the tightest
    target (warning at half of it), or None when no source declares a target."""
    target = tightest_target(sources)
    if target is None:
        return None
    warn = target / 2 if target / 2 >= timedelta(minutes=1) else None
    return dg.FreshnessPolicy.time_window(fail_window=target, warn_window=warn)


def last_successful_scans(
    instance: dg.DagsterInstance, sources: Sequence[str]
) -> dict[str, datetime]:
    """When each source's `source_documents` partition last materialized (a failed scan
    materializes nothing, so this is the last successful one)."""
    scans: dict[str, datetime] = {}
    for name in sources:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SOURCE_DOCUMENTS, asset_partitions=[name]), limit=1
        ).records
        if records:
            scans[name] = datetime.fromtimestamp(records[0].timestamp, tz=UTC)
    return scans


def freshness_rows(states: Sequence[SourceFreshness]) -> list[tuple[str, ...]]:
    """One row per source for the CLI table and the metadata preview (no placeholder numbers:
    a fact that does not exist yet says why)."""

    def duration(value: timedelta | None, missing: str) -> str:
        return format_duration(value) if value is not None else missing

    rows = []
    for state in states:
        rows.append(
            (
                state.source,
                state.state.upper() if state.breached else state.state,
                duration(state.target, "none"),
                duration(state.latest_lag, "none in window"),
                duration(state.max_lag, "none in window"),
                str(state.pending_changes),
                duration(state.oldest_pending_age, "-"),
                str(state.documents_behind_serving),
                f"{state.last_scan_at:%Y-%m-%d %H:%M:%S}" if state.last_scan_at else "unknown",
            )
        )
    return rows


FRESHNESS_HEADERS = (
    "source",
    "state",
    "target",
    "latest lag",
    "max lag (window)",
    "pending",
    "oldest pending",
    "behind serving",
    "last scan (UTC)",
)


def freshness_metadata(states: Sequence[SourceFreshness]) -> dict[str, Any]:
    """Per-source lag as plottable numbers (only those that exist) plus a table and JSON."""
    metadata: dict[str, Any] = {
        "freshness": dg.MetadataValue.json([state.as_dict() for state in states]),
        "freshness_table": dg.MetadataValue.md(table(FRESHNESS_HEADERS, freshness_rows(states))),
        "freshness_breached_sources": dg.MetadataValue.json(
            [state.source for state in states if state.breached]
        ),
    }
    for state in states:
        prefix = f"freshness/{state.source}"
        metadata[f"{prefix}/pending_changes"] = state.pending_changes
        metadata[f"{prefix}/documents_behind_serving"] = state.documents_behind_serving
        metadata[f"{prefix}/current_lag_s"] = round(state.current_lag.total_seconds(), 3)
        if state.latest_lag is not None:
            metadata[f"{prefix}/latest_lag_s"] = round(state.latest_lag.total_seconds(), 3)
        if state.max_lag is not None:
            metadata[f"{prefix}/max_lag_s"] = round(state.max_lag.total_seconds(), 3)
    return metadata


@dg.sensor(
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 minutes: measure, per source, how long changes take to become "
    "searchable, and record a freshness SLA breach in rag.freshness_breaches when a change "
    "stays pending longer than the source's `freshness:` target (one row per breach, resolved "
    "when the source is back within target).",
)
def freshness_sla_sensor(
    context: dg.SensorEvaluationContext,
    postgres: PostgresResource,
    catalog: SourceCatalogResource,
) -> dg.SensorResult:
    """Evaluate every source's freshness SLA and record breaches once, resolving them later.

    A breach that began and ended between two ticks (a change searchable late before any tick
    saw it pending) is recorded after the fact, already resolved, once.
    Each new breach and each resolution is logged and reported as an observation of the
    source's `source_documents` partition. The cursor keeps the sources in breach, so a tick
    says what changed since the last one. Re-ingesting would not help a breach (the change was
    detected; what is late is the index build or its promotion), so no run is requested.
    """
    try:
        sources = catalog.sources()
    except ConfigurationError as error:
        return dg.SensorResult(skip_reason=f"sources file is invalid: {error}")
    targets = {source.name: source.freshness for source in sources}
    scans = last_successful_scans(context.instance, sorted(targets))
    with postgres.connection() as conn:
        now = database_now(conn)
        states = measure(conn, targets, now=now, last_scans=scans)
        changes = record_breaches(conn, states, now)
    by_source = {state.source: state for state in states}
    partitions = set(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS.name))
    events: list[dg.AssetObservation] = []
    for breach in changes.opened:
        context.log.warning(
            f"freshness breach: {breach.source}: {breach.pending_changes} change(s) pending, "
            f"oldest {breach.oldest_pending_doc_id} ({breach.oldest_pending_event}) for "
            f"{format_duration(timedelta(seconds=breach.lag_seconds))}, target "
            f"{format_duration(timedelta(seconds=breach.target_seconds))}"
        )
    for breach in changes.resolved:
        context.log.info(f"freshness breach resolved: {breach.source}: {breach.resolution}")
    for breach in changes.recorded_late:
        context.log.warning(
            f"freshness breach between evaluations: {breach.source}: {breach.pending_changes} "
            f"change(s) became searchable late, worst "
            f"{format_duration(timedelta(seconds=breach.worst_lag_seconds))}, target "
            f"{format_duration(timedelta(seconds=breach.target_seconds))}"
        )
    for breach in [*changes.opened, *changes.resolved, *changes.recorded_late]:
        if breach.source in partitions and breach.source in by_source:
            events.append(
                dg.AssetObservation(
                    asset_key=SOURCE_DOCUMENTS,
                    partition=breach.source,
                    metadata={
                        "freshness_breach": dg.MetadataValue.json(breach.as_dict()),
                        "freshness_state": by_source[breach.source].state,
                    },
                )
            )
    breached = sorted(state.source for state in states if state.breached)
    summary = (
        f"{len(states)} sources evaluated; in breach: {', '.join(breached) or 'none'}; "
        f"opened {len(changes.opened)}, resolved {len(changes.resolved)}, "
        f"recorded after the fact {len(changes.recorded_late)}"
    )
    context.log.info(summary)
    return dg.SensorResult(
        asset_events=events,
        cursor=json.dumps({"breached": breached, "evaluated_at": now.isoformat()}),
        skip_reason=None if events else summary,
    )
