"""The query log on the real embedded PostgreSQL: one row per answer or search, the question only
as a keyed hash, and a log that can fail without failing the answer."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgvector.psycopg import register_vector

from rag_pipeline.lib import database
from rag_pipeline.lib.retrieval import HYBRID, LEXICAL, RetrievalOptions, retrieve
from rag_pipeline.lib.retrieval.answer import EvidencePolicy, answer
from rag_pipeline.lib.retrieval.query_log import log_query
from rag_pipeline_tests.conftest import create_database
from rag_pipeline_tests.small_corpus import DOCS, HR, STAFF, build, ingest

QUESTION = "How many weeks of paid parental leave? My badge secret is XK-93341"
# The question's secret words are not in any document: a lower coverage bar than the default,
# so that it is answered (this file tests the log, not the refusal rule).
POLICY = EvidencePolicy(min_coverage=0.3)


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


@pytest.fixture()
def served(conn: psycopg.Connection) -> int:
    ingest(conn, DOCS)
    return build(conn).version_id


def log_rows(conn: psycopg.Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT row_to_json(q)::text AS whole, q.* FROM rag.query_log q ORDER BY query_id"
    )
    names = [column.name for column in rows.description or ()]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def secret(conn: psycopg.Connection) -> bytes:
    row = conn.execute("SELECT secret FROM rag.query_log_secret").fetchone()
    assert row is not None
    return bytes(row[0])


def test_an_answer_is_logged_once_with_its_chunks_and_without_the_question(
    conn: psycopg.Connection, served: int
) -> None:
    options = RetrievalOptions(mode=LEXICAL, limit=5)
    result = answer(conn, HR, QUESTION, options, None, policy=POLICY, channel="test")
    assert not result.refused
    (row,) = log_rows(conn)
    whole = str(row["whole"]).lower()
    # Nothing of the question's text anywhere in the row, in any column.
    for word in ("parental", "weeks", "badge", "secret", "xk-93341", "93341"):
        assert word not in whole
    assert (
        row["question_hmac"] == hmac.new(secret(conn), QUESTION.encode(), hashlib.sha256).digest()
    )
    assert row["question_chars"] == len(QUESTION)
    assert row["chunk_ids"] == [hit.chunk_id for hit in result.retrieval.hits]
    assert row["chunk_ids"] and set(result.sentences[0].citations) <= set(row["chunk_ids"])
    assert (row["kind"], row["channel"], row["user_id"], row["tenant"]) == (
        "answer",
        "test",
        "bob",
        "acme",
    )
    assert (row["version_id"], row["mode_requested"], row["mode_used"]) == (
        served,
        LEXICAL,
        LEXICAL,
    )
    assert (row["reranker"], row["fell_back"], row["refused"], row["generator"]) == (
        "none",
        False,
        False,
        "extractive",
    )
    timings = row["timings_ms"]
    assert isinstance(timings, dict)
    assert {"version", "lexical", "hydrate", "total", "analyze", "generate"} <= timings.keys()


def test_a_refusal_and_a_fallback_are_logged(conn: psycopg.Connection, served: int) -> None:
    # Hybrid without an embedder: retrieval falls back to lexical; STAFF may not read the leave
    # policy, so nothing readable holds the question's terms.
    result = answer(conn, STAFF, QUESTION, RetrievalOptions(mode=HYBRID), None, policy=POLICY)
    assert result.refused
    (row,) = log_rows(conn)
    assert (row["mode_requested"], row["mode_used"], row["fell_back"]) == (HYBRID, LEXICAL, True)
    assert (row["refused"], row["refusal_reason"]) == (True, "no_evidence")
    assert "xk-93341" not in str(row["whole"]).lower()


def test_search_callers_log_through_log_query(conn: psycopg.Connection, served: int) -> None:
    result = retrieve(conn, STAFF, "restore the billing backup", RetrievalOptions(limit=3))
    query_id = log_query(conn, STAFF, "restore the billing backup", result, channel="cli")
    (row,) = log_rows(conn)
    assert row["query_id"] == query_id and row["kind"] == "search"
    assert row["chunk_ids"] == [hit.chunk_id for hit in result.hits] and len(result.hits) == 3
    assert row["refused"] is None and row["generator"] is None
    assert "billing" not in str(row["whole"]).lower()


def test_a_log_failure_never_fails_the_answer(
    conn: psycopg.Connection, served: int, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("ALTER TABLE rag.query_log RENAME TO query_log_away")
    options = RetrievalOptions(mode=LEXICAL)
    with caplog.at_level(logging.WARNING):
        result = answer(conn, HR, QUESTION, options, None, policy=POLICY)
    assert not result.refused and result.sentences
    assert "query log not written" in caplog.text
    assert QUESTION not in caplog.text
    # The connection is still usable, and logging works again once the table is back.
    conn.execute("ALTER TABLE rag.query_log_away RENAME TO query_log")
    answer(conn, HR, QUESTION, options, None, policy=POLICY)
    assert len(log_rows(conn)) == 1


def test_each_database_has_its_own_secret(conn: psycopg.Connection, pg_data_dir: Path) -> None:
    with database.connection(create_database(pg_data_dir)) as other:
        assert len(secret(conn)) == 32 and len(secret(other)) == 32
        assert secret(conn) != secret(other)


def test_the_log_is_committed_on_a_connection_without_autocommit(
    database_url: str, served: int
) -> None:
    """A pool hands out connections outside autocommit: the row must still be committed, in
    its own transaction, and the connection left idle (no transaction open)."""
    with psycopg.connect(database_url) as pooled:
        register_vector(pooled)
        options = RetrievalOptions(mode=LEXICAL)
        result = answer(pooled, HR, QUESTION, options, None, policy=POLICY, channel="api")
        assert not result.refused
        assert pooled.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with database.connection(database_url) as other:
            assert other.execute("SELECT channel FROM rag.query_log").fetchall() == [("api",)]
