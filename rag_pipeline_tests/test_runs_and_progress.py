"""Runs of `rag-pipeline run` belong to the code location's jobs, and long work shows progress.

The UI lists a job's runs by the `.dagster/repository` tag and draws only runs with a remote
origin on the Overview timeline; these tests check both on the runs the command records, by the
filter the UI's job page uses. Progress: bars on a terminal only, log lines in Dagster's run logs.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from rich.console import Console

from rag_pipeline.cli import main
from rag_pipeline.cli.pipeline import show_progress
from rag_pipeline.definitions import build_defs
from rag_pipeline.lib.parsing import PARSER_KEY
from rag_pipeline.lib.progress import (
    BuildCounts,
    BuildKeys,
    ImportProgress,
    PipelineProgress,
    ProgressLog,
    build_counts,
    log_progress,
    progress_enabled,
)
from rag_pipeline.run_recovery import (
    OWNER_HOST_TAG,
    OWNER_PID_TAG,
    OWNER_STARTED_TAG,
    recover_dead_runs,
)
from rag_pipeline.runner import SOURCE_TAG, TRIGGER_TAG
from rag_pipeline_tests.test_cli_settings import write_tiny_source
from rag_pipeline_tests.test_crash_safety import create_empty_database

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the UI asks for a job page's Runs tab and for the Overview timeline.
JOB_RUNS_QUERY = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { id } }
  }
}
"""
TIMELINE_QUERY = """
query Timeline {
  runsOrError(filter: {}) {
    ... on Runs {
      results {
        id pipelineName startTime endTime
        repositoryOrigin { repositoryName repositoryLocationName }
      }
    }
  }
}
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ui_repository_label() -> str:
    """`<repository>@<location>` as the webserver loads the project: its workspace file."""
    (origin,) = location_origins_from_yaml_paths([str(REPO_ROOT / "workspace.yaml")])
    return f"{build_defs().get_repository_def().name}@{origin.location_name}"


@pytest.fixture()
def tiny_project(
    tmp_path: Path, pg_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """One small source, its own Dagster storage; returns the pipeline database URL."""
    sources = write_tiny_source(tmp_path / "data")
    for name, value in {
        "RAG_DATABASE_URL": database_url,
        "RAG_DAGSTER_PG_URL": create_empty_database(pg_data_dir),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "RAG_SOURCES_FILE": str(sources),
        "RAG_DIRECTORY_FILE": str(tmp_path / "data" / "directory.yaml"),
    }.items():
        monkeypatch.setenv(name, value)
    return database_url


def test_cli_runs_are_runs_of_the_code_location_jobs(
    tiny_project: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"]) == 0
    err = capsys.readouterr().err
    # stderr is no terminal here: no bars, no escape codes.
    assert "ETA" not in err and "\x1b[" not in err

    label = ui_repository_label()
    assert label == "__repository__@rag_pipeline"
    with dg.DagsterInstance.get() as instance:
        found = {}
        for job_name in ("ingest_source_job", "build_index_job"):
            # The job page's filter (dagster-graphql `GraphenePipeline.resolve_runs`).
            runs = instance.get_runs(
                dg.RunsFilter(job_name=job_name, tags={REPOSITORY_LABEL_TAG: label})
            )
            assert len(runs) == 1, job_name
            assert instance.get_runs(dg.RunsFilter(job_name=job_name)) == runs
            run = found[job_name] = runs[0]
            assert run.status == dg.DagsterRunStatus.SUCCESS
            # The timeline groups runs by this origin and drops those without one.
            origin = run.remote_job_origin
            assert origin is not None and origin.job_name == job_name
            assert origin.repository_origin.get_label() == label
            assert origin.repository_origin.code_location_origin.location_name == "rag_pipeline"
            pointer = run.job_code_origin.repository_origin.code_pointer
            assert pointer.module == "rag_pipeline.definitions" and pointer.fn_name == "defs"
            assert run.tags[TRIGGER_TAG] == "rag-pipeline run"
            # Run recovery still knows the process that owns the run.
            assert run.tags[OWNER_PID_TAG]
            # Only the command retries: a daemon would race the next `rag-pipeline run`.
            assert run.tags["dagster/max_retries"] == "0"
            (record,) = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))
            assert record.start_time and record.end_time  # what the duration charts plot

        ingest = found["ingest_source_job"]
        assert ingest.tags["dagster/partition"] == "notes"
        assert ingest.tags[SOURCE_TAG] == "notes"
        # The embedder pool from dagster.yaml still applies to these runs.
        assert ingest.run_op_concurrency is not None
        assert "embedder" in ingest.run_op_concurrency.all_pools

        # The webserver's own answers, with the project's workspace loaded as `dagster dev` does.
        workspace = WorkspaceFileTarget([str(REPO_ROOT / "workspace.yaml")])
        with WorkspaceProcessContext(instance, workspace) as process:
            request = process.create_request_context()
            for job_name, run in found.items():
                selector = {
                    "repositoryLocationName": "rag_pipeline",
                    "repositoryName": "__repository__",
                    "pipelineName": job_name,
                }
                page = execute_dagster_graphql(request, JOB_RUNS_QUERY, {"selector": selector})
                job = page.data["pipelineOrError"]
                assert job["__typename"] == "Pipeline"
                assert [listed["id"] for listed in job["runs"]] == [run.run_id]
            timeline = execute_dagster_graphql(request, TIMELINE_QUERY).data["runsOrError"]
        assert len(timeline["results"]) == 2
        for row in timeline["results"]:
            assert row["repositoryOrigin"] == {
                "repositoryName": "__repository__",
                "repositoryLocationName": "rag_pipeline",
            }
            assert row["startTime"] and row["endTime"]

        # The stages' progress lines are in the ingest run's log, as the UI shows it.
        messages = [record.user_message for record in instance.all_logs(ingest.run_id)]
    assert any(m.startswith("parsed ") and " documents" in m for m in messages), messages
    assert any(m.startswith("chunked ") and " documents" in m for m in messages)
    embedded = [m for m in messages if m.startswith("embedded ") and " texts" in m]
    assert embedded and "/s" in embedded[-1]

    # The counts the terminal bars poll, read with the run's processor keys.
    resources = build_defs().resources
    keys = BuildKeys(
        parser=PARSER_KEY,
        chunker=resources["chunking"].chunker_key(resources["embedder"]),
        model=resources["embedder"].model_key(),
    )
    counts = build_counts(tiny_project, "notes", keys)
    # broken.pdf is refused by the parser: settled for the parse stage all the same.
    assert counts.parse_refused == 1
    assert counts.parsed + counts.parse_refused == counts.documents
    assert counts.chunked_documents + counts.chunk_refused == counts.parsed >= 2
    assert counts.embedded == counts.chunks > 0


def test_a_quality_override_is_tagged_on_the_index_run(
    tiny_project: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--allow-quality-regression", "known drop, ticket 42"]) == 0
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name="build_index_job"))
    assert run.tags["rag_pipeline/quality_override"] == "known drop, ticket 42"
    config = run.run_config["ops"]["evaluation_report"]["config"]
    assert config == {"allow_quality_regression": True, "override_reason": "known drop, ticket 42"}
    assert run.remote_job_origin is not None


def test_recovery_fails_dead_cli_runs_but_not_their_reexecutions(
    instance: dg.DagsterInstance,
) -> None:
    """With an origin, the UI can re-execute a CLI run; the re-execution inherits the parent's
    owner tags but runs in another process, so run recovery must leave it alone."""
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = {
        OWNER_HOST_TAG: socket.gethostname(),
        OWNER_PID_TAG: exited.stdout.strip(),
        OWNER_STARTED_TAG: "1.000",
    }
    orphan = dg.DagsterRun(
        job_name="ingest_source_job",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags=dead_owner,
    )
    reexecution = dg.DagsterRun(
        job_name="ingest_source_job",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags=dead_owner,
        parent_run_id=orphan.run_id,
        root_run_id=orphan.run_id,
    )
    instance.add_run(orphan)
    instance.add_run(reexecution)

    report = recover_dead_runs(instance)

    assert report.runs_marked_failed == [orphan.run_id]
    assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(reexecution.run_id).status == dg.DagsterRunStatus.STARTED


def test_progress_only_on_a_terminal_and_not_when_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert progress_enabled(Terminal(), environ={})
    assert not progress_enabled(io.StringIO(), environ={})
    assert not progress_enabled(Terminal(), quiet=True, environ={})
    assert not progress_enabled(Terminal(), environ={"RAG_PROGRESS": "0"})
    assert progress_enabled(Terminal(), environ={"RAG_PROGRESS": "1"})
    monkeypatch.setattr("sys.stderr", Terminal())
    monkeypatch.delenv("RAG_PROGRESS", raising=False)
    assert show_progress(argparse.Namespace(quiet=False))
    assert not show_progress(argparse.Namespace(quiet=True))
    monkeypatch.setenv("RAG_PROGRESS", "off")
    assert not show_progress(argparse.Namespace(quiet=False))


def test_progress_log_gives_counts_rate_and_eta_every_few_seconds() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = ProgressLog(lines.append, "embedded", 12_309, "texts", every_seconds=10, clock=clock)
    clock.now = 1.0
    progress.advance(32)  # the first batch is always reported
    clock.now = 5.0
    progress.advance(160)  # not yet due
    clock.now = 12.0
    progress.advance(384)
    clock.now = 13.0
    progress.advance(12_309)  # the end is always reported, without an ETA
    assert lines == [
        "embedded 32/12,309 texts, 32.0/s, ETA 6:23",
        "embedded 384/12,309 texts, 32.0/s, ETA 6:12",
        "embedded 12,309/12,309 texts, 946.8/s",
    ]


def test_log_progress_counts_items_the_loop_skips() -> None:
    lines: list[str] = []
    seen = []
    for item in log_progress(lines.append, "parsed", "documents", ["a", "b", "c"], 3):
        if item == "b":
            continue  # a quarantined document is done too
        seen.append(item)
    assert seen == ["a", "c"]
    assert lines[0].startswith("parsed 1/3 documents")
    assert lines[-1].startswith("parsed 3/3 documents")


def test_pipeline_progress_draws_each_stage_with_counts_on_the_terminal() -> None:
    screen = Terminal()
    console = Console(file=screen, force_terminal=True, width=140)
    polls = iter(
        [
            BuildCounts(
                documents=40,
                parsed=10,
                parse_refused=0,
                chunked_documents=0,
                chunk_refused=0,
                chunks=0,
                embedded=0,
            ),
            # One document refused by the parser, one by the chunker: both stages are done.
            BuildCounts(
                documents=40,
                parsed=39,
                parse_refused=1,
                chunked_documents=38,
                chunk_refused=1,
                chunks=310,
                embedded=310,
            ),
        ]
    )
    asked: list[str] = []

    def counts(source: str) -> BuildCounts:
        asked.append(source)
        return next(polls)

    with PipelineProgress(counts, console=console, interval=60) as progress:
        progress.job_started("ingest_source_job", "handbook")
        progress.job_finished("ingest_source_job", "handbook", succeeded=True)
        progress.job_started("build_index_job", None)
        progress.job_finished("build_index_job", None, succeeded=False)
    drawn = screen.getvalue()
    assert asked == ["handbook", "handbook"]
    assert "handbook: parsed documents" in drawn and "40/40" in drawn
    assert "handbook: chunked documents" in drawn and "39/39" in drawn
    assert "handbook: embedded texts" in drawn and "310/310" in drawn
    assert "build_index_job: FAILED" in drawn


def test_import_progress_follows_the_importer_messages() -> None:
    screen = Terminal()
    console = Console(file=screen, force_terminal=True, width=140)
    with pytest.raises(OSError), ImportProgress(5_000, console=console) as progress:
        progress("writing documents to /tmp/out/scifact")
        progress("  1,000 documents written (2,500 read)")
        raise OSError("disk full")
    drawn = screen.getvalue()
    assert "writing documents to /tmp/out/scifact" in drawn  # printed above the bar
    assert "2500/5000" in drawn and "1,000 written" in drawn
    assert "5000/5000" not in drawn

    screen = Terminal()
    console = Console(file=screen, force_terminal=True, width=140)
    with ImportProgress(5_000, console=console) as progress:
        progress("  1,000 documents written (2,500 read)")
    # The importer returned: it read every document, past its last thousand.
    assert "5000/5000" in screen.getvalue()


def test_quiet_is_an_option_of_run_and_import_beir() -> None:
    from rag_pipeline.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--quiet"]).quiet
    assert parser.parse_args(["import-beir", "somewhere", "--quiet"]).quiet
    assert not parser.parse_args(["run"]).quiet
