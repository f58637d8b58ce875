"""Freshness SLAs on the real pipeline: a change that is not searchable within its source's
target is a breach, recorded once by the sensor, resolved once a version holding it serves."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from rag_pipeline.definitions import build_defs
from rag_pipeline.defs.freshness.sensors import freshness_sla_sensor
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import ConfigurationError, load_sources
from rag_pipeline.lib.freshness_store import database_now, list_breaches, measure
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.pipeline_helpers import materialize_index, materialize_sources, metadata_of

TARGET = timedelta(hours=1)


def write_corpus(root: Path) -> Path:
    """Two sources: `notes` with a one-hour freshness target, `wiki` without one."""
    for name, text in (
        ("notes", "The red Swingline stapler belongs to Milton in the basement."),
        ("wiki", "Every TPS report needs the new cover sheet before it is filed."),
    ):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "_metadata.yaml").write_text(
            "defaults:\n  tenant: initech\n  acl: [group:staff]\n"
        )
        (folder / "first.md").write_text(f"# {name.title()}\n\n{text}\n")
        (folder / "second.md").write_text(f"# More {name}\n\nThe printer on floor two jams.\n")
    sources = root / "sources.yaml"
    sources.write_text(
        "sources:\n"
        "  - name: notes\n    path: notes\n    tenants: [initech]\n    freshness: 1h\n"
        "  - name: wiki\n    path: wiki\n    tenants: [initech]\n"
    )
    return sources


def backdate_event(database_url: str, doc_id: str, event: str, by: timedelta) -> None:
    """Pretend the scan that detected this change ran `by` earlier (the clock is not mocked)."""
    with database.connection(database_url) as conn:
        updated = conn.execute(
            "UPDATE rag.document_events SET recorded_at = recorded_at - %s"
            " WHERE doc_id = %s AND event = %s",
            (by, doc_id, event),
        ).rowcount
    assert updated == 1


def shift_history(database_url: str, by: timedelta) -> None:
    """Move every recorded scan and switch `by` into the past, keeping their order."""
    with database.connection(database_url) as conn:
        conn.execute("UPDATE rag.document_events SET recorded_at = recorded_at - %s", (by,))
        conn.execute("UPDATE rag.index_promotions SET switched_at = switched_at - %s", (by,))
        conn.execute("UPDATE rag.active_index SET switched_at = switched_at - %s", (by,))


def evaluate_sensor(
    instance: dg.DagsterInstance, resources: dict[str, object], cursor: str | None = None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"postgres": resources["postgres"], "catalog": resources["catalog"]},
    )
    result = freshness_sla_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_freshness_breach_is_detected_recorded_once_and_resolved(
    instance: dg.DagsterInstance, database_url: str, tmp_path: Path
) -> None:
    sources_file = write_corpus(tmp_path / "data")
    resources = make_resources(database_url, sources_file)
    materialize_sources(instance, resources, sources_file)
    first = materialize_index(instance, resources)
    targets = {source.name: source.freshness for source in load_sources(sources_file)}
    assert targets == {"notes": TARGET, "wiki": None}

    # Everything built is searchable: the initial additions have a measured lag, none pending.
    metadata = metadata_of(first, "active_index")
    assert metadata["freshness/notes/pending_changes"] == 0
    assert 0 <= metadata["freshness/notes/latest_lag_s"] < 600
    by_source = {state["source"]: state for state in metadata["freshness"]}
    assert by_source["notes"]["state"] == "ok" and by_source["wiki"]["state"] == "no_target"
    assert "last_scan_at" in by_source["notes"]
    # The audit trail is in the same metadata: the first promotion, by this run, gates passed.
    (entry,) = metadata["audit_trail"]
    assert entry["kind"] == "promotion" and entry["to_version"] == metadata["serving_version_id"]
    assert entry["actor"] == f"dagster run {first.run_id}" and "from_version" not in entry
    assert entry["gates"] and all(gate["passed"] for gate in entry["gates"])
    assert "previous_version_id" not in metadata  # no placeholder for a version that never was

    # A change is scanned but no index is built: pending. The first build ran three hours "ago"
    # and the change was detected two hours "ago".
    shift_history(database_url, timedelta(hours=3))
    (tmp_path / "data" / "notes" / "first.md").write_text("# Notes\n\nThe stapler moved.\n")
    (tmp_path / "data" / "wiki" / "first.md").write_text("# Wiki\n\nCover sheets are gone.\n")
    materialize_sources(instance, resources, sources_file)
    backdate_event(database_url, "notes:first.md", "changed", timedelta(hours=2))
    backdate_event(database_url, "wiki:first.md", "changed", timedelta(hours=2))

    with database.connection(database_url) as conn:
        now = database_now(conn)
        notes, wiki = measure(conn, targets, now=now)
        # The pure rule decides on the time passed in: an hour earlier it was within target.
        notes_then, _ = measure(conn, targets, now=now - timedelta(hours=1, minutes=5))
    assert notes.breached and notes.pending_changes == 1
    assert notes.oldest_pending_doc_id == "notes:first.md"
    assert notes.oldest_pending_event == "changed"
    assert notes.documents_behind_serving == 1
    assert timedelta(hours=2) <= notes.oldest_pending_age < timedelta(hours=2, minutes=10)
    assert not notes_then.breached and notes_then.pending_changes == 1
    assert wiki.pending_changes == 1 and not wiki.breached  # measured, but no SLA

    # The sensor records the breach once, however often it runs while the breach lasts.
    result = evaluate_sensor(instance, resources)
    assert json.loads(result.cursor)["breached"] == ["notes"]
    (observation,) = result.asset_events
    assert observation.partition == "notes"
    assert observation.metadata["freshness_state"].value == "breach"
    again = evaluate_sensor(instance, resources, result.cursor)
    assert again.asset_events == [] and again.skip_reason is not None
    with database.connection(database_url) as conn:
        (breach,) = list_breaches(conn)
    assert breach.source == "notes" and breach.resolved_at is None
    assert breach.oldest_pending_doc_id == "notes:first.md" and breach.pending_changes == 1
    assert breach.target_seconds == TARGET.total_seconds()
    assert breach.worst_lag_seconds >= breach.lag_seconds >= 7200

    # The index is built and promoted: the change is searchable, the breach resolves.
    second = materialize_index(instance, resources)
    metadata = metadata_of(second, "active_index")
    assert metadata["freshness/notes/pending_changes"] == 0
    assert metadata["freshness/notes/latest_lag_s"] >= 7200  # the two backdated hours
    resolved = evaluate_sensor(instance, resources, again.cursor)
    assert json.loads(resolved.cursor)["breached"] == []
    with database.connection(database_url) as conn:
        (breach,) = list_breaches(conn)
        (notes_now, _) = measure(conn, targets, now=database_now(conn))
    assert breach.resolved_at is not None
    assert breach.resolution == "pending changes searchable again"
    assert not notes_now.breached and notes_now.max_lag_within_target is False
    assert notes_now.documents_behind_serving == 0
    assert notes_now.latest_doc_id == "notes:first.md"


def test_bad_freshness_target_is_a_clear_configuration_error(tmp_path: Path) -> None:
    sources_file = write_corpus(tmp_path / "data")
    sources_file.write_text(sources_file.read_text().replace("freshness: 1h", "freshness: soon"))
    with pytest.raises(ConfigurationError, match=r"sources\[0\] \(notes\): 'freshness'.*'soon'"):
        load_sources(sources_file)


def test_assets_carry_the_tightest_target_as_dagster_freshness_policy(tmp_path: Path) -> None:
    sources_file = write_corpus(tmp_path / "data")
    sources_file.write_text(
        sources_file.read_text().replace("[initech]\n", "[initech]\n    freshness: 3h\n", 2)
    )
    defs = build_defs(make_resources("postgresql://unused", sources_file))
    graph = defs.resolve_asset_graph()
    for name in ("source_documents", "vector_index", "active_index"):
        policy = graph.get(dg.AssetKey(name)).freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), name
        assert policy.fail_window.to_timedelta() == TARGET, name  # 1h beats 3h
    assert graph.get(dg.AssetKey("chunks")).freshness_policy is None


def test_a_breach_between_two_sensor_ticks_is_recorded_after_the_fact_once(
    instance: dg.DagsterInstance, database_url: str, tmp_path: Path
) -> None:
    sources_file = write_corpus(tmp_path / "data")
    resources = make_resources(database_url, sources_file)
    materialize_sources(instance, resources, sources_file)
    materialize_index(instance, resources)
    first_tick = evaluate_sensor(instance, resources)
    assert json.loads(first_tick.cursor)["breached"] == []

    # Changed "two hours ago" and searchable now, with no tick while it was pending.
    shift_history(database_url, timedelta(hours=3))
    (tmp_path / "data" / "notes" / "second.md").write_text("# More notes\n\nThe printer works.\n")
    materialize_sources(instance, resources, sources_file)
    backdate_event(database_url, "notes:second.md", "changed", timedelta(hours=2))
    materialize_index(instance, resources)

    tick = evaluate_sensor(instance, resources, first_tick.cursor)
    assert json.loads(tick.cursor)["breached"] == []  # nothing pending now...
    (observation,) = tick.asset_events  # ...but the late change is reported
    assert observation.partition == "notes"
    with database.connection(database_url) as conn:
        (breach,) = list_breaches(conn)
    assert breach.resolution == "searchable late, between two evaluations"
    assert breach.oldest_pending_doc_id == "notes:second.md" and breach.pending_changes == 1
    assert breach.resolved_at is not None and breach.lag_seconds >= 7200
    evaluate_sensor(instance, resources, tick.cursor)
    with database.connection(database_url) as conn:
        assert len(list_breaches(conn)) == 1  # recorded once
