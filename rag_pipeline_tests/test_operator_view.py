"""What an operator sees in the Dagster UI: a readable lineage, a catalog that matches Postgres,
quarantine across sources, per-source health checks, and the serving index's true history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from rag_pipeline.definitions import build_defs, defs
from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP
from rag_pipeline.defs.connectors.assets import source_documents
from rag_pipeline.defs.connectors.checks import (
    ACL_CHECK,
    QUARANTINE_RATE_CHECK,
    quarantine_rate_within_limit,
    served_documents_have_acl,
)
from rag_pipeline.defs.evaluation.assets import _listed
from rag_pipeline.defs.indexes.assets import diff_markdown
from rag_pipeline.defs.indexes.history import ACTIVE_INDEX, serving_history_sensor
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.lib import database, index_versions
from rag_pipeline.lib.catalog import load_sources
from rag_pipeline.lib.quality_gates import PROMOTION_CHECKS
from rag_pipeline.lib.table_schemas import ASSET_TABLES
from rag_pipeline_tests.conftest import make_resources

# The five deliberately bad files of the sample corpus (README, "Bundled sample corpus").
SAMPLE_QUARANTINE = {
    "acme_support:tickets/TCK-1000-empty.txt": "empty_file",
    "acme_support:exports/kb-export.md": "binary_content",
    "acme_support:exports/ticket-dump-2026.txt": "too_large",
    "acme_support:legacy/TCK-0999-latin1.txt": "undecodable_text",
    "acme_support:attachments/network-diagram.vsdx": "unsupported_format",
}
SOURCE_CHECKS = [source_documents, quarantine_rate_within_limit, served_documents_have_acl]


def plain(metadata: Any) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


# --- lineage and catalog -------------------------------------------------------------------


def test_lineage_is_one_group_and_every_asset_is_catalogued() -> None:
    graph = defs.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert {graph.get(key).group_name for key in keys} == {LINEAGE_GROUP}
    for key in keys:
        node = graph.get(key)
        name = key.to_user_string()
        assert node.owners, name
        assert node.description and len(node.description) > 40, name
        assert node.tags.get("stage"), name
        assert node.metadata["dagster/table_name"].startswith("rag."), name
        schema = node.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and schema.columns, name
        assert all(column.description for column in schema.columns), name


def test_column_schemas_match_the_migrated_database(database_url: str) -> None:
    graph = defs.resolve_asset_graph()
    with database.connection(database_url) as conn:
        for key in graph.get_all_asset_keys():
            metadata = graph.get(key).metadata
            table = metadata["dagster/table_name"]
            schema_name, table_name = table.split(".")
            actual = conn.execute(
                """
                SELECT c.column_name, format_type(a.atttypid, a.atttypmod),
                       c.is_nullable = 'YES'
                FROM information_schema.columns c
                JOIN pg_attribute a ON a.attrelid = %(table)s::regclass
                                   AND a.attname = c.column_name
                WHERE c.table_schema = %(schema)s AND c.table_name = %(name)s
                ORDER BY c.ordinal_position
                """,
                {"table": table, "schema": schema_name, "name": table_name},
            ).fetchall()
            declared = [
                (column.name, column.type, column.constraints.nullable)
                for column in metadata["dagster/column_schema"].columns
            ]
            assert declared == [tuple(row) for row in actual], table
            for other in ASSET_TABLES[key.to_user_string()].also_writes:
                found = conn.execute("SELECT to_regclass(%s)", (f"rag.{other}",)).fetchone()
                assert found and found[0] is not None, other


# --- quarantine at a glance ----------------------------------------------------------------


def test_quarantine_total_and_per_source_checks_on_the_sample_corpus(
    corpus: Path, database_url: str, instance: dg.DagsterInstance
) -> None:
    resources = make_resources(database_url, corpus / "sources.yaml")
    names = [source.name for source in load_sources(corpus / "sources.yaml")]
    instance.add_dynamic_partitions(SOURCE_PARTITIONS.name, names)
    checks: dict[tuple[str, str], dg.AssetCheckEvaluation] = {}
    last: dict[str, Any] = {}
    for name in names:
        result = dg.materialize(
            SOURCE_CHECKS, instance=instance, resources=resources, partition_key=name
        )
        for evaluation in result.get_asset_check_evaluations():
            checks[(name, evaluation.check_name)] = evaluation
        [materialization] = result.get_asset_materialization_events()
        last = plain(materialization.step_materialization_data.materialization.metadata)
        assert last["dagster/row_count"] >= 1

    # The latest partition's page shows every source's quarantine, not only its own.
    assert names[-1] != "acme_support"
    assert last["quarantined_all_sources"] == len(SAMPLE_QUARANTINE)
    assert last["quarantined_by_source"] == {"acme_support": len(SAMPLE_QUARANTINE)}
    overview = last["quarantine_all_sources"]
    for doc_id, reason in SAMPLE_QUARANTINE.items():
        assert f"| acme_support | {doc_id} | source | {reason} |" in overview

    rate = checks[("acme_support", QUARANTINE_RATE_CHECK)]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert plain(rate.metadata)["quarantined"] == len(SAMPLE_QUARANTINE)
    assert all(
        checks[(name, QUARANTINE_RATE_CHECK)].passed for name in names if name != "acme_support"
    )
    assert all(checks[(name, ACL_CHECK)].passed for name in names)

    # A served document whose ACL is empty (nobody can read it) makes its source's check warn.
    unreadable = "globex_wiki:ops/carrier-onboarding.html"
    with psycopg.connect(database_url, autocommit=True) as conn:
        updated = conn.execute(
            "UPDATE rag.documents SET acl_principals = '{}' WHERE doc_id = %s", (unreadable,)
        ).rowcount
    assert updated == 1
    result = dg.materialize(
        SOURCE_CHECKS, instance=instance, resources=resources, partition_key="globex_wiki"
    )
    acl = {e.check_name: e for e in result.get_asset_check_evaluations()}[ACL_CHECK]
    assert not acl.passed and plain(acl.metadata)["documents_without_acl"] == 1
    assert unreadable in plain(acl.metadata)["documents"]


def test_source_health_checks_are_partitioned_and_non_blocking() -> None:
    specs = {
        spec.name: spec
        for checks in defs.asset_checks
        for spec in checks.check_specs
        if spec.asset_key == source_documents.key
    }
    assert set(specs) == {QUARANTINE_RATE_CHECK, ACL_CHECK}
    for spec in specs.values():
        assert not spec.blocking and spec.description
        assert spec.partitions_def == SOURCE_PARTITIONS


# --- the serving index's history ------------------------------------------------------------


def _gated_versions(database_url: str, count: int) -> list[int]:
    """Versions whose promotion checks all passed (empty: the history is what is tested)."""
    versions = []
    with database.connection(database_url) as conn:
        for number in range(count):
            version_id = conn.execute(
                "INSERT INTO rag.index_versions (model_key, parser_key, chunker_key,"
                " corpus_snapshot, document_count, chunk_count)"
                " VALUES ('m', 'p', 'c', %s, 3, 7) RETURNING version_id",
                (f"snapshot-{number}",),
            ).fetchone()[0]
            for check in PROMOTION_CHECKS:
                index_versions.record_check(conn, version_id, check, True, True, {})
            versions.append(version_id)
    return versions


def _latest_active_index_event(instance: dg.DagsterInstance) -> dict[str, Any]:
    [record] = instance.fetch_materializations(ACTIVE_INDEX, limit=1).records
    assert record.asset_materialization is not None
    return plain(record.asset_materialization.metadata)


def test_promote_then_rollback_shows_who_why_and_the_gates(
    corpus: Path, database_url: str, instance: dg.DagsterInstance
) -> None:
    first, second = _gated_versions(database_url, 2)
    location = build_defs(make_resources(database_url, corpus / "sources.yaml"))

    def run(job: str, config: dict[str, Any]) -> dg.ExecuteInProcessResult:
        result = location.resolve_job_def(job).execute_in_process(
            instance=instance, run_config={"ops": config}
        )
        assert result.success
        return result

    run("promote_index_job", {"promote_index_version": {"config": {"version_id": first}}})
    promoted = run(
        "promote_index_job",
        {"promote_index_version": {"config": {"version_id": second, "reason": "new corpus"}}},
    )
    latest = _latest_active_index_event(instance)
    assert latest["serving_version_id"] == second and latest["previous_version_id"] == first
    assert latest["actor"] == f"dagster run {promoted.run_id}"
    assert latest["reason"] == "new corpus" and latest["action"] == "promote"

    rolled_back = run(
        "rollback_index_job",
        {"rollback_index_version": {"config": {"reason": "answers got worse"}}},
    )
    latest = _latest_active_index_event(instance)
    assert latest["action"] == "rollback"
    assert latest["serving_version_id"] == first and latest["previous_version_id"] == second
    assert latest["actor"] == f"dagster run {rolled_back.run_id}"
    assert latest["reason"] == "answers got worse"
    assert latest["gates_passed"] == sorted(PROMOTION_CHECKS)
    assert "Rolled back to version" in latest["preview"]

    # A rollback from the shell (`rag-pipeline index promote/rollback` share these functions)
    # reaches the page through the sensor, once.
    with database.connection(database_url) as conn:
        index_versions.promote(
            conn, second, actor="user:alice", required_checks=PROMOTION_CHECKS, reason="retry"
        )
        index_versions.rollback(conn, actor="user:bob", reason="still worse")
    sensor_resources = {"postgres": location.resources["postgres"]}
    tick = serving_history_sensor(
        dg.build_sensor_context(instance=instance, resources=sensor_resources)
    )
    assert isinstance(tick, dg.SensorResult)
    assert [plain(e.metadata)["actor"] for e in tick.asset_events] == ["user:alice", "user:bob"]
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)
    latest = _latest_active_index_event(instance)
    assert (latest["serving_version_id"], latest["actor"], latest["reason"]) == (
        first,
        "user:bob",
        "still worse",
    )
    again = serving_history_sensor(
        dg.build_sensor_context(instance=instance, resources=sensor_resources)
    )
    assert isinstance(again, dg.SensorResult) and not again.asset_events

    gc = run("gc_index_job", {})
    [observation] = [
        event.asset_observation_data.asset_observation
        for event in gc.all_events
        if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]
    assert observation.asset_key == ACTIVE_INDEX
    assert plain(observation.metadata)["serving_version_id"] == first


# --- automation, sensors, schedules, resources ------------------------------------------------


def test_sensors_schedules_and_resources_describe_themselves() -> None:
    repository = defs.get_repository_def()
    for sensor in repository.sensor_defs:
        assert sensor.description and len(sensor.description) > 40, sensor.name
    for schedule in repository.schedule_defs:
        assert schedule.description and "Off by default" in schedule.description, schedule.name
    for name, resource in repository.get_top_level_resources().items():
        assert resource.description, name
    sensors = {sensor.name: sensor for sensor in repository.sensor_defs}
    # The README relies on the index being rebuilt after ingestion: on from the start.
    automation = sensors["index_automation_sensor"]
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert "default_automation_condition_sensor" not in sensors
    assert "Off by default" in (sensors["source_catalog_sensor"].description or "")


# --- no placeholders, long lists say how many more ------------------------------------------


def test_long_lists_say_how_many_more() -> None:
    ids = [f"doc:{number}" for number in range(13)]
    diff = {
        "base_version": None,
        "documents": {"added": {"count": 250, "ids": ids}},
        "chunks": {"added": 300},
    }
    text = diff_markdown(diff)
    assert "First version" in text and "None" not in text
    assert "**250**" in text and "and 240 more" in text
    assert _listed([f"q{number}" for number in range(12)]).endswith("and 2 more")
    assert _listed(["q1"]) == "q1"


@pytest.mark.parametrize("asset", sorted(ASSET_TABLES))
def test_every_catalogued_asset_exists(asset: str) -> None:
    assert dg.AssetKey(asset) in defs.resolve_asset_graph().get_all_asset_keys()
