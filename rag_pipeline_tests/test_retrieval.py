"""Retrieval through `retrieve` on the real embedded PostgreSQL, with the fake embedder.

The corpus is written with the pipeline's own library functions (scan, parse, chunk, embed,
build a version), as `test_permission_fuzz.py` does, so each test takes well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest

from rag_pipeline import cli
from rag_pipeline.cli import common as cli_common
from rag_pipeline.lib import database, index_versions
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.retrieval import (
    HYBRID,
    LEXICAL,
    MODES,
    VECTOR,
    LexicalIndexMissingError,
    NoServingIndexError,
    QueryTooLongError,
    RetrievalOptions,
    UnknownIndexVersionError,
    retrieve,
    search,
)
from rag_pipeline.lib.retrieval.lexical import bm25_score
from rag_pipeline_tests.fakes import HashedBagOfWordsEmbedder
from rag_pipeline_tests.small_corpus import (
    DOCS,
    EMBEDDER,
    EVERYTHING,
    HR,
    OUTSIDER,
    STAFF,
    build,
    ingest,
    save_tiny_cross_encoder,
)


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


@pytest.fixture()
def served(conn: psycopg.Connection) -> int:
    ingest(conn, DOCS)
    return build(conn).version_id


def ask(
    conn: psycopg.Connection,
    query: str,
    access: UserAccess = STAFF,
    mode: str = HYBRID,
    limit: int = EVERYTHING,
    version_id: int | None = None,
    embedder: object = EMBEDDER,
) -> list[str]:
    """Document names of the hits, best first."""
    options = RetrievalOptions(mode=mode, limit=limit)
    result = retrieve(conn, access, query, options, embedder, version_id)  # type: ignore[arg-type]
    return [hit.doc_id.split(":", 1)[1] for hit in result.hits]


# -- BM25 inside Postgres --------------------------------------------------------------------


def test_lexical_scores_are_bm25_over_the_readers_tenant(
    conn: psycopg.Connection, served: int
) -> None:
    """Every score equals the BM25 formula computed here from the chunks' own lexemes."""
    query = "restore the billing backup after a consumer lag error"
    lexemes = dict(
        conn.execute(
            "SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector('english', %s))",
            (query,),
        ).fetchall()
    )
    chunks: dict[str, dict[str, int]] = {}
    for chunk_id, lexeme, positions in conn.execute(
        "SELECT c.chunk_id, u.lexeme, cardinality(u.positions)"
        " FROM rag.index_version_chunks m JOIN rag.chunks c USING (chunk_id), unnest(c.tsv) u"
        " WHERE m.version_id = %s AND m.tenant = 'acme'",
        (served,),
    ).fetchall():
        chunks.setdefault(chunk_id, {})[lexeme] = positions
    lengths = {chunk_id: sum(terms.values()) for chunk_id, terms in chunks.items()}
    average = sum(lengths.values()) / len(chunks)
    df: dict[str, int] = {}
    for terms in chunks.values():
        for lexeme in terms:
            df[lexeme] = df.get(lexeme, 0) + 1
    readable = {
        row[0]
        for row in conn.execute(
            "SELECT chunk_id FROM rag.readable_chunks(%s, %s, %s)",
            (served, STAFF.tenant, list(STAFF.principals)),
        ).fetchall()
    }
    expected = {
        chunk_id: bm25_score(lexemes, chunks[chunk_id], lengths[chunk_id], average, len(chunks), df)
        for chunk_id in readable
        if set(chunks[chunk_id]) & set(lexemes)
    }
    result = retrieve(conn, STAFF, query, RetrievalOptions(mode=LEXICAL, limit=EVERYTHING))
    got = {hit.chunk_id: hit.score for hit in result.hits}
    assert got.keys() == expected.keys() and len(got) >= 4
    for chunk_id, score in expected.items():
        assert got[chunk_id] == pytest.approx(score, rel=1e-9)
    assert [hit.score for hit in result.hits] == sorted(got.values(), reverse=True)
    # HR's chunk (leave) holds no query term; the restricted-but-matching case is tested below.
    assert result.mode_used == LEXICAL and result.candidates == {LEXICAL: len(expected)}


def test_lexical_finds_the_exact_term_the_vector_leg_misses(
    conn: psycopg.Connection, served: int
) -> None:
    query = "what does ACN-204 mean"
    # The fake embedder hashes words into 384 slots: nothing semantic, so the rare code is one
    # slot among many. BM25 weighs it by its rarity.
    assert ask(conn, query, mode=LEXICAL, limit=1) == ["vpn.txt"]
    assert ask(conn, query, mode=HYBRID, limit=3)[0] == "vpn.txt"
    vector_top = ask(conn, "error code", mode=VECTOR, limit=1)
    lexical = ask(conn, "ACN-204", mode=LEXICAL)
    assert lexical == ["vpn.txt"], "other tenants' documents are never candidates"
    assert vector_top != [] and "globex-vpn.txt" not in ask(conn, query, mode=VECTOR)


def test_scores_do_not_depend_on_other_tenants(conn: psycopg.Connection, served: int) -> None:
    """Statistics are per tenant: another tenant's documents never move a reader's scores."""
    before = retrieve(conn, STAFF, "VPN portal", RetrievalOptions(mode=LEXICAL, limit=10))
    other = {
        f"extra-{n}.txt": ("globex", ("group:staff",), f"VPN portal note {n}") for n in range(8)
    }
    ingest(conn, {**{k: v for k, v in DOCS.items() if v[0] == "globex"}, **other}, source="g")
    build(conn)
    after = retrieve(conn, STAFF, "VPN portal", RetrievalOptions(mode=LEXICAL, limit=10))
    assert after.version_id != before.version_id
    assert [(h.chunk_id, round(h.score, 9)) for h in after.hits] == [
        (h.chunk_id, round(h.score, 9)) for h in before.hits
    ]


# -- versions ----------------------------------------------------------------------------------


def test_explicit_version_reads_a_candidate_that_is_not_serving(
    conn: psycopg.Connection, served: int
) -> None:
    docs = {
        **DOCS,
        "redis.txt": ("acme", ("group:staff",), "Redis eviction. Raise maxmemory for sessions."),
    }
    ingest(conn, docs)
    candidate = build(conn, promote=False)
    assert candidate.created and index_versions.active_version_id(conn) == served
    for mode in MODES:
        assert "redis.txt" in ask(
            conn, "redis maxmemory eviction", mode=mode, limit=3, version_id=candidate.version_id
        )
        assert "redis.txt" not in ask(conn, "redis maxmemory eviction", mode=mode)
    result = retrieve(
        conn, STAFF, "redis", RetrievalOptions(mode=LEXICAL), version_id=candidate.version_id
    )
    assert result.version_id == candidate.version_id
    assert {hit.version_id for hit in result.hits} == {candidate.version_id}
    with pytest.raises(UnknownIndexVersionError):
        retrieve(
            conn,
            STAFF,
            "redis",
            RetrievalOptions(mode=LEXICAL),
            version_id=candidate.version_id + 99,
        )


def test_no_serving_version_and_model_mismatch_are_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(NoServingIndexError, match="promoted"):
        retrieve(conn, STAFF, "vpn", RetrievalOptions(mode=LEXICAL))
    ingest(conn, DOCS)
    build(conn)

    class OtherModel(HashedBagOfWordsEmbedder):
        model_key = "another-model@v1"

    with pytest.raises(NoServingIndexError, match="embedded with"):
        retrieve(conn, STAFF, "vpn", RetrievalOptions(mode=HYBRID), OtherModel())
    # The lexical leg alone needs no model.
    assert retrieve(conn, STAFF, "vpn", RetrievalOptions(mode=LEXICAL), OtherModel()).hits


# -- permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_filter_matching_fewer_than_k_chunks_returns_exactly_all_of_them(
    conn: psycopg.Connection, served: int, mode: str
) -> None:
    """HR may read one document (one chunk): every leg returns exactly it, never more."""
    readable = {
        row[0]
        for row in conn.execute(
            "SELECT chunk_id FROM rag.readable_chunks(%s, %s, %s)",
            (served, HR.tenant, list(HR.principals)),
        ).fetchall()
    }
    assert len(readable) == 1
    # "leave" is in HR's chunk; the other words are in documents HR may not read.
    result = retrieve(
        conn, HR, "parental leave VPN kafka backup", RetrievalOptions(mode=mode, limit=10), EMBEDDER
    )
    assert {hit.chunk_id for hit in result.hits} == readable
    # The other tenant's reader with the same group name sees only its own tenant.
    outsider = ask(conn, "VPN portal ACN-204 backup kafka", OUTSIDER, mode)
    assert set(outsider) == {"globex-vpn.txt"}


# -- switches and fallback ----------------------------------------------------------------------


class BrokenEmbedder(HashedBagOfWordsEmbedder):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model server unreachable")


@pytest.mark.parametrize("mode", [HYBRID, VECTOR])
def test_a_failing_or_missing_embedder_falls_back_to_lexical(
    conn: psycopg.Connection, served: int, mode: str
) -> None:
    options = RetrievalOptions(mode=mode, limit=3)
    failed = retrieve(conn, STAFF, "kafka consumer lag", options, BrokenEmbedder())
    assert failed.mode_requested == mode and failed.mode_used == LEXICAL and failed.fell_back
    assert "RuntimeError: model server unreachable" in (failed.fallback_reason or "")
    assert failed.hits[0].doc_id == "s:kafka.txt"
    assert set(failed.hits[0].scores) == {LEXICAL}
    missing = retrieve(conn, STAFF, "kafka consumer lag", options, None)
    assert missing.mode_used == LEXICAL and missing.fallback_reason == "no embedder available"
    working = retrieve(conn, STAFF, "kafka consumer lag", options, EMBEDDER)
    assert working.mode_used == mode and not working.fell_back


def test_hybrid_reports_every_stage(conn: psycopg.Connection, served: int) -> None:
    result = retrieve(conn, STAFF, "restore billing backup", RetrievalOptions(limit=3), EMBEDDER)
    assert result.mode_used == HYBRID and len(result.hits) == 3
    assert {"embed", "version", "vector", "lexical", "fusion", "hydrate", "total"} <= set(
        result.timings_ms
    )
    top = result.hits[0]
    assert top.doc_id == "s:backup.txt"
    assert {"vector", "lexical", "fusion"} <= set(top.scores) and top.ranks["fusion"] == 1
    assert top.score == top.scores["fusion"]


def test_per_document_cap(conn: psycopg.Connection, served: int) -> None:
    uncapped = ask(conn, "restore drill billing backup checksum", mode=LEXICAL, limit=5)
    assert uncapped.count("backup.txt") >= 2
    options = RetrievalOptions(mode=LEXICAL, limit=5, max_chunks_per_document=1)
    capped = [
        h.doc_id
        for h in retrieve(conn, STAFF, "restore drill billing backup checksum", options).hits
    ]
    assert len(capped) == len(set(capped))


def test_queries_are_checked_before_any_work(conn: psycopg.Connection) -> None:
    embedder = HashedBagOfWordsEmbedder()
    with pytest.raises(QueryTooLongError, match="RAG_MAX_QUERY_CHARS"):
        retrieve(conn, STAFF, "x" * 51, RetrievalOptions(max_query_chars=50), embedder)
    with pytest.raises(ValueError, match="empty"):
        retrieve(conn, STAFF, "   ", RetrievalOptions(), embedder)
    assert embedder.texts_embedded == 0


def test_search_wrapper_uses_the_configured_mode(
    conn: psycopg.Connection, served: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_RETRIEVAL_MODE", "lexical")
    hits = search(conn, BrokenEmbedder(), "ACN-204", STAFF, limit=5)
    assert [hit.doc_id for hit in hits] == ["s:vpn.txt"] and set(hits[0].scores) == {LEXICAL}


# -- incremental lexical index ------------------------------------------------------------------


def lexical_rows(conn: psycopg.Connection) -> dict[str, object]:
    return {
        "chunk_lexical": conn.execute(
            "SELECT count(*), max(xmin::text::bigint) FROM rag.chunk_lexical"
        ).fetchone(),
        "chunk_terms": conn.execute(
            "SELECT count(*), max(xmin::text::bigint) FROM rag.chunk_terms"
        ).fetchone(),
        "index_version_terms": conn.execute(
            "SELECT count(*), max(xmin::text::bigint) FROM rag.index_version_terms"
        ).fetchone(),
    }


def test_a_no_op_rebuild_does_no_lexical_work(conn: psycopg.Connection, served: int) -> None:
    before = lexical_rows(conn)
    ingest(conn, DOCS)
    again = build(conn)
    assert not again.created and again.version_id == served
    # Same rows, written by the same transactions: nothing was extracted or recomputed.
    assert lexical_rows(conn) == before
    assert conn.execute("SELECT rag.extract_chunk_terms(%s)", (served,)).fetchone()[0] == 0

    # One edited document: only its new chunks are extracted.
    edited = dict(DOCS)
    edited["kafka.txt"] = ("acme", ("group:staff",), "Kafka retention is seven days.")
    ingest(conn, edited)
    extracted_before = conn.execute("SELECT count(*) FROM rag.chunk_lexical").fetchone()[0]
    new = build(conn)
    new_chunks = conn.execute(
        "SELECT count(*) FROM rag.chunks WHERE doc_id = 's:kafka.txt'"
        " AND content_hash = (SELECT content_hash FROM rag.documents WHERE doc_id = 's:kafka.txt')"
    ).fetchone()[0]
    extracted_after = conn.execute("SELECT count(*) FROM rag.chunk_lexical").fetchone()[0]
    assert new.created and extracted_after - extracted_before == new_chunks == 1
    assert ask(conn, "retention", mode=LEXICAL) == ["kafka.txt"]


def test_garbage_collection_drops_postings_and_statistics(
    conn: psycopg.Connection, served: int
) -> None:
    # Two more versions: the first one is then neither serving nor the rollback target.
    for days in ("seven", "nine"):
        edited = dict(DOCS)
        edited["kafka.txt"] = ("acme", ("group:staff",), f"Kafka retention is {days} days.")
        ingest(conn, edited)
        build(conn)
    report = index_versions.garbage_collect(conn, keep=1)
    assert report.versions_removed == [served]
    assert report.chunks_removed >= 1 and report.lexical_postings_removed >= 1
    orphans = conn.execute(
        "SELECT count(*) FROM rag.chunk_terms t"
        " WHERE NOT EXISTS (SELECT 1 FROM rag.chunks c WHERE c.chunk_id = t.chunk_id)"
    ).fetchone()[0]
    stats = conn.execute(
        "SELECT count(*) FROM rag.index_version_terms WHERE version_id = %s", (served,)
    ).fetchone()[0]
    assert orphans == 0 and stats == 0
    assert ask(conn, "lag", mode=LEXICAL) == []


def test_a_version_without_statistics_is_backfilled_by_the_next_build(
    conn: psycopg.Connection, served: int
) -> None:
    # What a version built before sql/007 looks like, had the migration not backfilled it.
    conn.execute("DELETE FROM rag.index_version_terms WHERE version_id = %s", (served,))
    conn.execute("DELETE FROM rag.index_version_lexical WHERE version_id = %s", (served,))
    conn.execute(
        "UPDATE rag.index_versions SET lexical_stats_at = NULL WHERE version_id = %s", (served,)
    )
    with pytest.raises(LexicalIndexMissingError):
        retrieve(conn, STAFF, "kafka", RetrievalOptions(mode=LEXICAL))
    assert not build(conn).created
    assert ask(conn, "kafka", mode=LEXICAL)[0] == "kafka.txt"


# -- the CLI and the settings ------------------------------------------------------------------


@pytest.fixture()
def cli_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[psycopg.Connection]:
    directory = tmp_path / "directory.yaml"
    directory.write_text("users:\n  ann: {tenant: acme, groups: [staff]}\n")
    monkeypatch.setenv("RAG_DATABASE_URL", database_url)
    monkeypatch.setenv("RAG_DIRECTORY_FILE", str(directory))
    # The CLI loads the configured model; here the fake, so no weights are read.
    monkeypatch.setattr(cli_common, "_embedder", lambda settings: HashedBagOfWordsEmbedder())
    with database.connection(database_url) as connection:
        ingest(connection, DOCS)
        build(connection)
        yield connection


def cli_search(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[dict], str]:
    assert cli.main(["search", *args, "--user", "ann", "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_cli_search_switches(
    cli_env: psycopg.Connection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hits, err = cli_search(capsys, "ACN-204 portal", "--mode", "lexical")
    assert hits[0]["doc_id"] == "s:vpn.txt" and set(hits[0]["scores"]) == {"lexical"}
    assert "lexical" in err
    hits, err = cli_search(capsys, "ACN-204 portal")
    assert {"vector", "lexical", "fusion"} <= set(hits[0]["scores"]) and "hybrid" in err

    # RAG_RETRIEVAL_MODE is the default; --mode overrides it.
    monkeypatch.setenv("RAG_RETRIEVAL_MODE", "vector")
    hits, err = cli_search(capsys, "ACN-204 portal")
    assert set(hits[0]["scores"]) == {"vector"}
    hits, err = cli_search(capsys, "ACN-204 portal", "--mode", "lexical")
    assert set(hits[0]["scores"]) == {"lexical"}

    # A model that fails to load: the search still answers, lexically, and says so.
    def broken(settings: object) -> None:
        raise OSError("weights missing")

    monkeypatch.setattr(cli_common, "_embedder", broken)
    hits, err = cli_search(capsys, "ACN-204 portal")
    assert set(hits[0]["scores"]) == {"lexical"}
    assert "weights missing" in err and "fell back to lexical" in err

    # --index-version reads a candidate that is not serving.
    docs = {**DOCS, "redis.txt": ("acme", ("group:staff",), "Redis eviction and maxmemory.")}
    ingest(cli_env, docs)
    candidate = build(cli_env, promote=False)
    hits, _ = cli_search(capsys, "redis maxmemory", "--mode", "lexical")
    assert all(hit["doc_id"] != "s:redis.txt" for hit in hits)
    hits, _ = cli_search(
        capsys, "redis maxmemory", "--mode", "lexical", "--index-version", str(candidate.version_id)
    )
    assert hits[0]["doc_id"] == "s:redis.txt" and hits[0]["version_id"] == candidate.version_id


@pytest.mark.parametrize(
    ("variable", "value", "check"),
    [
        ("RAG_BM25_K1", "0.01", "k1"),
        ("RAG_BM25_B", "0", "b"),
        ("RAG_FUSION", "rrf", "fusion"),
        ("RAG_RRF_K", "5", "rrf"),
        ("RAG_LEXICAL_WEIGHT", "1", "weight"),
        ("RAG_RETRIEVAL_CANDIDATES", "1", "candidates"),
        ("RAG_MAX_CHUNKS_PER_DOCUMENT", "1", "cap"),
        ("RAG_FEEDBACK_CHUNKS", "2", "feedback"),
        ("RAG_FEEDBACK_WEIGHT", "1", "feedback_weight"),
    ],
)
def test_cli_honours_each_retrieval_variable(
    cli_env: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    check: str,
) -> None:
    query = "restore drill billing backup checksum kafka"
    if check in ("rrf", "weight"):
        # Exact RRF arithmetic, and legs with weight 0 add nothing (no floor score).
        monkeypatch.setenv("RAG_FUSION", "rrf")
    if check == "feedback_weight":
        monkeypatch.setenv("RAG_FEEDBACK_CHUNKS", "2")
    default, _ = cli_search(capsys, query, "--limit", "20")
    lexical_default, _ = cli_search(capsys, query, "--limit", "20", "--mode", "lexical")
    monkeypatch.setenv(variable, value)
    changed, _ = cli_search(capsys, query, "--limit", "20")
    lexical, _ = cli_search(capsys, query, "--limit", "20", "--mode", "lexical")
    if check in ("k1", "b"):
        assert [h["score"] for h in lexical] != [h["score"] for h in lexical_default]
    elif check in ("fusion", "rrf"):
        # RRF's arithmetic (weights 0.4 vector, 0.6 lexical), not the default z-scores.
        k = 5 if check == "rrf" else 60
        weights = {"vector": 0.4, "lexical": 0.6}
        for hit in changed[:3]:
            expected = sum(
                w / (k + hit["ranks"][leg]) for leg, w in weights.items() if leg in hit["ranks"]
            )
            assert hit["score"] == pytest.approx(expected)
        assert default[0]["score"] != pytest.approx(changed[0]["score"])
    elif check in ("feedback", "feedback_weight"):
        # The second dense round scores chunks against the moved query vector.
        vector = {h["chunk_id"]: h["scores"].get("vector") for h in changed}
        before = {h["chunk_id"]: h["scores"].get("vector") for h in default}
        assert any(
            vector[c] != pytest.approx(before[c])
            for c in vector.keys() & before.keys()
            if vector[c] is not None and before[c] is not None
        )
    elif check == "weight":
        # Only the lexical leg counts: the fused order starts with the lexical order.
        lexical_ids = [h["chunk_id"] for h in lexical_default]
        assert [h["chunk_id"] for h in changed][: len(lexical_ids)] == lexical_ids
    elif check == "candidates":
        _, err = cli_search(capsys, query, "--limit", "1")
        assert "vector=1 lexical=1" in err
    elif check == "cap":
        doc_ids = [h["doc_id"] for h in changed]
        assert len(doc_ids) == len(set(doc_ids)) < len(default)


def test_cli_refuses_invalid_retrieval_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, value in [
        ("RAG_RETRIEVAL_MODE", "bm25"),
        ("RAG_BM25_B", "2"),
        ("RAG_LEXICAL_WEIGHT", "-0.5"),
        ("RAG_FUSION", "borda"),
    ]:
        monkeypatch.setenv(variable, value)
        assert cli.main(["search", "anything", "--user", "alice"]) == 1
        error = capsys.readouterr().err
        assert variable in error and value in error and "Traceback" not in error
        monkeypatch.delenv(variable)


# -- reranking -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised one-layer BERT cross-encoder, built and saved here (no download)."""
    path = save_tiny_cross_encoder(
        tmp_path_factory.mktemp("tiny-cross-encoder"),
        {w.lower().strip(".,;") for _, _, text in DOCS.values() for w in text.split()},
    )
    return path


def test_cross_encoder_reranks_the_fused_candidates(
    conn: psycopg.Connection, served: int, tiny_cross_encoder: Path
) -> None:
    from sentence_transformers import CrossEncoder

    query = "restore the billing backup"
    options = RetrievalOptions(mode=HYBRID, limit=4, reranker=str(tiny_cross_encoder))
    result = retrieve(conn, STAFF, query, options, EMBEDDER)
    assert result.reranker == f"cross-encoder:{tiny_cross_encoder}" and len(result.hits) == 4
    scores = [hit.scores["rerank"] for hit in result.hits]
    assert scores == sorted(scores, reverse=True) and "rerank" in result.timings_ms
    assert [hit.ranks["rerank"] for hit in result.hits] == [1, 2, 3, 4]
    # The scores are the model's own for (query, title + headings + text).
    model = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    top = result.hits[0]
    direct = model.predict([(query, f"{top.title}\n\n{top.text}")])[0]
    assert top.score == pytest.approx(float(direct), abs=1e-5)
    # Reranking reorders the candidates fusion ranked, nothing else: without it, the same pool.
    plain = retrieve(
        conn, STAFF, query, RetrievalOptions(mode=HYBRID, limit=50, rerank=False), EMBEDDER
    )
    assert plain.reranker == "none" and "rerank" not in plain.timings_ms
    assert {hit.chunk_id for hit in result.hits} <= {hit.chunk_id for hit in plain.hits}


def test_cli_reranker_setting_and_switch(
    cli_env: psycopg.Connection,
    tiny_cross_encoder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_RERANKER", str(tiny_cross_encoder))
    hits, err = cli_search(capsys, "restore billing backup")
    assert "rerank" in hits[0]["scores"] and "reranked by cross-encoder" in err
    hits, err = cli_search(capsys, "restore billing backup", "--no-rerank")
    assert "rerank" not in hits[0]["scores"] and "reranked" not in err
    monkeypatch.setenv("RAG_RERANKER", str(tiny_cross_encoder / "missing"))
    assert cli.main(["search", "backup", "--user", "ann"]) == 1
    assert "nothing is downloaded" in capsys.readouterr().err


def test_cli_refuses_a_long_query_before_loading_the_model(
    cli_env: psycopg.Connection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[object] = []
    monkeypatch.setattr(cli_common, "_embedder", lambda settings: loaded.append(settings))
    monkeypatch.setenv("RAG_MAX_QUERY_CHARS", "10")
    for command in (["search", "x" * 50, "--user", "ann"], ["answer", "x" * 50, "--user", "ann"]):
        assert cli.main(command) == 1
        assert "RAG_MAX_QUERY_CHARS" in capsys.readouterr().err
    assert loaded == []
