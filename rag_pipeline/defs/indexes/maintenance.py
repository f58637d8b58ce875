"""Index operations as Dagster jobs, the same ones `rag-pipeline index ...` runs from a shell."""

import dagster as dg

from rag_pipeline.defs.indexes.history import garbage_collection_observation, unpublished_changes
from rag_pipeline.defs.resources import IndexPolicyResource, PostgresResource
from rag_pipeline.lib import index_versions
from rag_pipeline.lib.quality_gates import PROMOTION_CHECKS


class PromoteConfig(dg.Config):
    version_id: int
    reason: str = "manual promotion from Dagster"


class RollbackConfig(dg.Config):
    reason: str = "manual rollback from Dagster"


@dg.op
def promote_index_version(
    context: dg.OpExecutionContext, config: PromoteConfig, postgres: PostgresResource
) -> None:
    """Serve `version_id`, provided every blocking quality gate passed for it."""
    with postgres.connection() as conn:
        try:
            switched = index_versions.promote(
                conn,
                config.version_id,
                actor=f"dagster run {context.run_id}",
                required_checks=PROMOTION_CHECKS,
                reason=config.reason,
            )
        except index_versions.IndexVersionError as error:
            raise dg.Failure(str(error), allow_retries=False) from error
        # In this run's event log and on `active_index`'s page: who, why, gates, previous.
        for event in unpublished_changes(context.instance, conn):
            context.log_event(event)
    context.log.info(f"version {config.version_id} serving" + ("" if switched else " already"))


@dg.op
def rollback_index_version(
    context: dg.OpExecutionContext, config: RollbackConfig, postgres: PostgresResource
) -> None:
    """Re-point serving to the version that was active before the current one."""
    with postgres.connection() as conn:
        try:
            previous = index_versions.rollback(
                conn, actor=f"dagster run {context.run_id}", reason=config.reason
            )
        except index_versions.IndexVersionError as error:
            raise dg.Failure(str(error), allow_retries=False) from error
        for event in unpublished_changes(context.instance, conn):
            context.log_event(event)
    context.log.info(f"rolled back to version {previous}")


@dg.op
def collect_index_garbage(
    context: dg.OpExecutionContext, postgres: PostgresResource, index_policy: IndexPolicyResource
) -> None:
    """Drop versions beyond the retention count and rows nothing references any more."""
    with postgres.connection() as conn:
        report = index_versions.garbage_collect(conn, index_policy.keep_versions)
        serving = index_versions.active_version_id(conn)
    context.log_event(garbage_collection_observation(report, serving, index_policy.keep_versions))
    context.log.info(f"garbage collection: {report}")


@dg.job(description="Promote one index version (config: version_id) if its gates passed.")
def promote_index_job() -> None:
    promote_index_version()


@dg.job(description="Serve the previously active index version again.")
def rollback_index_job() -> None:
    rollback_index_version()


@dg.job(description="Remove index versions beyond the retention count and orphaned rows.")
def gc_index_job() -> None:
    collect_index_garbage()


gc_index_schedule = dg.ScheduleDefinition(
    job=gc_index_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="Off by default (turn it on here). Daily at 03:30 UTC: remove index versions "
    "beyond `RAG_KEEP_INDEX_VERSIONS` (never the serving one or its rollback target) and rows "
    "nothing references any more; the result is shown on `active_index`.",
)
