"""The Great Expectations suite on a version's chunks, on the real embedded PostgreSQL.

Library tests build a small corpus without Dagster (`small_corpus`), break one rule at a time and
check that exactly that expectation fails and names an offending chunk. The last test runs the
real jobs: a failing suite keeps the candidate from serving, also through the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg.types.json import Jsonb

from rag_pipeline import cli
from rag_pipeline.definitions import build_defs, defs
from rag_pipeline.lib import database, index_versions
from rag_pipeline.lib.chunk_expectations import (
    CHECK_NAME,
    ChunkExpectationsResult,
    ChunkExpectationThresholds,
    ExpectationOutcome,
    validate_chunks,
)
from rag_pipeline.lib.quality_gates import BLOCKING_GATES, PROMOTION_CHECKS
from rag_pipeline.runner import run_pipeline
from rag_pipeline_tests import small_corpus
from rag_pipeline_tests.conftest import make_resources

BUDGET = small_corpus.CHUNKING.budget
KEPT = "Nightly backups of the billing database are kept for thirty days. "
EXPECTATIONS = {
    "text_not_blank",
    "token_count_within_budget",
    "heading_path_coverage",
    "acl_not_empty",
    "tenant_present",
    "near_duplicate_rate",
    "no_replacement_characters",
    "no_control_characters",
    "no_mojibake",
    "mostly_printable",
    "letter_share",
}


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


def build_version(
    conn: psycopg.Connection, extra: dict[str, tuple[str, tuple[str, ...], str]] | None = None
) -> int:
    small_corpus.ingest(conn, {**small_corpus.DOCS, **(extra or {})})
    return small_corpus.build(conn, promote=False).version_id


def chunk_of(conn: psycopg.Connection, version_id: int, doc: str) -> str:
    return conn.execute(
        "SELECT min(chunk_id) FROM rag.index_version_chunks WHERE version_id = %s AND doc_id = %s",
        (version_id, f"s:{doc}"),
    ).fetchone()[0]


def set_text(conn: psycopg.Connection, chunk_id: str, text: str) -> None:
    conn.execute("UPDATE rag.chunks SET text = %s WHERE chunk_id = %s", (text, chunk_id))


def outcome(result: ChunkExpectationsResult, name: str) -> ExpectationOutcome:
    return next(item for item in result.outcomes if item.name == name)


def assert_only_failure(result: ChunkExpectationsResult, name: str, chunk_id: str) -> None:
    assert not result.passed
    assert result.failed == [name]
    assert f"❌ | `{name}`" in result.markdown()
    assert any(example.startswith(chunk_id) for example in outcome(result, name).examples)
    assert result.detail()["failed_expectations"] == [name]


def test_a_clean_version_meets_every_expectation(conn: psycopg.Connection) -> None:
    version_id = build_version(conn)
    result = validate_chunks(conn, version_id, BUDGET)
    assert result.passed, result.markdown()
    assert {item.name for item in result.outcomes} == EXPECTATIONS
    chunk_count = conn.execute(
        "SELECT chunk_count FROM rag.index_versions WHERE version_id = %s", (version_id,)
    ).fetchone()[0]
    assert result.chunk_count == chunk_count > 0
    counted = [item for item in result.outcomes if item.name != "heading_path_coverage"]
    assert all(item.checked == chunk_count for item in counted)
    # Plain-text documents have no headings: they are not counted, rather than failing.
    assert outcome(result, "heading_path_coverage").checked == 0
    for name in EXPECTATIONS:
        assert f"✅ | `{name}`" in result.markdown()


@pytest.mark.parametrize(
    ("text", "expectation"),
    [
        ("", "text_not_blank"),
        (" \n\t ", "text_not_blank"),
        ("Nightly backups are kept \ufffd for thirty days.", "no_replacement_characters"),
        # One control character in a long text: printable enough, still refused.
        (KEPT + "\x07" + KEPT, "no_control_characters"),
        ("Nightly backups " + "\ue000" * 10 + " are kept for thirty days.", "mostly_printable"),
        ("4f3c 9a1b 77e0 1234 5678 9012 3456 7890 ==== //// 0x1f", "letter_share"),
        ("CafÃ© LumiÃ¨re: les sauvegardes sont gardÃ©es trente jours.", "no_mojibake"),
    ],
)
def test_a_broken_chunk_text_fails_its_expectation(
    conn: psycopg.Connection, text: str, expectation: str
) -> None:
    version_id = build_version(conn)
    chunk_id = chunk_of(conn, version_id, "kafka.txt")
    set_text(conn, chunk_id, text)
    assert_only_failure(validate_chunks(conn, version_id, BUDGET), expectation, chunk_id)


def test_rare_encoding_errors_inherited_from_a_source_do_not_block_an_index(
    conn: psycopg.Connection,
) -> None:
    """BEIR SciFact itself has 11 such chunks in 12,313; a share this small passes, listed."""
    version_id = build_version(conn)
    chunk_id = chunk_of(conn, version_id, "kafka.txt")
    set_text(conn, chunk_id, "Nuclear Factor-\ufffdB affects tumor progression.")
    chunks = validate_chunks(conn, version_id, BUDGET).chunk_count
    tolerant = ChunkExpectationThresholds(max_encoding_error_rate=1.5 / chunks)
    result = validate_chunks(conn, version_id, BUDGET, tolerant)
    assert result.passed
    found = outcome(result, "no_replacement_characters")
    assert found.unexpected_count == 1 and chunk_id in found.examples[0]


def test_quoted_mojibake_in_correct_text_is_not_flagged(conn: psycopg.Connection) -> None:
    """The sample corpus has a ticket about an export showing "Ã©" for "é"."""
    version_id = build_version(conn)
    set_text(
        conn,
        chunk_of(conn, version_id, "kafka.txt"),
        "Export shows “Ã©” instead of “é” for Café Lumière, Amélie and Hélène Brûlé.",
    )
    assert validate_chunks(conn, version_id, BUDGET).passed


@pytest.mark.parametrize("token_count", [BUDGET + 1, 0])
def test_a_token_count_outside_the_budget_fails(conn: psycopg.Connection, token_count: int) -> None:
    version_id = build_version(conn)
    chunk_id = chunk_of(conn, version_id, "vpn.txt")
    conn.execute(
        "UPDATE rag.chunks SET token_count = %s WHERE chunk_id = %s", (token_count, chunk_id)
    )
    result = validate_chunks(conn, version_id, BUDGET)
    assert_only_failure(result, "token_count_within_budget", chunk_id)
    assert f"<= {BUDGET}" in outcome(result, "token_count_within_budget").rule


def test_a_document_with_an_empty_acl_fails(conn: psycopg.Connection) -> None:
    open_notes = ("acme", (), "Open notes. Everybody may read what the canteen serves on Friday.")
    version_id = build_version(conn, {"open.txt": open_notes})
    result = validate_chunks(conn, version_id, BUDGET)
    assert_only_failure(result, "acl_not_empty", chunk_of(conn, version_id, "open.txt"))


def test_a_blank_principal_is_no_acl(conn: psycopg.Connection) -> None:
    blank = ("acme", (" ",), "Open notes. Everybody may read what the canteen serves on Friday.")
    version_id = build_version(conn, {"open.txt": blank})
    result = validate_chunks(conn, version_id, BUDGET)
    assert_only_failure(result, "acl_not_empty", chunk_of(conn, version_id, "open.txt"))


def test_a_chunk_without_tenant_fails(conn: psycopg.Connection) -> None:
    version_id = build_version(conn)
    conn.execute(
        "UPDATE rag.index_version_chunks SET tenant = '' WHERE version_id = %s AND doc_id = %s",
        (version_id, "s:leave.txt"),
    )
    result = validate_chunks(conn, version_id, BUDGET)
    assert_only_failure(result, "tenant_present", chunk_of(conn, version_id, "leave.txt"))


def test_texts_repeated_across_documents_fail_the_near_duplicate_rate(
    conn: psycopg.Connection,
) -> None:
    tenant, acl, text = small_corpus.DOCS["kafka.txt"]
    # The same text, differently cased and punctuated, in another document.
    copy = text.upper().replace(".", " ;")
    version_id = build_version(conn, {"kafka-copy.txt": (tenant, acl, copy)})
    result = validate_chunks(conn, version_id, BUDGET)
    assert_only_failure(result, "near_duplicate_rate", chunk_of(conn, version_id, "kafka.txt"))
    assert outcome(result, "near_duplicate_rate").unexpected_count == 2


def test_repeats_inside_one_document_are_not_near_duplicates(conn: psycopg.Connection) -> None:
    version_id = build_version(conn)
    backup = [
        row[0]
        for row in conn.execute(
            "SELECT chunk_id FROM rag.index_version_chunks WHERE version_id = %s AND doc_id = %s",
            (version_id, "s:backup.txt"),
        ).fetchall()
    ]
    for chunk_id in backup:
        set_text(conn, chunk_id, "Restore drill verified the billing backup checksum.")
    assert validate_chunks(conn, version_id, BUDGET).passed


def test_chunks_of_a_document_with_headings_need_heading_paths(conn: psycopg.Connection) -> None:
    version_id = build_version(conn)
    heading = {"index": 99, "element_type": "Title", "text": "Backups", "depth": 0}
    conn.execute(
        "UPDATE rag.parsed_documents SET elements = elements || %s WHERE doc_id = %s",
        (Jsonb([{**heading, "page_number": None}]), "s:backup.txt"),
    )
    result = validate_chunks(conn, version_id, BUDGET)
    assert_only_failure(result, "heading_path_coverage", chunk_of(conn, version_id, "backup.txt"))
    assert outcome(result, "heading_path_coverage").checked == 3

    # A heading path on two of its three chunks is below the default 80 %; on all three, met.
    conn.execute(
        "UPDATE rag.chunks SET heading_path = '{Backups}' WHERE doc_id = %s AND ordinal > 0",
        ("s:backup.txt",),
    )
    coverage = outcome(validate_chunks(conn, version_id, BUDGET), "heading_path_coverage")
    assert (coverage.success, coverage.unexpected_count) == (False, 1)
    conn.execute(
        "UPDATE rag.chunks SET heading_path = '{Backups}' WHERE doc_id = %s", ("s:backup.txt",)
    )
    assert validate_chunks(conn, version_id, BUDGET).passed


def test_promotion_requires_the_suite_to_have_run(conn: psycopg.Connection) -> None:
    assert CHECK_NAME in PROMOTION_CHECKS
    assert set(BLOCKING_GATES) < set(PROMOTION_CHECKS)
    version_id = build_version(conn)
    with conn.transaction():
        for gate in (*BLOCKING_GATES, "no_canary_leaks", "retrieval_quality_not_regressed"):
            index_versions.record_check(conn, version_id, gate, True, True, {})
    with pytest.raises(index_versions.PromotionBlockedError, match=CHECK_NAME):
        index_versions.promote(conn, version_id, actor="test", required_checks=PROMOTION_CHECKS)
    result = validate_chunks(conn, version_id, BUDGET)
    with conn.transaction():
        index_versions.record_check(
            conn, version_id, CHECK_NAME, result.passed, True, result.detail()
        )
    assert index_versions.promote(conn, version_id, actor="test", required_checks=PROMOTION_CHECKS)


def test_the_suite_is_a_blocking_check_on_the_candidate_index() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.name: key for key in graph.asset_check_keys}
    assert keys[CHECK_NAME].asset_key == dg.AssetKey("vector_index")
    spec = next(
        spec for check in defs.asset_checks for spec in check.check_specs if spec.name == CHECK_NAME
    )
    assert spec.blocking
    # Every check but the per-source health warnings on `source_documents` gates promotion.
    gates = {name for name, key in keys.items() if key.asset_key != dg.AssetKey("source_documents")}
    assert gates == set(PROMOTION_CHECKS)


def test_the_sample_corpus_passes_and_a_failing_suite_keeps_a_candidate_from_serving(
    instance: dg.DagsterInstance,
    database_url: str,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real jobs (`run_pipeline`, as `make demo` runs them): the whole sample corpus meets
    the suite and serves. Copied policies then make the next candidate fail on near-duplicates:
    it does not serve, and the CLI refuses to promote it."""
    resources = make_resources(database_url, corpus / "sources.yaml")
    run = run_pipeline(instance, defs=build_defs(resources))
    assert run.index_succeeded
    first = int(run.metadata["active_index"]["serving_version_id"])
    with database.connection(database_url) as conn:
        passed, detail = stored_check(conn, first)
    assert passed, detail
    assert detail["chunks"] > 100

    # Every Markdown policy: one alone is under the 5% limit in a corpus this size.
    for policy in (corpus / "acme_policies").glob("*.md"):
        policy.with_name(f"{policy.stem}-copy.md").write_text(policy.read_text())
    run = run_pipeline(instance, defs=build_defs(resources))
    assert not run.index_succeeded
    assert "active_index" not in run.metadata
    candidate = int(run.metadata["vector_index"]["version_id"])
    with database.connection(database_url) as conn:
        assert index_versions.active_version_id(conn) == first != candidate
        passed, detail = stored_check(conn, candidate)
    assert not passed
    assert detail["failed_expectations"] == ["near_duplicate_rate"]
    check_key = dg.AssetCheckKey(dg.AssetKey("vector_index"), CHECK_NAME)
    execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])
    evaluation = execution[check_key].evaluation
    assert evaluation is not None and not evaluation.passed
    assert "❌ | `near_duplicate_rate`" in evaluation.metadata["results"].value

    monkeypatch.setenv("RAG_DATABASE_URL", database_url)
    assert cli.main(["index", "promote", str(candidate)]) == 1
    assert CHECK_NAME in capsys.readouterr().err
    with database.connection(database_url) as conn:
        assert index_versions.active_version_id(conn) == first


def stored_check(conn: psycopg.Connection, version_id: int) -> tuple[bool, dict]:
    return conn.execute(
        "SELECT passed, detail FROM rag.index_version_checks"
        " WHERE version_id = %s AND check_name = %s",
        (version_id, CHECK_NAME),
    ).fetchone()
