"""The evaluation report and the retrieval quality gate, through `rag-pipeline run`.

A candidate that retrieves worse than the serving version on a golden set is built, evaluated,
refused by `retrieval_quality_not_regressed`, and not promoted (not even by `index promote`);
only run config overrides it, and the override is recorded with the run and the check.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rag_pipeline.cli import main
from rag_pipeline.lib import database
from rag_pipeline_tests.test_crash_safety import create_empty_database

DOCUMENTS = {
    "vpn.md": "# VPN\n\nConnect to vpn.initech.example. Error ACN-204 means the certificate "
    "expired: renew it in the self-service portal.\n",
    "printer.md": "# Printers\n\nThe third-floor printer jams on A3 paper; use tray two and "
    "call facilities on extension 4410.\n",
    "payroll.md": "# Payroll\n\nSalaries are paid on the 25th of each month; expense claims "
    "filed by the 15th are paid with them.\n",
    "badges.md": "# Badges\n\nA lost badge is blocked by security within one hour; collect a "
    "replacement at the front desk with photo ID.\n",
}
GOLDEN = [
    {
        "id": "vpn",
        "question": "What does VPN error ACN-204 mean?",
        "principal": "user:zed",
        "relevant_doc_ids": ["notes:vpn.md"],
        "reference_contexts": ["Error ACN-204 means the certificate expired"],
    },
    {
        "id": "printer",
        "question": "Which tray should I use when the printer jams on A3?",
        "principal": "user:zed",
        "relevant_doc_ids": ["notes:printer.md"],
    },
    {
        "id": "payroll",
        "question": "On which day of the month are salaries paid?",
        "principal": "user:zed",
        "relevant_doc_ids": ["notes:payroll.md"],
    },
    {
        "id": "badges",
        "question": "What happens when I lose my badge?",
        "principal": "user:zed",
        "relevant_doc_ids": ["notes:badges.md"],
    },
]


@pytest.fixture()
def environment(
    tmp_path: Path, pg_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    root = tmp_path / "data"
    docs = root / "notes"
    docs.mkdir(parents=True)
    (docs / "_metadata.yaml").write_text("defaults:\n  tenant: initech\n  acl: [group:staff]\n")
    for name, text in DOCUMENTS.items():
        (docs / name).write_text(text)
    (root / "sources.yaml").write_text(
        "sources:\n  - name: notes\n    connector: filesystem\n    path: notes\n"
        "    tenants: [initech]\n"
    )
    (root / "directory.yaml").write_text("users:\n  zed: {tenant: initech, groups: [staff]}\n")
    golden = root / "golden.jsonl"
    golden.write_text("".join(json.dumps(q) + "\n" for q in GOLDEN))
    for name, value in {
        "RAG_DATABASE_URL": database_url,
        "RAG_DAGSTER_PG_URL": create_empty_database(pg_data_dir),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "RAG_SOURCES_FILE": str(root / "sources.yaml"),
        "RAG_DIRECTORY_FILE": str(root / "directory.yaml"),
        "RAG_GOLDEN_SETS": str(golden),
        # Floors the healthy corpus clears: the regression is what must fail the gate.
        "RAG_QUALITY_MIN_NDCG": "0.5",
    }.items():
        monkeypatch.setenv(name, value)
    return docs


def serving(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]


def gate(conn: psycopg.Connection, version: int) -> tuple[bool, dict]:
    return conn.execute(
        "SELECT passed, detail FROM rag.index_version_checks"
        " WHERE version_id = %s AND check_name = 'retrieval_quality_not_regressed'",
        (version,),
    ).fetchone()


@pytest.mark.real_model
def test_a_regressing_candidate_is_blocked_until_overridden_with_a_reason(
    environment: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"]) == 0
    # The run ends with the evaluation report's summary.
    out = capsys.readouterr().out
    summary = out[out.index("Evaluation report") :]
    assert "on golden: nDCG@10 1.000" in summary and "permission incidents 0" in summary
    assert summary.rstrip().endswith("retrieval_quality_not_regressed: passed")
    with database.connection(database_url) as conn:
        first = serving(conn)
        passed, detail = gate(conn, first)
        assert passed and detail["sets"]["golden"]["serving_version"] is None
        # One row per version x set x configuration x metric, the candidate measured before it
        # served: default, vector-only and lexical-only.
        configurations = conn.execute(
            "SELECT DISTINCT configuration FROM rag.evaluation_metrics WHERE version_id = %s",
            (first,),
        ).fetchall()
        assert {c for (c,) in configurations} == {"default", "vector", "lexical"}
        ndcg = conn.execute(
            "SELECT value FROM rag.evaluation_metrics WHERE version_id = %s"
            " AND configuration = 'default' AND metric = 'ndcg_at_10'",
            (first,),
        ).fetchone()[0]
        assert ndcg > 0.9

    # Two documents swap their content (a botched migration): the candidate answers half the
    # golden set with the wrong document first.
    (environment / "printer.md").write_text(DOCUMENTS["payroll.md"])
    (environment / "payroll.md").write_text(DOCUMENTS["printer.md"])
    capsys.readouterr()
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert "FAILED check retrieval_quality_not_regressed" in err and "ndcg_at_10" in err
    with database.connection(database_url) as conn:
        assert serving(conn) == first
        candidate = conn.execute("SELECT max(version_id) FROM rag.index_versions").fetchone()[0]
        passed, detail = gate(conn, candidate)
        assert not passed and detail["sets"]["golden"]["serving_version"] == first
        assert {"payroll", "printer"} <= set(detail["sets"]["golden"]["losses"])
        # Both versions' results are kept: history to compare.
        versions = conn.execute(
            "SELECT DISTINCT version_id FROM rag.evaluation_runs ORDER BY 1"
        ).fetchall()
        assert [v for (v,) in versions] == [first, candidate]
    # Promotion re-reads the failed gate: the CLI refuses too.
    assert main(["index", "promote", str(candidate)]) == 1
    assert "retrieval_quality_not_regressed" in capsys.readouterr().err
    # The serving version keeps answering, from the content it was built with.
    assert main(["search", "printer jams on A3 paper", "--user", "zed", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["doc_id"] == "notes:printer.md" and hits[0]["version_id"] == first

    # The migration is fixed and a page is added: an equal-or-better candidate passes and serves.
    (environment / "printer.md").write_text(DOCUMENTS["printer.md"])
    (environment / "payroll.md").write_text(DOCUMENTS["payroll.md"])
    (environment / "parking.md").write_text(
        "# Parking\n\nVisitors park in bay C; register the plate at reception.\n"
    )
    assert main(["run"]) == 0
    with database.connection(database_url) as conn:
        better = serving(conn)
        assert better not in (first, candidate)
        passed, detail = gate(conn, better)
        assert passed and detail["sets"]["golden"]["serving_version"] == first
        assert "override" not in detail

    # A regression again, and the override: run config with a reason, recorded in the check
    # and on the Dagster run.
    (environment / "printer.md").write_text(DOCUMENTS["payroll.md"])
    (environment / "payroll.md").write_text(DOCUMENTS["printer.md"])
    assert main(["run"]) == 1
    assert main(["run", "--allow-quality-regression", "pages moved to the wiki"]) == 0
    with database.connection(database_url) as conn:
        overridden = serving(conn)
        assert overridden not in (first, candidate, better)
        passed, detail = gate(conn, overridden)
        assert passed and detail["override"]["reason"] == "pages moved to the wiki"
        run_id = detail["override"]["run_id"]
    # The KPI table over versions: the regression is visible in the history.
    capsys.readouterr()
    assert main(["quality"]) == 0
    table = capsys.readouterr().out
    assert all(f"v{v} golden" in table for v in (first, candidate, better, overridden))
    assert "| nDCG@10 |" in table and "index build success rate" in table
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert run.tags["rag_pipeline/quality_override"] == "pages moved to the wiki"
        assert run.run_config["ops"]["evaluation_report"]["config"]["allow_quality_regression"]
