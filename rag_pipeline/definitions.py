"""The code location: every stage's assets, checks, jobs, schedules and sensors, plus resources."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from rag_pipeline.defs import jobs
from rag_pipeline.defs.catalog_metadata import describe_spec
from rag_pipeline.defs.chunking import assets as chunking
from rag_pipeline.defs.connectors import assets as connectors
from rag_pipeline.defs.connectors import checks as source_checks
from rag_pipeline.defs.connectors import sensors as connector_sensors
from rag_pipeline.defs.embeddings import assets as embeddings
from rag_pipeline.defs.evaluation import assets as evaluation
from rag_pipeline.defs.freshness import sensors as freshness_sensors
from rag_pipeline.defs.indexes import assets as indexes
from rag_pipeline.defs.indexes import checks as index_checks
from rag_pipeline.defs.indexes import chunk_checks, history, maintenance
from rag_pipeline.defs.parsing import assets as parsing
from rag_pipeline.defs.redaction import assets as redaction
from rag_pipeline.defs.resources import build_resources
from rag_pipeline.lib.catalog import ConfigurationError, load_sources, sources_file_from_env

STAGES = [connectors, parsing, redaction, chunking, embeddings, indexes, evaluation]


def build_defs(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The definitions with resources from the environment, or the given ones (tests, benches)."""
    resources = resources if resources is not None else build_resources()
    return dg.Definitions(
        assets=dg.map_asset_specs(
            describe_spec,
            _with_freshness_policy(dg.load_assets_from_modules(STAGES), resources),
        ),
        asset_checks=dg.load_asset_checks_from_modules([index_checks, chunk_checks, source_checks]),
        jobs=[
            jobs.ingest_source_job,
            jobs.build_index_job,
            maintenance.promote_index_job,
            maintenance.rollback_index_job,
            maintenance.gc_index_job,
        ],
        schedules=[jobs.daily_reindex_schedule, maintenance.gc_index_schedule],
        sensors=[
            connector_sensors.source_catalog_sensor,
            freshness_sensors.freshness_sla_sensor,
            history.serving_history_sensor,
            jobs.index_automation_sensor,
        ],
        resources=resources,
    )


def _with_freshness_policy(assets: Sequence[Any], resources: dict[str, Any]) -> list[Any]:
    """Global policy in one place: the tightest source target as the Dagster freshness policy of
    the assets that say "searchable" (`FRESHNESS_POLICY_ASSETS`)."""
    policy = _freshness_policy(resources)
    if policy is None:
        return list(assets)
    selected = {dg.AssetKey(name) for name in freshness_sensors.FRESHNESS_POLICY_ASSETS}
    return list(
        dg.map_asset_specs(
            lambda spec: dg.apply_freshness_policy(spec, policy) if spec.key in selected else spec,
            assets,
        )
    )


def _freshness_policy(resources: dict[str, Any]) -> dg.FreshnessPolicy | None:
    """The asset-level policy from the configured sources; none while the file does not load
    (the sensors report that file's error, and the code location must still load)."""
    catalog = resources.get("catalog")
    sources_file = getattr(catalog, "sources_file", "") or sources_file_from_env()
    try:
        return freshness_sensors.asset_freshness_policy(load_sources(sources_file))
    except ConfigurationError:
        return None


defs = build_defs()
