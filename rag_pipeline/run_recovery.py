"""Recover from run workers that died without telling Dagster (SIGKILL, OOM, a lost database).

A run executed in-process by `rag-pipeline run` holds Dagster concurrency slots (the `embedder`
pool) in Dagster's storage. If its process is killed, nothing ends the run or frees the slot: with
no daemon (the CLI runs none), every later run waits for that slot forever, and the dead run stays
`STARTED` in the run history. Runs started here are therefore tagged with the identity of the
process executing them (host, pid, process start time), and before each pipeline run the runner:

1. marks every unfinished run whose owning process is gone as failed (with the reason), and
2. frees the concurrency slots and pending slot claims of every finished or dead run.

Runs launched by a daemon or webserver carry no owner tag and are left to Dagster's own run
monitoring (`run_monitoring` in `dagster.yaml`), which the daemon performs. That includes a
re-execution of one of our runs from the UI: it inherits the parent's tags, owner included, but
another process executes it, so runs with a parent are never judged by the owner tags.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.storage.dagster_run import FINISHED_STATUSES

OWNER_HOST_TAG = "rag_pipeline/owner_host"
OWNER_PID_TAG = "rag_pipeline/owner_pid"
OWNER_STARTED_TAG = "rag_pipeline/owner_started"
UNFINISHED_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class RecoveryReport:
    runs_marked_failed: list[str]
    runs_with_slots_freed: list[str]

    @property
    def anything_done(self) -> bool:
        return bool(self.runs_marked_failed or self.runs_with_slots_freed)


def _process_started(pid: int) -> str:
    # The start time tells a live process apart from a new one that reused a dead run's pid.
    return f"{psutil.Process(pid).create_time():.3f}"


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the one executing a run."""
    pid = os.getpid()
    return {
        OWNER_HOST_TAG: socket.gethostname(),
        OWNER_PID_TAG: str(pid),
        OWNER_STARTED_TAG: _process_started(pid),
    }


def owner_is_gone(tags: dict[str, str]) -> bool:
    """True only for a run owned by a process of this host that no longer exists."""
    if tags.get(OWNER_HOST_TAG) != socket.gethostname():
        return False  # another machine's process: we cannot know, and must not guess
    try:
        pid = int(tags[OWNER_PID_TAG])
    except (KeyError, ValueError):
        return False
    try:
        return _process_started(pid) != tags.get(OWNER_STARTED_TAG)
    except psutil.NoSuchProcess:
        return True
    except psutil.ZombieProcess:
        return True


def recover_dead_runs(instance: dg.DagsterInstance) -> RecoveryReport:
    """Fail the runs whose worker died and free every concurrency slot nobody can release."""
    failed: list[str] = []
    for record in instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=UNFINISHED_STATUSES, tags={OWNER_HOST_TAG: socket.gethostname()}
        )
    ):
        run = record.dagster_run
        # A re-execution carries its parent's owner tags, not its own worker's (see above).
        if run.parent_run_id is None and owner_is_gone(dict(run.tags)):
            instance.report_run_failed(
                run,
                message=(
                    f"The process that executed this run (pid {run.tags.get(OWNER_PID_TAG)} on "
                    f"{run.tags.get(OWNER_HOST_TAG)}) no longer exists: it was killed or crashed. "
                    "Marked failed by rag-pipeline before the next run; that run resumes from "
                    "what this one committed."
                ),
            )
            failed.append(run.run_id)

    storage = instance.event_log_storage
    freed: list[str] = []
    if storage.supports_global_concurrency_limits:
        holders = set(storage.get_concurrency_run_ids())
        if holders:
            finished = {
                record.dagster_run.run_id
                for record in instance.get_run_records(
                    filters=dg.RunsFilter(run_ids=sorted(holders), statuses=FINISHED_STATUSES)
                )
            }
            known = {
                record.dagster_run.run_id
                for record in instance.get_run_records(
                    filters=dg.RunsFilter(run_ids=sorted(holders))
                )
            }
            # A slot held by a finished run, or by a run the storage no longer knows, can never
            # be released by its holder.
            for run_id in sorted(finished | (holders - known)):
                storage.free_concurrency_slots_for_run(run_id)
                freed.append(run_id)
    return RecoveryReport(runs_marked_failed=failed, runs_with_slots_freed=freed)
