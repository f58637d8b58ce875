"""Run the whole asset graph in-process: every source partition, then the index.

This is what `rag-pipeline run` and `make demo` do; the Dagster UI and schedules run the same
jobs. Runs are recorded in the given Dagster instance (Postgres-backed under `dagster.yaml`) as
runs of the `rag_pipeline` code location's jobs (`job_run_origins`), so the UI lists them on the
job pages, the Overview timeline and the run-duration charts like the runs it launched itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import (
    SINGLETON_REPOSITORY_NAME,
)
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import MAX_RETRIES_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.lib import database
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.progress import BuildKeys, PipelineProgress, build_counts
from rag_pipeline.run_recovery import RecoveryReport, owner_tags, recover_dead_runs

REPO_ROOT = Path(__file__).resolve().parents[1]
# The code location the webserver and daemon load (`workspace.yaml`, `[tool.dagster]`): runs
# started here name it as their origin, so the UI attaches them to its jobs.
CODE_LOCATION_NAME = "rag_pipeline"
DEFINITIONS_MODULE = "rag_pipeline.definitions"
DEFINITIONS_ATTRIBUTE = "defs"
SOURCE_TAG = "rag_pipeline/source"
TRIGGER_TAG = "rag_pipeline/trigger"
QUALITY_OVERRIDE_TAG = "rag_pipeline/quality_override"


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


class PipelineObserver(Protocol):
    """Told when each job of a pipeline run starts and ends (progress displays)."""

    def job_started(self, job_name: str, source: str | None) -> None: ...

    def job_finished(self, job_name: str, source: str | None, succeeded: bool) -> None: ...


def job_run_origins(job_name: str) -> tuple[RemoteJobOrigin, JobPythonOrigin]:
    """Where a job of the `rag_pipeline` code location comes from, as the UI and the daemon see it.

    The UI lists a job's runs by the `.dagster/repository` tag (`__repository__@rag_pipeline`),
    which Dagster derives from the run's remote origin, and draws only runs with a remote origin
    on the Overview timeline; `job.execute_in_process` sets neither. The code origin says how a
    run worker would load the job: the module the workspace loads.
    """
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(REPO_ROOT),
        ),
        location_name=CODE_LOCATION_NAME,
    )
    remote = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME),
        job_name=job_name,
    )
    code = (
        ReconstructableRepository.for_module(
            DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, working_directory=str(REPO_ROOT)
        )
        .get_reconstructable_job(job_name)
        .get_python_origin()
    )
    return remote, code


def execute_job_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, object],
    tags: Mapping[str, str],
    partition_key: str | None = None,
) -> dg.JobExecutionResult:
    """Execute `job` in this process, as a run of the code location's job of the same name.

    What `job.execute_in_process` does (in-process executor, the given resources, partition
    tags, pools and the event log in `instance`), except that the run is created with the
    origins of `job_run_origins` first. The job definition itself may carry other resources
    (tests, benchmarks): the origin names the job, not the resources it ran with.

    Dagster 1.13 has no public call that does this: `dg.execute_job` wants a reconstructable job
    (which cannot carry the resources given here) and sets the code origin only, not the remote
    origin the UI reads. So this composes the steps of `execute_in_process` (dagster is pinned).
    """
    in_process = job.as_ephemeral_job(resource_defs={}, input_values={})
    runnable = InMemoryJob(in_process)
    # The job's own run tags, the partition's (`dagster/partition`...), then ours.
    run_tags = merge_run_tags(job, partition_key, tags, None, instance, run_config)
    plan = create_execution_plan(
        runnable,
        run_config=run_config,
        instance_ref=instance.get_ref() if instance.is_persistent else None,
        tags=run_tags,
    )
    remote_origin, code_origin = job_run_origins(job.name)
    run = instance.create_run_for_job(
        job_def=in_process,
        execution_plan=plan,
        run_config=run_config,
        tags=run_tags,
        remote_job_origin=remote_origin,
        job_code_origin=code_origin,
    )
    return execute_run(runnable, run, instance, raise_on_error=False)


def materialization_metadata(result: dg.JobExecutionResult) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        found[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return found


def pipeline_progress(
    defs: dg.Definitions, enabled: bool, interval: float = 1.0
) -> AbstractContextManager[PipelineObserver | None]:
    """Bars per source and stage for `run_pipeline`, counted in the pipeline database with the
    processor keys of `defs`' resources; nothing when `enabled` is false."""
    if not enabled:
        return contextlib.nullcontext(None)
    embedder, chunking = defs.resources["embedder"], defs.resources["chunking"]
    keys = BuildKeys(
        parser=PARSER_KEY, chunker=chunking.chunker_key(embedder), model=embedder.model_key()
    )
    url = defs.resources["postgres"].url()
    return PipelineProgress(lambda source: build_counts(url, source, keys), interval=interval)


def run_pipeline(
    instance: dg.DagsterInstance,
    sources: Sequence[str] | None = None,
    defs: dg.Definitions | None = None,
    log_level: str = "WARNING",
    quality_override: str | None = None,
    observer: PipelineObserver | None = None,
    trigger: str = "rag-pipeline run",
) -> PipelineRun:
    """Ingest each source partition, then build, check and promote the index version.

    One source failing does not stop the others; the index is still built, and its gates decide
    whether the result may serve. Runs whose worker died earlier are failed and their pool slots
    freed first, so a killed run never wedges this one (`run_recovery`).

    `quality_override` (a reason) lets a candidate that fails `retrieval_quality_not_regressed`
    be promoted; the reason is run config of `evaluation_report` and a tag of the index run, so
    the Dagster run records who overrode the gate and why.

    Every run is tagged with its trigger (`rag_pipeline/trigger`) and, for ingestion, its source
    (`rag_pipeline/source`); `observer` hears each job start and finish.
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
    tags = {
        **owner_tags(),
        TRIGGER_TAG: trigger,
        # This process reports a failure and the next `rag-pipeline run` resumes from what was
        # committed; a daemon retrying the run meanwhile would race that run (these runs were
        # never retried before they carried an origin the daemon can relaunch).
        MAX_RETRIES_TAG: "0",
    }
    ingest = defs.resolve_job_def("ingest_source_job")
    for name in names:
        if observer is not None:
            observer.job_started(ingest.name, name)
        result = execute_job_run(
            ingest, instance, run_config, {**tags, SOURCE_TAG: name}, partition_key=name
        )
        if observer is not None:
            observer.job_finished(ingest.name, name, result.success)
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
        index_tags[QUALITY_OVERRIDE_TAG] = quality_override.strip()[:200]
    build_index = defs.resolve_job_def("build_index_job")
    if observer is not None:
        observer.job_started(build_index.name, None)
    index = execute_job_run(build_index, instance, index_config, index_tags)
    if observer is not None:
        observer.job_finished(build_index.name, None, index.success)
    run.index_succeeded = index.success
    run.failed_checks = [
        (evaluation.check_name, str(evaluation.description or ""))
        for evaluation in index.get_asset_check_evaluations()
        if not evaluation.passed
    ]
    run.metadata.update(materialization_metadata(index))
    return run
