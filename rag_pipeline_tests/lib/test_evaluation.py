"""Evaluation library: BEIR import, subset selection, golden sets, metrics, references, harness.

No database here: the import is checked through the real connector and parser, the metrics
against values computed by hand, the harness against a stand-in `retrieve`.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from rag_pipeline.lib.catalog import ConfigurationError, load_sources, load_user_access
from rag_pipeline.lib.connectors import scan_filesystem_source
from rag_pipeline.lib.evaluation import beir, harness
from rag_pipeline.lib.evaluation.golden import (
    GoldenQuestion,
    parse_golden_question,
    read_golden_set,
)
from rag_pipeline.lib.evaluation.metrics import document_ranking, evaluate, rank_scores
from rag_pipeline.lib.evaluation.references import bm25_reference, dense_reference
from rag_pipeline.lib.parsing import parse_document
from rag_pipeline_tests.fakes import HashedBagOfWordsEmbedder

CORPUS = [
    {"_id": "d1", "title": "Staplers", "text": "The red Swingline stapler belongs to Milton."},
    {"_id": "d2", "title": "TPS reports", "text": "Every TPS report needs the new cover sheet."},
    {"_id": "doc/3", "title": "Slashes", "text": "An id with a slash must still map back."},
    {"_id": "_hidden", "title": "Underscore", "text": "The connector skips files named _x."},
    {"_id": "d5", "title": "", "text": "A document without any title at all."},
    {"_id": "d6", "title": "Parking", "text": "Visitors park behind the building on level 2."},
    {"_id": "d7", "title": "Printers", "text": "PC LOAD LETTER means the paper tray is empty."},
    {"_id": "d8", "title": "Lunch", "text": "Cake is served in the break room on Fridays."},
]
QUERIES = [
    {"_id": "q1", "text": "Who owns the red stapler?"},
    {"_id": "q2", "text": "What does PC LOAD LETTER mean?"},
    {"_id": "q3", "text": "Where do ids with slashes go?"},
    {"_id": "q4", "text": "A query of the train split only."},
    {"_id": "q5", "text": "Judged, but its document is not in the corpus."},
]
# Header line, a grade 0 (not relevant) row, a graded row, a document missing from the corpus.
QRELS = (
    "query-id\tcorpus-id\tscore\n"
    "q1\td1\t1\n"
    "q1\td8\t0\n"
    "q2\td7\t2\n"
    "q2\td6\t1\n"
    "q3\tdoc/3\t1\n"
    "q5\tmissing\t1\n"
)


def write_beir(folder: Path, corpus: list[dict[str, str]] = CORPUS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    lines = "\n".join(json.dumps(record) for record in corpus) + "\n"
    (folder / "corpus.jsonl").write_text(lines, encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps(record) for record in QUERIES) + "\n", encoding="utf-8"
    )
    (folder / "qrels" / "test.tsv").write_text(QRELS, encoding="utf-8")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td2\t1\n")
    return folder


# --- BEIR reading and writing ---------------------------------------------------------------


def test_read_qrels_drops_grade_zero_and_header(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    qrels = beir.read_qrels(beir.qrels_path(folder, "test"))
    assert qrels == {
        "q1": {"d1": 1},
        "q2": {"d7": 2, "d6": 1},
        "q3": {"doc/3": 1},
        "q5": {"missing": 1},
    }
    with pytest.raises(ConfigurationError, match="splits available: \\['test', 'train'\\]"):
        beir.qrels_path(folder, "dev")


@pytest.mark.parametrize("beir_id", ["4983", "doc/3", "_hidden", ".dot", "a b%c", "é-ü", "-x"])
def test_file_names_are_listable_and_map_back(beir_id: str) -> None:
    name = beir.beir_file_name(beir_id)
    assert "/" not in name and not name.startswith((".", "_"))
    assert beir.beir_id_from_file_name(name) == beir_id
    assert beir.beir_id_from_doc_id(beir.pipeline_doc_id("src", beir_id), "src") == beir_id
    with pytest.raises(ValueError, match="not a document of source"):
        beir.beir_id_from_doc_id(beir.pipeline_doc_id("src", beir_id), "other")


def test_import_writes_a_source_the_connector_reads_and_a_matching_golden_set(
    tmp_path: Path,
) -> None:
    folder = write_beir(tmp_path / "mini")
    messages: list[str] = []
    summary = beir.import_beir(
        folder, tmp_path / "out", tenant="initech", group="staff", progress=messages.append
    )
    assert (summary.source, summary.documents, summary.subset) == ("mini", 8, False)
    assert summary.queries == 3 and summary.queries_without_relevant_documents == 1

    # The sources file and sidecar are valid for the pipeline: every file is discovered with
    # the tenant and ACL given, none quarantined.
    (source,) = load_sources(summary.sources_file)
    assert source.tenants == ("initech",)
    discovered = list(scan_filesystem_source(source))
    assert all(doc.quarantine is None for doc in discovered)
    assert {doc.tenant for doc in discovered} == {"initech"}
    assert {doc.acl_principals for doc in discovered} == {("group:staff",)}
    doc_ids = {doc.doc_id for doc in discovered}
    assert {beir.beir_id_from_doc_id(doc_id, "mini") for doc_id in doc_ids} == {
        record["_id"] for record in CORPUS
    }
    access = load_user_access(summary.directory_file, "evaluator")
    assert access.tenant == "initech" and "group:staff" in access.principals

    # The golden set names documents by the ids the pipeline gives them.
    golden = {question.id: question for question in read_golden_set(summary.golden_file)}
    assert set(golden) == {"q1", "q2", "q3"}  # q4 is train, q5's document is missing
    for question in golden.values():
        assert set(question.relevant_doc_ids) <= doc_ids
        assert question.principal == "user:evaluator"
    assert golden["q1"].relevant_doc_ids == ("mini:d1.md",) and golden["q1"].relevance is None
    assert golden["q2"].judgments() == {"mini:d7.md": 2, "mini:d6.md": 1}
    assert golden["q3"].extra["beir"] == {
        "dataset": "mini",
        "split": "test",
        "query_id": "q3",
        "doc_ids": ["doc/3"],
    }
    assert any("writing documents" in message for message in messages)


def test_markdown_keeps_the_text_through_the_real_parser() -> None:
    document = beir.BeirDocument(
        "x",
        "Effects of <i>IL-6</i> & TNF # on *mice*",
        "1. Results were significant (p<0.05) & robust.\n\n"
        "> quoted? *not emphasis* _nor this_ `code` [link](url) \\ back &amp; <b>bold</b>",
    )
    parsed = parse_document(beir.render_markdown(document).encode(), "text/markdown")
    assert parsed.title == document.title
    text = " ".join(" ".join(element.text for element in parsed.elements).split())
    assert text == " ".join(f"{document.title} {document.text}".split())


def test_untitled_document_has_no_heading() -> None:
    rendered = beir.render_markdown(beir.BeirDocument("d5", "", "Only text."))
    assert rendered == "Only text.\n"


# --- subsets ---------------------------------------------------------------------------------


def documents(count: int) -> list[beir.BeirDocument]:
    return [beir.BeirDocument(f"doc{index}", "", "") for index in range(count)]


def test_subset_keeps_every_required_document_and_a_stable_sample() -> None:
    corpus = documents(500)
    required = {"doc3", "doc250", "doc499"}
    keep, seen = beir.select_subset(corpus, required, 50)
    assert seen == 500 and len(keep) == 50 and required <= keep
    # Independent of file order, and a smaller subset is part of a larger one.
    shuffled = corpus[:]
    random.Random(7).shuffle(shuffled)
    assert beir.select_subset(shuffled, required, 50)[0] == keep
    assert beir.select_subset(corpus, required, 20)[0] <= keep
    # More required documents than the limit: all of them, and nothing else.
    many = {f"doc{index}" for index in range(30)}
    assert beir.select_subset(corpus, many, 10)[0] == many


def test_import_subset_says_so_and_reimport_is_incremental(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    out = tmp_path / "out"
    summary = beir.import_beir(folder, out, limit_docs=5)
    files = sorted(path.name for path in (out / "mini").glob("*.md"))
    assert summary.subset and summary.documents == len(files) == 5
    assert (summary.relevant_documents, summary.sampled_documents) == (4, 1)
    assert {"d1.md", "d7.md", "d6.md", beir.beir_file_name("doc/3")} <= set(files)
    manifest = json.loads((out / beir.IMPORT_MANIFEST).read_text())
    assert manifest["subset"] is True and manifest["corpus_documents"] == 8
    assert "5 of 8 documents" in (out / "sources.yaml").read_text()

    before = {path.name: path.stat().st_mtime_ns for path in (out / "mini").glob("*.md")}
    smaller = beir.import_beir(folder, out, limit_docs=4)
    assert (smaller.written, smaller.unchanged, smaller.removed) == (0, 4, 1)
    after = {path.name: path.stat().st_mtime_ns for path in (out / "mini").glob("*.md")}
    assert after == {name: before[name] for name in after}


def test_import_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="holds no previous BEIR import"):
        beir.import_beir(folder, tmp_path / "busy")
    with pytest.raises(ConfigurationError, match="source name"):
        beir.import_beir(folder, tmp_path / "out", source="Bad-Name")


def test_duplicate_document_ids_are_refused(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini", [*CORPUS, CORPUS[0]])
    with pytest.raises(ConfigurationError, match="appears twice"):
        beir.import_beir(folder, tmp_path / "out")


# --- golden sets -----------------------------------------------------------------------------


def test_golden_questions_accept_the_first_format_and_check_fields() -> None:
    legacy = parse_golden_question(
        {"id": 7, "query": "vpn?", "user": "alice", "relevant_doc_ids": ["a:b.md"]}, "x:1"
    )
    assert (legacy.id, legacy.question, legacy.principal) == ("7", "vpn?", "user:alice")
    assert legacy.user == "alice" and legacy.judgments() == {"a:b.md": 1}
    bad: list[dict[str, Any]] = [
        {"id": "1", "question": "q", "principal": "group:staff", "relevant_doc_ids": []},
        {"id": "1", "question": " ", "principal": "alice", "relevant_doc_ids": []},
        {"id": "1", "question": "q", "principal": "alice", "relevant_doc_ids": "a:b"},
        {
            "id": "1",
            "question": "q",
            "principal": "alice",
            "relevant_doc_ids": ["a:b", "a:c"],
            "relevance": {"a:b": 2},
        },
    ]
    for record in bad:
        with pytest.raises(ConfigurationError, match="x:2"):
            parse_golden_question(record, "x:2")


def test_duplicate_golden_ids_are_refused(tmp_path: Path) -> None:
    line = json.dumps({"id": "1", "question": "q", "principal": "a", "relevant_doc_ids": []})
    path = tmp_path / "set.jsonl"
    path.write_text(f"{line}\n\n{line}\n")
    with pytest.raises(ConfigurationError, match=r"set.jsonl:3: duplicate id"):
        read_golden_set(path)


def test_bundled_sample_golden_set_reads() -> None:
    path = Path(__file__).resolve().parents[2] / "eval_sets" / "sample_corpus.jsonl"
    questions = read_golden_set(path)
    assert len(questions) >= 60
    assert all(q.principal.startswith("user:") and q.question for q in questions)
    # The first 25 questions (q01-q25, once in the `query`/`user` form) are kept, answerable.
    by_id = {q.id: q for q in questions}
    assert all(by_id[f"q{n:02d}"].relevant_doc_ids for n in range(1, 26))


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_match_a_hand_computed_case() -> None:
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 1}, "q3": {"d5": 1}}
    run = {
        # x, d2, d1: DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3).
        "q1": rank_scores(["x", "d2", "d1"]),
        # d4 (gain 1) first, then d3 (gain 2): DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3).
        "q2": rank_scores(["d4", "d3"]),
        # q3: no results at all, still counted (as 0).
    }
    result = evaluate(qrels, run)
    q1_ndcg = (1 / math.log2(3) + 1 / 2) / (1 + 1 / math.log2(3))
    q2_ndcg = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert result.per_query["q1"]["ndcg_at_10"] == pytest.approx(q1_ndcg)
    assert result.per_query["q2"]["ndcg_at_10"] == pytest.approx(q2_ndcg)
    assert result.per_query["q3"] == {"ndcg_at_10": 0.0, "recall_at_100": 0.0, "mrr_at_10": 0.0}
    assert result.per_query["q1"]["mrr_at_10"] == pytest.approx(0.5)
    assert result.aggregate["ndcg_at_10"] == pytest.approx((q1_ndcg + q2_ndcg) / 3)
    assert result.aggregate["mrr_at_10"] == pytest.approx((0.5 + 1.0) / 3)
    assert result.aggregate["recall_at_100"] == pytest.approx(2 / 3)
    assert result.queries == 3


def test_cutoffs_are_applied() -> None:
    filler = [f"x{index}" for index in range(100)]
    qrels = {"q": {"hit": 1}}
    # Relevant at rank 11: outside MRR@10 and nDCG@10, inside recall@100.
    at_11 = evaluate(qrels, {"q": rank_scores([*filler[:10], "hit"])})
    assert at_11.aggregate == {"ndcg_at_10": 0.0, "recall_at_100": 1.0, "mrr_at_10": 0.0}
    # Relevant at rank 101: outside recall@100 too.
    at_101 = evaluate(qrels, {"q": rank_scores([*filler, "hit"])})
    assert at_101.aggregate["recall_at_100"] == 0.0


def test_rank_order_is_kept_whatever_the_document_ids() -> None:
    # Equal scores would let trec_eval reorder by document id ("a" before "z").
    result = evaluate({"q": {"z": 1}}, {"q": rank_scores(["z", "a"])})
    assert result.aggregate["mrr_at_10"] == 1.0


def test_a_document_ranks_where_its_best_chunk_ranks() -> None:
    assert document_ranking(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


# --- references ------------------------------------------------------------------------------

DOCS = {
    "s:stapler": "Staplers The red Swingline stapler belongs to Milton in the basement.",
    "s:printer": "Printers PC LOAD LETTER means the printer's paper tray is empty.",
    "s:running": "Running The team runs every morning before the standup meeting.",
}


def test_bm25_reference_stems_and_skips_unknown_queries() -> None:
    run = bm25_reference(
        DOCS, {"a": "who has the staplers?", "b": "running teams", "c": "the of and"}, k=10
    ).run
    assert run["a"][0][0] == "s:stapler"
    assert run["b"][0][0] == "s:running"  # "running"/"runs" and "teams"/"team" share stems
    assert run["c"] == []  # stopwords only: nothing, rather than documents in arbitrary order
    assert all(score > 0 for scored in run.values() for _, score in scored)


def test_dense_reference_ranks_by_cosine_and_caches_vectors(tmp_path: Path) -> None:
    embedder = HashedBagOfWordsEmbedder()
    queries = {"a": "red Swingline stapler Milton basement", "b": "PC LOAD LETTER paper tray"}
    first = dense_reference(DOCS, queries, embedder, k=2, cache_dir=tmp_path)
    assert [doc for doc, _ in first.run["a"]][:1] == ["s:stapler"]
    assert [doc for doc, _ in first.run["b"]][:1] == ["s:printer"]
    assert len(first.run["a"]) == 2
    embedded = embedder.texts_embedded
    second = dense_reference(DOCS, queries, embedder, k=2, cache_dir=tmp_path)
    assert second.run == first.run
    assert embedder.texts_embedded == embedded + len(queries)  # documents came from the cache


# --- harness (retrieval stood in for; the real one runs in test_import_beir.py) ---------------


class _Hit:
    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id
        self.version_id = 4


class _Result:
    def __init__(self, hits: list[_Hit], fallback: str | None = None) -> None:
        self.hits = hits
        self.fallback_reason = fallback
        self.mode_requested = "vector"
        self.mode_used = "lexical" if fallback else "vector"


QUESTIONS = [
    GoldenQuestion("q1", "stapler?", "user:zed", ("s:stapler",)),
    GoldenQuestion("q2", "printer?", "user:zed", ("s:printer",)),
]


def fake_retrieve(calls: list[tuple[Any, ...]], fallback: str | None = None) -> harness.Retrieve:
    def retrieve(conn: Any, access: Any, query: str, options: Any, embedder: Any, **kw: Any) -> Any:
        calls.append((access, query, options, kw))
        # Chunks of the same document repeat; the right document second for q2.
        ranking = (
            ["s:stapler", "s:stapler", "s:printer"]
            if "stapler" in query
            else [
                "s:running",
                "s:printer",
            ]
        )
        return _Result([_Hit(doc_id) for doc_id in ranking], fallback)

    return retrieve


def run_configuration(
    retrieve: harness.Retrieve, configuration: harness.Configuration
) -> harness.ConfigurationResult:
    return harness.evaluate_configuration(
        None,  # type: ignore[arg-type]  # the stand-in never touches a connection
        HashedBagOfWordsEmbedder(),
        QUESTIONS,
        lambda question: question.user,  # type: ignore[arg-type,return-value]
        configuration,
        depth=40,
        version_id=4,
        retrieve_with=retrieve,
    )


def test_harness_asks_each_question_with_the_configuration_and_scores_documents() -> None:
    calls: list[tuple[Any, ...]] = []
    result = run_configuration(fake_retrieve(calls), harness.CONFIGURATIONS[0])
    assert result.status == "ok" and result.version_id == 4
    assert [(access, query) for access, query, _, _ in calls] == [
        ("zed", "stapler?"),
        ("zed", "printer?"),
    ]
    options = calls[0][2]
    assert (options.mode, options.limit) == ("vector", 40) and calls[0][3] == {"version_id": 4}
    assert result.outcomes[0].doc_ids == ["s:stapler", "s:printer"]
    assert result.evaluation is not None
    assert result.evaluation.per_query["q1"]["mrr_at_10"] == 1.0
    assert result.evaluation.per_query["q2"]["mrr_at_10"] == 0.5
    records = harness.per_query_records(
        QUESTIONS, "vector", result.evaluation, {"q2": result.outcomes[1].doc_ids}
    )
    assert records[1]["first_relevant_rank"] == 2 and records[1]["top_10"][0] == "s:running"


def test_harness_reports_unavailable_and_fallen_back_configurations() -> None:
    unknown = harness.Configuration("reranked", {"mode": "nonsense"}, "not a mode")
    result = run_configuration(fake_retrieve([]), unknown)
    assert result.status == "unavailable" and "nonsense" in str(result.reason)
    fell_back = run_configuration(fake_retrieve([], "embedder failed"), harness.CONFIGURATIONS[0])
    assert fell_back.status == "failed" and "embedder failed" in str(fell_back.reason)
    assert fell_back.evaluation is None
