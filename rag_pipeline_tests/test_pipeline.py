"""The real asset graph on the sample corpus, materialized on the embedded PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.chunking import document_text
from rag_pipeline.lib.evaluation.golden import read_golden_set
from rag_pipeline.lib.parsing import ParsedElement
from rag_pipeline.lib.retrieval import search
from rag_pipeline_tests.conftest import (
    copy_corpus,
    create_database,
    in_memory_instance,
    make_resources,
)
from rag_pipeline_tests.pipeline_helpers import metadata_of, run_everything, total

EVAL_SET = Path(__file__).resolve().parents[1] / "eval_sets" / "sample_corpus.jsonl"
# One build with the shipped model, shared by the module: the golden set measures its quality.
pytestmark = pytest.mark.real_model
NASTY_FILES = {
    "acme_support:tickets/TCK-1000-empty.txt": "empty_file",
    "acme_support:exports/kb-export.md": "binary_content",
    "acme_support:exports/ticket-dump-2026.txt": "too_large",
    "acme_support:legacy/TCK-0999-latin1.txt": "undecodable_text",
    "acme_support:attachments/network-diagram.vsdx": "unsupported_format",
}


@pytest.fixture(scope="module")
def built(pg_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One full build of the sample corpus, shared by the read-only tests of this module."""
    corpus = copy_corpus(tmp_path_factory.mktemp("pipeline") / "corpus")
    database_url = create_database(pg_data_dir)
    resources = make_resources(database_url, corpus / "sources.yaml", real_model=True)
    with in_memory_instance() as instance:
        per_source, index = run_everything(instance, resources, corpus / "sources.yaml")
        yield Built(instance, database_url, corpus, resources, per_source, index)


@dataclass
class Built:
    instance: dg.DagsterInstance
    database_url: str
    corpus: Path
    resources: dict[str, Any]
    per_source: dict[str, dg.ExecuteInProcessResult]
    index: dg.ExecuteInProcessResult


def counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = [
        "documents",
        "source_blobs",
        "parsed_documents",
        "chunks",
        "embeddings",
        "index_versions",
        "index_version_chunks",
        "quarantine",
        "document_events",
    ]
    return {
        table: conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM rag.{}").format(psycopg.sql.Identifier(table))
        ).fetchone()[0]
        for table in tables
    }


def test_full_graph_builds_a_serving_index(built: Built) -> None:
    per_source, index, database_url = built.per_source, built.index, built.database_url
    assert all(result.success for result in per_source.values())
    assert index.success
    checks = index.get_asset_check_evaluations()
    assert {check.check_name for check in checks} >= {
        "candidate_covers_live_documents",
        "chunks_within_token_budget",
    }
    assert all(check.passed for check in checks)
    assert metadata_of(index, "active_index")["switched"] is True

    with database.connection(database_url) as conn:
        found = counts(conn)
        live_docs = conn.execute("SELECT count(*) FROM rag.live_documents").fetchone()[0]
        version_docs, version_chunks = conn.execute(
            "SELECT count(DISTINCT doc_id), count(*) FROM rag.index_version_chunks m"
            " JOIN rag.active_index a USING (version_id)"
        ).fetchone()
        dims = conn.execute("SELECT DISTINCT vector_dims(embedding) FROM rag.embeddings").fetchall()
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'rag'"
            ).fetchall()
        )
    assert found["documents"] == total(per_source, "source_documents", "documents_discovered")
    assert found["documents"] >= 45
    assert live_docs == found["documents"] - len(NASTY_FILES)
    assert version_docs == live_docs
    assert version_chunks == found["chunks"] > live_docs
    assert found["embeddings"] == total(per_source, "chunk_embeddings", "texts_embedded")
    assert dims == [(384,)]
    assert "USING hnsw (embedding vector_cosine_ops)" in indexes["embeddings_hnsw"]
    assert "USING gin (tsv)" in indexes["chunks_tsv_gin"]


def test_every_chunk_points_back_to_its_document_and_offsets(built: Built) -> None:
    with database.connection(built.database_url) as conn:
        rows = conn.execute(
            """
            SELECT c.text, c.char_start, c.char_end, c.element_start, c.element_end,
                   c.token_count, p.elements, d.doc_id, b.byte_size
            FROM rag.chunks c
            JOIN rag.documents d ON d.doc_id = c.doc_id AND d.content_hash = c.content_hash
            JOIN rag.parsed_documents p ON p.doc_id = c.doc_id
                AND p.content_hash = c.content_hash AND p.parser_key = c.parser_key
            JOIN rag.source_blobs b ON b.content_hash = d.content_hash
            """
        ).fetchall()
        chunk_total = conn.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
    assert len(rows) == chunk_total > 0
    for text, start, end, element_start, element_end, tokens, elements, doc_id, size in rows:
        parsed = [ParsedElement.from_json(element) for element in elements]
        assert document_text(parsed)[start:end] == text, doc_id
        assert 0 <= element_start < element_end <= len(parsed)
        first_offset = len(document_text(parsed[:element_start])) + (2 if element_start else 0)
        last_end = len(document_text(parsed[:element_end]))
        assert first_offset <= start < first_offset + len(parsed[element_start].text), doc_id
        assert end <= last_end, doc_id
        assert tokens <= 254 and size > 0


def test_nasty_files_are_quarantined_with_reasons(built: Built) -> None:
    records = metadata_of(built.per_source["acme_support"], "source_documents")["quarantine"]
    reasons = {record["doc_id"]: record["reason_code"] for record in records}
    assert reasons == NASTY_FILES
    assert all(record["reason"] for record in records)
    with database.connection(built.database_url) as conn:
        cp1252 = conn.execute(
            "SELECT count(*) FROM rag.chunks WHERE doc_id = %s AND text LIKE %s",
            ("acme_support:legacy/TCK-0998-cp1252.txt", "%é%"),
        ).fetchone()[0]
    assert cp1252 > 0, "a file with a declared encoding is ingested, not quarantined"


def test_second_run_writes_and_embeds_nothing(built: Built) -> None:
    with database.connection(built.database_url) as conn:
        before = counts(conn)
    per_source, index = run_everything(
        built.instance, built.resources, built.corpus / "sources.yaml"
    )
    with database.connection(built.database_url) as conn:
        after = counts(conn)
    assert after == before
    assert total(per_source, "chunk_embeddings", "texts_embedded") == 0
    assert total(per_source, "chunks", "chunks_written") == 0
    assert total(per_source, "parsed_documents", "documents_parsed") == 0
    assert metadata_of(index, "vector_index")["version_created"] is False
    assert metadata_of(index, "active_index")["switched"] is False


def test_search_finds_the_expected_documents(built: Built) -> None:
    """The golden set: hit@5 on answerable questions, and no refusal question ever surfaces
    the document its principal may not read (searched deeper, top 20)."""
    questions = read_golden_set(EVAL_SET)
    answerable = [question for question in questions if question.relevant_doc_ids]
    embedder = built.resources["embedder"].embedder()
    misses, leaks = [], []
    with database.connection(built.database_url) as conn:
        for question in questions:
            access = load_user_access(built.corpus / "directory.yaml", question.user)
            if question.relevant_doc_ids:
                hits = search(conn, embedder, question.question, access, limit=5)
                assert hits, question.id
                if not {hit.doc_id for hit in hits} & set(question.relevant_doc_ids):
                    misses.append(question.id)
            forbidden = set(question.extra.get("forbidden_doc_ids", []))
            if forbidden:
                hits = search(conn, embedder, question.question, access, limit=20)
                leaks += [(question.id, hit.doc_id) for hit in hits if hit.doc_id in forbidden]
    assert not leaks
    assert len(answerable) >= 25
    assert 1 - len(misses) / len(answerable) >= 0.8, misses


def test_search_never_returns_documents_the_user_may_not_read(built: Built) -> None:
    embedder = built.resources["embedder"].embedder()
    with database.connection(built.database_url) as conn:
        readable = {
            user: load_user_access(built.corpus / "directory.yaml", user)
            for user in ("alice", "bob", "carol", "erin", "frank", "grace")
        }
        acl = {
            doc_id: (tenant, principals)
            for doc_id, tenant, principals in conn.execute(
                "SELECT doc_id, tenant, acl_principals FROM rag.documents"
            ).fetchall()
        }
        for user, access in readable.items():
            for query in (
                "parental leave policy",
                "postgres failover",
                "invoice approval",
                "VPN password expiry",
                "incident postmortem",
            ):
                for hit in search(conn, embedder, query, access, limit=10):
                    tenant, principals = acl[hit.doc_id]
                    assert tenant == access.tenant, (user, hit.doc_id)
                    assert set(principals) & set(access.principals), (user, hit.doc_id)
        carol = search(conn, embedder, "parental leave weeks", readable["carol"], limit=3)
        alice = search(conn, embedder, "parental leave weeks", readable["alice"], limit=10)
    assert carol[0].doc_id == "acme_policies:parental-leave-policy.md"
    assert "acme_policies:parental-leave-policy.md" not in {hit.doc_id for hit in alice}


def test_cli_search_and_index_commands(
    built: Built, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag_pipeline import cli

    monkeypatch.setenv("RAG_DATABASE_URL", built.database_url)
    monkeypatch.setenv("RAG_DIRECTORY_FILE", str(built.corpus / "directory.yaml"))
    assert cli.main(["search", "What is the Globex VPN portal address?", "--user", "erin"]) == 0
    out = capsys.readouterr().out
    assert "globex_wiki:it/vpn-access.md" in out and "file://" in out

    assert cli.main(["search", "anything", "--user", "mallory"]) == 1
    assert "unknown user 'mallory'" in capsys.readouterr().err

    assert cli.main(["index", "status"]) == 0
    status = capsys.readouterr().out
    assert "serving version:" in status and "active" in status

    assert cli.main(["index", "diff"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["documents"]["added"]["count"] >= 44

    assert cli.main(["index", "rollback"]) == 1
    assert "no earlier version" in capsys.readouterr().err

    assert cli.main(["search", "invoice approval thresholds", "--user", "frank", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]
    assert cli.main(["lineage", top["chunk_id"], "--user", "frank"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["document"]["doc_id"] == top["doc_id"]
    assert trace["source_bytes"]["sha256_verified"] is True
    assert trace["index_versions"] == [{"version_id": top["version_id"], "status": "active"}]
    assert trace["elements"] and trace["chunk"]["text"] == top["text"]
    assert [event["event"] for event in trace["document_events"]] == ["added"]
    assert cli.main(["lineage", "no-such-chunk", "--user", "frank"]) == 1
    capsys.readouterr()
    # Someone who may not read the document learns nothing, not even that the chunk exists.
    assert cli.main(["lineage", top["chunk_id"], "--user", "alice"]) == 1
    assert "no chunk" in capsys.readouterr().err
