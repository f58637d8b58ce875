"""Jobs and schedules over the asset graph."""

import dagster as dg

from rag_pipeline.defs.chunking.assets import chunks
from rag_pipeline.defs.connectors.assets import source_documents
from rag_pipeline.defs.embeddings.assets import chunk_embeddings
from rag_pipeline.defs.evaluation.assets import evaluation_report
from rag_pipeline.defs.indexes.assets import active_index, vector_index
from rag_pipeline.defs.parsing.assets import parsed_documents
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.defs.redaction.assets import redacted_documents

ingest_source_job = dg.define_asset_job(
    "ingest_source_job",
    selection=dg.AssetSelection.assets(
        source_documents, parsed_documents, redacted_documents, chunks, chunk_embeddings
    ),
    partitions_def=SOURCE_PARTITIONS,
    description="Scan, parse, redact, chunk and embed one source (one partition).",
)

build_index_job = dg.define_asset_job(
    "build_index_job",
    selection=dg.AssetSelection.assets(vector_index, evaluation_report, active_index),
    description="Build a candidate index version, run its gates, evaluate it against the "
    "serving version on the golden sets, promote it if everything passes.",
)


@dg.schedule(
    job=ingest_source_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Off by default (turn it on here). Daily at 02:00 UTC: re-ingest every source; "
    "`index_automation_sensor` then rebuilds, checks and promotes the index.",
)
def daily_reindex_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """Re-ingest every source nightly; unchanged documents cost a hash comparison each, and the
    index version is rebuilt by `vector_index`'s eager automation once the partitions land."""
    date = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [
        dg.RunRequest(partition_key=source, run_key=f"{date}:{source}")
        for source in context.instance.get_dynamic_partitions(SOURCE_PARTITIONS.name)
    ]


# Declared rather than left to Dagster's implicit `default_automation_condition_sensor`, which
# starts stopped: the README promises the index is rebuilt once ingestion lands.
index_automation_sensor = dg.AutomationConditionSensorDefinition(
    "index_automation_sensor",
    target=dg.AssetSelection.assets(vector_index, evaluation_report, active_index),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="On by default. Evaluates the eager automation conditions of `vector_index`, "
    "`evaluation_report` and `active_index`: once a source's ingestion lands, a candidate is "
    "built, gated, evaluated and promoted if every blocking check passes. Stop it here to "
    "build indexes only by hand (`build_index_job`).",
)
