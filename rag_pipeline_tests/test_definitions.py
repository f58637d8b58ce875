"""The code location loads with the expected graph, and Dagster's storage works on Postgres."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg
import yaml

from rag_pipeline.definitions import build_defs, defs
from rag_pipeline.defs.connectors.sensors import source_catalog_sensor
from rag_pipeline.defs.jobs import daily_reindex_schedule
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.lib import database
from rag_pipeline.lib.quality_gates import BLOCKING_GATES, PROMOTION_CHECKS
from rag_pipeline_tests.conftest import make_resources

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = [
    "source_documents",
    "parsed_documents",
    "redacted_documents",
    "chunks",
    "chunk_embeddings",
    "vector_index",
    "evaluation_report",
    "active_index",
]


def test_asset_graph_has_one_asset_per_stage_in_lineage_order() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(STAGES)
    for upstream, downstream in itertools.pairwise(STAGES):
        parents = {key.to_user_string() for key in graph.get(dg.AssetKey(downstream)).parent_keys}
        # The serving pointer waits for the candidate and for its evaluation report.
        expected = {"vector_index", upstream} if downstream == "active_index" else {upstream}
        assert parents == expected, downstream
    for stage in STAGES[:5]:
        assert graph.get(dg.AssetKey(stage)).partitions_def == SOURCE_PARTITIONS
    for stage in STAGES:
        assert graph.get(dg.AssetKey(stage)).description, f"{stage} needs a docstring"


def test_blocking_checks_guard_the_candidate_index() -> None:
    graph = defs.resolve_asset_graph()
    # The per-source health checks on source_documents warn and never gate
    # (test_operator_view.py); every other check guards promotion.
    checks = {
        key.name: key
        for key in graph.asset_check_keys
        if key.asset_key != dg.AssetKey("source_documents")
    }
    assert set(checks) == set(PROMOTION_CHECKS) and set(BLOCKING_GATES) < set(checks)
    quality_gate = checks.pop("retrieval_quality_not_regressed")
    assert quality_gate.asset_key == dg.AssetKey("evaluation_report")
    assert all(key.asset_key == dg.AssetKey("vector_index") for key in checks.values())
    specs = [
        spec
        for check in defs.asset_checks
        for spec in check.check_specs
        if spec.asset_key != dg.AssetKey("source_documents")
    ]
    specs += [spec for asset in defs.assets for spec in getattr(asset, "check_specs", [])]
    assert len(specs) == len(PROMOTION_CHECKS) and all(spec.blocking for spec in specs)


def test_jobs_schedules_and_sensors_are_registered() -> None:
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {
        "ingest_source_job",
        "build_index_job",
        "promote_index_job",
        "rollback_index_job",
        "gc_index_job",
    } <= jobs
    assert {s.name for s in defs.schedules} == {"daily_reindex_schedule", "gc_index_job_schedule"}
    assert {s.name for s in defs.sensors} == {
        "source_catalog_sensor",
        "freshness_sla_sensor",
        "serving_history_sensor",
        "index_automation_sensor",
    }


def test_source_sensor_registers_partitions_and_requests_changed_sources(
    corpus: Path, instance: dg.DagsterInstance
) -> None:
    resources = make_resources("postgresql://unused", corpus / "sources.yaml")
    context = dg.build_sensor_context(
        instance=instance, resources={"catalog": resources["catalog"]}
    )
    first = source_catalog_sensor(context)
    assert isinstance(first, dg.SensorResult)
    names = sorted(source.name for source in resources["catalog"].sources())
    assert sorted(request.partition_key for request in first.run_requests) == names
    instance.add_dynamic_partitions(SOURCE_PARTITIONS.name, names)

    (corpus / "globex_support" / "tickets" / "GLX-9999-new.txt").write_text("Pallet lost.\n")
    second = source_catalog_sensor(
        dg.build_sensor_context(
            instance=instance, cursor=first.cursor, resources={"catalog": resources["catalog"]}
        )
    )
    assert [request.partition_key for request in second.run_requests] == ["globex_support"]
    assert json.loads(second.cursor).keys() == set(names)


def test_daily_schedule_requests_every_source_partition(
    persistent_instance: dg.DagsterInstance,
) -> None:
    instance = persistent_instance
    instance.add_dynamic_partitions(SOURCE_PARTITIONS.name, ["alpha", "beta"])
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 24, 2, tzinfo=UTC)
    )
    requests = daily_reindex_schedule(context)
    assert sorted(request.partition_key for request in requests) == ["alpha", "beta"]


def test_dagster_storage_in_postgres_records_runs(
    pg_data_dir: Path, database_url: str, corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    admin_url = database.start_embedded_server(pg_data_dir)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE dagster_storage_test")
    status = database.embedded_server_status(pg_data_dir)
    storage_url = f"postgresql+psycopg2://postgres:@/dagster_storage_test?host={status.socket_dir}"
    monkeypatch.setenv("RAG_DAGSTER_PG_URL", storage_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    assert yaml.safe_load((home / "dagster.yaml").read_text())["storage"]["postgres"]
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        job = build_defs(make_resources(database_url, corpus / "sources.yaml")).resolve_job_def(
            "gc_index_job"
        )
        result = job.execute_in_process(instance=instance)
        assert result.success
    finally:
        instance.dispose()
    reopened = dg.DagsterInstance.from_config(str(home))
    try:
        runs = reopened.get_runs()
        assert [run.job_name for run in runs] == ["gc_index_job"]
        assert type(reopened.run_storage).__name__ == "PostgresRunStorage"
    finally:
        reopened.dispose()
    assert os.environ["RAG_DAGSTER_PG_URL"] == storage_url
