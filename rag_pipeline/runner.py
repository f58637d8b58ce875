"""Run the whole asset graph in-process: every source partition, then the index.

This is what `rag-pipeline run` and `make demo` do; the Dagster UI and schedules run the same
jobs. Runs are recorded in the given Dagster instance (Postgres-backed under `dagster.yaml`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.lib import database
from rag_pipeline.run_recovery import RecoveryReport, owner_tags, recover_dead_runs

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PipelineRun:
    sources: list[str]
    failed_sources: list[str] = field(default_factory=list)
    index_succeeded: bool = False
    metadata: dict[str, dict[str, object]] = field(default_factory=dict)
    recovery: RecoveryReport | None = None
    # Checks of the index run that failed: (check name, what it said).
    failed_checks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return not self.failed_sources and self.index_succeeded


def prepare_dagster_home(data_dir: str | None = None) -> Path:
    """Point Dagster at `<data dir>/dagster` with the repo's `dagster.yaml`, storage on Postgres.

    When no Dagster storage URL is configured, it is the embedded server's `dagster` database.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or database.resolve_data_dir(data_dir) / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.symlink_to(REPO_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    if not os.environ.get("RAG_DAGSTER_PG_URL"):
        if os.environ.get("RAG_DATABASE_URL"):
            raise database.DatabaseError(
                "RAG_DATABASE_URL is set but RAG_DAGSTER_PG_URL is not: give Dagster's storage "
                "its own URL (postgresql+psycopg2://...)"
            )
        os.environ["RAG_DAGSTER_PG_URL"] = database.embedded_dagster_storage_url(data_dir)
    return home


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        found[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return found


def run_pipeline(
    instance: dg.DagsterInstance,
    sources: Sequence[str] | None = None,
    defs: dg.Definitions | None = None,
    log_level: str = "WARNING",
    quality_override: str | None = None,
) -> PipelineRun:
    """Ingest each source partition, then build, check and promote the index version.

    One source failing does not stop the others; the index is still built, and its gates decide
    whether the result may serve. Runs whose worker died earlier are failed and their pool slots
    freed first, so a killed run never wedges this one (`run_recovery`).

    `quality_override` (a reason) lets a candidate that fails `retrieval_quality_not_regressed`
    be promoted; the reason is run config of `evaluation_report` and a tag of the index run, so
    the Dagster run records who overrode the gate and why.
    """
    if defs is None:
        from rag_pipeline.definitions import build_defs

        # Built now, not at import: the settings are those of this call's environment.
        defs = build_defs()
    catalog = defs.resources["catalog"]
    names = list(sources) if sources else [source.name for source in catalog.sources()]
    known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS.name))
    missing = [name for name in names if name not in known]
    if missing:
        instance.add_dynamic_partitions(SOURCE_PARTITIONS.name, missing)
    run = PipelineRun(sources=names, recovery=recover_dead_runs(instance))
    # The full event log goes to the instance (and the UI); the console only gets `log_level`.
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    tags = {**owner_tags(), "rag_pipeline/trigger": "rag-pipeline run"}
    ingest = defs.resolve_job_def("ingest_source_job")
    for name in names:
        result = ingest.execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=name,
            raise_on_error=False,
            tags={**tags, "rag_pipeline/source": name},
        )
        if not result.success:
            run.failed_sources.append(name)
        for asset, metadata in materialization_metadata(result).items():
            run.metadata[f"{asset}[{name}]"] = metadata
    index_config: dict[str, object] = dict(run_config)
    index_tags = dict(tags)
    if quality_override is not None:
        if not quality_override.strip():
            raise ValueError("overriding the quality gate needs a reason")
        index_config["ops"] = {
            "evaluation_report": {
                "config": {
                    "allow_quality_regression": True,
                    "override_reason": quality_override.strip(),
                }
            }
        }
        index_tags["rag_pipeline/quality_override"] = quality_override.strip()[:200]
    index = defs.resolve_job_def("build_index_job").execute_in_process(
        run_config=index_config, instance=instance, raise_on_error=False, tags=index_tags
    )
    run.index_succeeded = index.success
    run.failed_checks = [
        (evaluation.check_name, str(evaluation.description or ""))
        for evaluation in index.get_asset_check_evaluations()
        if not evaluation.passed
    ]
    run.metadata.update(materialization_metadata(index))
    return run
