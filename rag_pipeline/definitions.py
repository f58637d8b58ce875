"""The code location: every stage's assets, checks, jobs, schedules and sensors, plus resources."""

from typing import Any

import dagster as dg

from rag_pipeline.defs import jobs
from rag_pipeline.defs.chunking import assets as chunking
from rag_pipeline.defs.connectors import assets as connectors
from rag_pipeline.defs.connectors import sensors as connector_sensors
from rag_pipeline.defs.embeddings import assets as embeddings
from rag_pipeline.defs.evaluation import assets as evaluation
from rag_pipeline.defs.indexes import assets as indexes
from rag_pipeline.defs.indexes import checks as index_checks
from rag_pipeline.defs.indexes import chunk_checks, maintenance
from rag_pipeline.defs.parsing import assets as parsing
from rag_pipeline.defs.resources import build_resources

STAGES = [connectors, parsing, chunking, embeddings, indexes, evaluation]


def build_defs(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The definitions with resources from the environment, or the given ones (tests, benches)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(STAGES),
        asset_checks=dg.load_asset_checks_from_modules([index_checks, chunk_checks]),
        jobs=[
            jobs.ingest_source_job,
            jobs.build_index_job,
            maintenance.promote_index_job,
            maintenance.rollback_index_job,
            maintenance.gc_index_job,
        ],
        schedules=[jobs.daily_reindex_schedule, maintenance.gc_index_schedule],
        sensors=[connector_sensors.source_catalog_sensor],
        resources=resources if resources is not None else build_resources(),
    )


defs = build_defs()
