"""Right to erasure end to end: the real pipeline, Dagster's event log on Postgres, the CLI.

Erasure leaves no trace of the text in any table of either database; search, rollback and a
re-run of the pipeline do not bring the document back; shared rows of another document stay.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from rag_pipeline.cli import main
from rag_pipeline.lib import database
from rag_pipeline_tests.conftest import cli_embeds_with, make_resources
from rag_pipeline_tests.pipeline_helpers import metadata_of, run_everything

TARGET = "acme_policies:visitor-escort-procedure.md"
TWIN = "acme_policies:visitor-badge-faq.md"
UNIQUE_WORD = "Zorblatt"
SHARED_SECTION = (
    "## Lost visitor badges\n\n"
    + " ".join(
        f"If a visitor badge is lost, the host reports it to the front desk within {n} minutes, "
        "the badge is disabled in the access system, and a replacement is printed only after "
        "the host confirms the visitor's identity in person."
        for n in (5, 10, 15, 20)
    )
    + "\n"
)
TARGET_TEXT = (
    "# Visitor badge procedure\n\n## Escort duty for contractor Zorblatt Quenby\n\n"
    + " ".join(
        f"Contractor Zorblatt Quenby from Hexaplex Interiors works on floor {n} and must be "
        "escorted at all times by a named employee, who signs the Quenby escort log kept in "
        "the east lobby cabinet before the shift starts."
        for n in (3, 4, 6, 7)
    )
    + "\n\n"
    + SHARED_SECTION
)
TWIN_TEXT = (
    "# Visitor badge procedure\n\n## Escort duty\n\n"
    + " ".join(
        f"Every visitor on floor {n} is escorted by their host at all times and signs out at "
        "the front desk before leaving the building at the end of the visit."
        for n in (1, 2, 8, 9)
    )
    + "\n\n"
    + SHARED_SECTION
)


def dagster_database(pg_data_dir: Path) -> str:
    """A new, empty database for Dagster's storage; returns its psycopg2 URL."""
    admin_url = database.start_embedded_server(pg_data_dir)
    name = f"dagster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    socket_dir = database.embedded_server_status(pg_data_dir).socket_dir
    return f"postgresql+psycopg2://postgres:@/{name}?host={socket_dir}"


@pytest.fixture()
def dagster_url(pg_data_dir: Path) -> str:
    return dagster_database(pg_data_dir)


@pytest.fixture()
def pg_instance(dagster_url: str) -> Iterator[dg.DagsterInstance]:
    overrides = {"storage": {"postgres": {"postgres_url": dagster_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def _where_found(url: str, word: str) -> list[str]:
    """Every table with a row whose whole text form holds `word` (any case), and every bytea
    column holding it: an oracle independent of the erasure scan."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {} r WHERE r::text ILIKE %s").format(
                sql.Identifier(schema, table)
            )
            if conn.execute(query, (f"%{word}%",)).fetchone()[0]:
                found.append(f"{schema}.{table}")
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            " WHERE data_type = 'bytea'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table, column in columns:
            query = sql.SQL("SELECT count(*) FROM {} WHERE position(%s IN {}) > 0").format(
                sql.Identifier(schema, table), sql.Identifier(column)
            )
            if conn.execute(query, (word.encode(),)).fetchone()[0]:
                found.append(f"{schema}.{table}.{column}")
    return found


def _search(capsys: pytest.CaptureFixture[str], query: str, *extra: str) -> list[dict]:
    capsys.readouterr()
    assert main(["search", query, "--user", "henry", "--json", "--limit", "10", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_erasure_leaves_no_trace_of_the_text_in_any_table(
    pg_instance: dg.DagsterInstance,
    database_url: str,
    dagster_url: str,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = corpus / "sources.yaml"
    (corpus / "acme_policies" / "visitor-escort-procedure.md").write_text(TARGET_TEXT)
    (corpus / "acme_policies" / "visitor-badge-faq.md").write_text(TWIN_TEXT)
    resources = make_resources(database_url, sources)
    cli_embeds_with(monkeypatch, resources["embedder"].embedder())
    _, first = run_everything(pg_instance, resources, sources)
    remote = corpus / "acme_policies" / "remote-work-policy.md"
    remote.write_text(remote.read_text() + "\n\nCoworking spaces are reimbursed up to 150 EUR.\n")
    _, second = run_everything(pg_instance, resources, sources)
    v1 = metadata_of(first, "vector_index")["version_id"]
    v2 = metadata_of(second, "vector_index")["version_id"]
    dagster_plain = dagster_url.replace("postgresql+psycopg2://", "postgresql://")
    monkeypatch.setenv("RAG_DATABASE_URL", database_url)
    monkeypatch.setenv("RAG_DAGSTER_PG_URL", dagster_url)
    monkeypatch.setenv("RAG_SOURCES_FILE", str(sources))

    with database.connection(database_url) as conn:
        assert conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0] == v2 != v1
        shared_hashes = {
            row[0]
            for row in conn.execute(
                "SELECT t.text_hash FROM rag.chunks t JOIN rag.chunks w"
                " ON w.text_hash = t.text_hash WHERE t.doc_id = %s AND w.doc_id = %s",
                (TARGET, TWIN),
            )
        }
        content_hash = conn.execute(
            "SELECT content_hash FROM rag.documents WHERE doc_id = %s", (TARGET,)
        ).fetchone()[0]
        members = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT version_id FROM rag.index_version_chunks WHERE doc_id = %s",
                (TARGET,),
            )
        }
    assert shared_hashes, "precondition: one chunk of the target has the twin's exact text"
    assert members == {v1, v2}
    # The text is everywhere before: chunks, parses, postings, and Dagster's event log.
    assert len(_where_found(database_url, UNIQUE_WORD)) >= 3
    assert "public.event_logs" in _where_found(dagster_plain, UNIQUE_WORD)
    query_before = _search(capsys, "escort duty for contractor Zorblatt Quenby")
    assert any(hit["doc_id"] == TARGET for hit in query_before)

    # --dry-run changes nothing, in either database.
    before = (_where_found(database_url, UNIQUE_WORD), _where_found(dagster_plain, UNIQUE_WORD))
    capsys.readouterr()
    assert main(["erase", "--doc", TARGET, "--reason", "GDPR 17", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and dry["documents"][0]["rows_removed"]["rag.documents"] == 1
    assert before == (
        _where_found(database_url, UNIQUE_WORD),
        _where_found(dagster_plain, UNIQUE_WORD),
    )

    # An unknown id is a clear error.
    capsys.readouterr()
    assert main(["erase", "--doc", "acme_policies:nope.md", "--reason", "x"]) == 1
    assert "unknown document id(s): acme_policies:nope.md" in capsys.readouterr().err

    assert (
        main(
            [
                "erase",
                "--doc",
                TARGET,
                "--reason",
                "GDPR art. 17 request 42",
                "--requested-by",
                "dpo@acme",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["clean"] and report["hits"] == [] and report["fragments"] > 10
    assert sum(report["dagster"].values()) >= 1
    assert report["versions_updated"] == sorted({v1, v2})

    # No trace in any table of either database, by an oracle other than the erasure's scan.
    assert _where_found(database_url, UNIQUE_WORD) == []
    assert _where_found(database_url, "Hexaplex") == []
    assert _where_found(dagster_plain, UNIQUE_WORD) == []
    assert _where_found(dagster_plain, "Hexaplex") == []
    # Dagster still reads every event it stored, and the previews say what was erased.
    records = pg_instance.fetch_materializations(dg.AssetKey("chunks"), limit=1000).records
    previews = [
        str(record.asset_materialization.metadata["preview"].value)
        for record in records
        if record.asset_materialization and "preview" in record.asset_materialization.metadata
    ]
    assert previews and any("[erased]" in preview for preview in previews)

    with database.connection(database_url) as conn:
        # The twin's identical chunk keeps its embedding; the target's own vectors are gone.
        for text_hash in shared_hashes:
            assert (
                conn.execute(
                    "SELECT count(*) FROM rag.embeddings WHERE text_hash = %s", (text_hash,)
                ).fetchone()[0]
                >= 1
            )
        assert (
            conn.execute(
                "SELECT count(*) FROM rag.source_blobs WHERE content_hash = %s", (content_hash,)
            ).fetchone()[0]
            == 0
        )
        for version in (v1, v2):
            counts = conn.execute(
                "SELECT document_count, chunk_count FROM rag.index_versions WHERE version_id = %s",
                (version,),
            ).fetchone()
            actual = conn.execute(
                "SELECT count(DISTINCT doc_id), count(*) FROM rag.index_version_chunks"
                " WHERE version_id = %s",
                (version,),
            ).fetchone()
            assert counts == actual
            stats = conn.execute(
                "SELECT sum(chunk_count) FROM rag.index_version_lexical WHERE version_id = %s",
                (version,),
            ).fetchone()[0]
            assert stats == actual[1]
        stone = conn.execute(
            "SELECT t::text, doc_id, source, tenant, requested_by, reason, rows_removed"
            " FROM rag.erasure_tombstones t"
        ).fetchall()
    assert len(stone) == 1
    text, doc_id, source, tenant, requested_by, reason, rows_removed = stone[0]
    assert (doc_id, source, tenant, requested_by) == (TARGET, "acme_policies", "acme", "dpo@acme")
    assert reason == "GDPR art. 17 request 42" and rows_removed["rag.chunks"] >= 2
    assert "Visitor badge procedure" not in text and content_hash not in text

    # Search no longer returns it; the other documents still come from the serving version.
    hits = _search(capsys, "escort duty for contractor Zorblatt Quenby")
    assert all(hit["doc_id"] != TARGET for hit in hits)
    shared = _search(capsys, "lost visitor badge replacement front desk")
    assert TWIN in {hit["doc_id"] for hit in shared}
    assert {hit["version_id"] for hit in shared} == {v2}

    # Rollback to the previous version does not bring it back.
    assert main(["index", "rollback", "--reason", "test"]) == 0
    hits = _search(capsys, "escort duty for contractor Zorblatt Quenby")
    assert all(hit["doc_id"] != TARGET for hit in hits) and hits
    assert {hit["version_id"] for hit in hits} == {v1}

    # A re-run does not ingest it again while the erasure stands (the file is still there).
    per_source, index = run_everything(pg_instance, resources, sources)
    quarantine = metadata_of(per_source["acme_policies"], "source_documents")["quarantine"]
    assert {"doc_id": TARGET, "stage": "source", "reason_code": "erased"}.items() <= next(
        entry for entry in quarantine if entry["doc_id"] == TARGET
    ).items()
    with database.connection(database_url) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM rag.documents WHERE doc_id = %s", (TARGET,)
            ).fetchone()[0]
            == 0
        )
    assert _where_found(database_url, UNIQUE_WORD) == []
    assert _where_found(dagster_plain, UNIQUE_WORD) == []
    # The erased version's corpus snapshot was recomputed: an unchanged corpus maps to it.
    assert metadata_of(index, "vector_index")["version_id"] == v2

    # Lifting the erasure lets the next scan ingest it again, as a new document.
    assert main(["erase", "--lift", TARGET, "--reason", "request withdrawn"]) == 0
    per_source, _ = run_everything(pg_instance, resources, sources)
    assert metadata_of(per_source["acme_policies"], "source_documents")["documents_added"] == 1
