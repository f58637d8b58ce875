"""`rag-pipeline audit` and `rag-pipeline status` through the command a user types, after real
runs with promotions, a quality-gate override, a rollback and an erasure record."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg
import pytest
from psycopg.types.json import Jsonb

from rag_pipeline.cli import cli_actor, main
from rag_pipeline.lib import database, index_versions
from rag_pipeline.lib.audit import audit_trail, erasure_table_exists
from rag_pipeline_tests.test_cli_settings import cli_environment  # noqa: F401  (fixture)

QUALITY_GATE = "retrieval_quality_not_regressed"


def json_out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_audit_and_status_after_promotions_override_and_rollback(
    cli_environment: dict[str, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = Path(cli_environment["RAG_SOURCES_FILE"])
    sources.write_text(sources.read_text() + "    freshness: 1h\n")
    notes = sources.parent / "notes"
    database_url = cli_environment["RAG_DATABASE_URL"]

    assert main(["run"]) == 0  # version 1, promoted by the run
    (notes / "tps-reports.md").write_text("# TPS reports\n\nCover sheet version 2.\n")
    assert main(["run"]) == 0  # version 2
    with database.connection(database_url) as conn:
        version_2 = index_versions.active_version_id(conn)

    # A third version fails the quality gate (a golden question whose document does not exist
    # cannot reach the nDCG floor) and is promoted only through the recorded override.
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        json.dumps(
            {
                "id": "q1",
                "question": "who owns the red stapler?",
                "principal": "user:zed",
                "relevant_doc_ids": ["notes:no-such-document.md"],
                "expect": "answer",
            }
        )
        + "\n"
    )
    monkeypatch.setenv("RAG_GOLDEN_SETS", str(golden))
    monkeypatch.setenv("RAG_QUALITY_MIN_NDCG", "0.5")
    (notes / "tps-reports.md").write_text("# TPS reports\n\nCover sheet version 3.\n")
    assert main(["run"]) == 1  # the gate stops it
    capsys.readouterr()
    assert main(["run", "--allow-quality-regression", "golden set is being rewritten"]) == 0
    with database.connection(database_url) as conn:
        version_3 = index_versions.active_version_id(conn)
    assert version_3 != version_2

    assert main(["index", "rollback", "--reason", "version 3 cites the wrong cover sheet"]) == 0
    # The rollback shows on `active_index`'s page at once, not only after the sensor's tick.
    with dg.DagsterInstance.get() as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey("active_index"))
    assert latest is not None and latest.asset_materialization is not None
    shown = {key: value.value for key, value in latest.asset_materialization.metadata.items()}
    assert (shown["action"], shown["serving_version_id"]) == ("rollback", version_2)
    assert shown["reason"] == "version 3 cites the wrong cover sheet"

    entries = json_out(capsys, ["audit", "--json"])
    kinds = [entry["kind"] for entry in entries]
    assert kinds[0] == "rollback" and kinds.count("promotion") == 3 and "override" in kinds
    rollback = entries[0]
    assert rollback["actor"] == cli_actor() and rollback["actor"].startswith("cli:")
    assert rollback["reason"] == "version 3 cites the wrong cover sheet"
    assert (rollback["from_version"], rollback["to_version"]) == (version_3, version_2)
    assert rollback["gates"] and all(gate["passed"] for gate in rollback["gates"])
    promotions = [entry for entry in entries if entry["kind"] == "promotion"]
    assert promotions[0]["to_version"] == version_3
    assert promotions[0]["from_version"] == version_2
    assert str(promotions[0]["actor"]).startswith("dagster run ")
    assert "from_version" not in promotions[-1]  # the very first promotion had none
    # The override of the failed gate: who (the run), why, what it overrode.
    (override,) = [entry for entry in entries if entry["kind"] == "override"]
    assert override["reason"] == "golden set is being rewritten"
    assert override["to_version"] == version_3
    assert override["actor"] == f"dagster run {override['detail']['run_id']}"
    assert override["detail"]["failures_overridden"]
    gate = next(g for g in promotions[0]["gates"] if g["check_name"] == QUALITY_GATE)
    assert gate["overridden"] is True and "overridden" in promotions[0]["gates_summary"]

    assert [e["kind"] for e in json_out(capsys, ["audit", "--json", "--kind", "rollback"])] == [
        "rollback"
    ]
    assert len(json_out(capsys, ["audit", "--json", "--limit", "2"])) == 2
    capsys.readouterr()
    assert main(["audit", "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert f"rollback v{version_3} -> v{version_2}" in text
    assert "why: version 3 cites the wrong cover sheet" in text

    # Freshness: every change became searchable; the rollback does not undo "first searchable".
    (status,) = json_out(capsys, ["status", "--json"])
    assert status["source"] == "notes" and status["target_seconds"] == 3600
    assert status["state"] == "ok" and status["pending_changes"] == 0
    assert status["changes_searchable_in_window"] >= 3
    # ...but search serves version 2's text of the document version 3 changed.
    assert status["documents_behind_serving"] == 1
    assert 0 <= status["latest_lag_seconds"] < 3600 and "last_scan_at" in status
    capsys.readouterr()
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert "notes" in table and "1h" in table and " ok " in table
    assert main(["status", "--window", "soon"]) == 1
    assert "--window" in capsys.readouterr().err

    # Erasures come from rag.erasure_tombstones (sql/014); the entry holds no content.
    with database.connection(database_url) as conn:
        assert erasure_table_exists(conn)
        conn.execute(
            "INSERT INTO rag.erasure_tombstones (doc_id, source, tenant, requested_by, reason,"
            " rows_removed, request_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                "notes:old-minutes.md",
                "notes",
                "initech",
                "dpo@initech.example",
                "data subject request 42",
                Jsonb({"rag.chunks": 1}),
                uuid.uuid4(),
            ),
        )
    (erasure,) = json_out(capsys, ["audit", "--json", "--kind", "erasure"])
    assert erasure["actor"] == "dpo@initech.example"
    assert erasure["reason"] == "data subject request 42"
    assert erasure["detail"]["doc_id"] == "notes:old-minutes.md"
    assert erasure["detail"]["rows_removed"] == {"rag.chunks": 1}
    with database.connection(database_url) as conn:
        assert audit_trail(conn, limit=1)[0].kind == "erasure"  # the newest entry
