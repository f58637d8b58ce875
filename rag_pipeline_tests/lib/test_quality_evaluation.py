"""Quality of an index version on a golden set, stored as history, and the regression decision.

Library level, on the small two-tenant corpus with the fake embedder; the gate through
`rag-pipeline run` is in `test_quality_gate.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.evaluation import kpi, quality, regression
from rag_pipeline.lib.evaluation.golden import GoldenQuestion
from rag_pipeline.lib.evaluation.results_store import (
    find_evaluation,
    metric_history,
    save_evaluation,
)
from rag_pipeline.lib.retrieval import RetrievalOptions
from rag_pipeline.lib.retrieval.answer import EvidencePolicy
from rag_pipeline_tests.small_corpus import DOCS, EMBEDDER, HR, OUTSIDER, STAFF, build, ingest

USERS = {"ann": STAFF, "bob": HR, "cyd": OUTSIDER}
QUESTIONS = [
    {
        "id": "vpn",
        "question": "What does error ACN-204 in the VPN portal mean?",
        "principal": "user:ann",
        "relevant_doc_ids": ["s:vpn.txt"],
        "expect": "answer",
        "reference_contexts": ["If the client shows error ACN-204 the certificate has expired"],
    },
    {
        "id": "kafka",
        "question": "What should I do when billing consumer lag grows?",
        "principal": "user:ann",
        "relevant_doc_ids": ["s:kafka.txt"],
        "expect": "answer",
        "reference_contexts": ["restart the consumer group and check the broker disk"],
    },
    {
        "id": "leave",
        "question": "How many weeks of paid parental leave do employees get?",
        "principal": "user:bob",
        "relevant_doc_ids": ["s:leave.txt"],
        "expect": "answer",
        "reference_contexts": ["Employees get sixteen weeks of paid parental leave"],
    },
    {
        # ann is staff, not HR: the leave policy exists but she may not read it.
        "id": "leave-denied",
        "question": "How many weeks of paid parental leave do employees get?",
        "principal": "user:ann",
        "relevant_doc_ids": [],
        "expect": "refusal",
        "forbidden_doc_ids": ["s:leave.txt"],
    },
]
# Everything the answerer needs to answer the answerable questions from the fake embedder's
# weak similarities, and nothing more.
POLICY = EvidencePolicy(min_similarity=0.0, min_coverage=0.3, similarity_floor=0.0)


def write_set(path: Path, questions: list[dict]) -> quality.GoldenSet:
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return quality.load_golden_set(path)


def access_for(question: GoldenQuestion) -> UserAccess:
    return USERS[question.user]


def scorer(retrieved: list[str], references: list[str]) -> tuple[float, float]:
    """Exact matches instead of ragas in most tests (ragas has its own test)."""
    found = [ref in retrieved for ref in references]
    relevant = [text in references for text in retrieved]
    return (sum(relevant) / len(retrieved) if retrieved else 0.0, sum(found) / len(found))


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


@pytest.fixture()
def version(conn: psycopg.Connection) -> int:
    """The small corpus, built and serving."""
    ingest(conn, DOCS)
    return build(conn).version_id


def evaluate(
    conn: psycopg.Connection,
    version: int,
    golden: quality.GoldenSet,
    options: RetrievalOptions | None = None,
    **kwargs: object,
) -> quality.SetEvaluation:
    configuration = quality.configurations(options or RetrievalOptions())[0]
    return quality.evaluate_set(
        conn,
        version,
        golden,
        configuration,
        access_for,
        EMBEDDER,
        model_key=EMBEDDER.model_key,
        policy=POLICY,
        context_scorer=kwargs.pop("context_scorer", scorer),  # type: ignore[arg-type]
    )


def test_a_version_is_measured_on_every_kpi(
    conn: psycopg.Connection, version: int, tmp_path: Path
) -> None:
    golden = write_set(tmp_path / "small.jsonl", QUESTIONS)
    result = evaluate(conn, version, golden)
    metrics = result.metrics
    assert set(metrics) == set(quality.METRICS)
    assert metrics["ndcg_at_10"] == pytest.approx(1.0)
    assert metrics["retrieval_success_rate"] == 1.0 and metrics["context_recall"] == 1.0
    assert metrics["permission_incidents"] == 0
    # The denied question is refused; every answer sentence cites a chunk.
    assert metrics["refusal_accuracy"] == 1.0 and result.per_question["leave-denied"]["refused"]
    assert metrics["answer_rate"] == 1.0 and metrics["citation_coverage"] == 1.0
    # No LLM judge is configured: not measured, never guessed.
    assert metrics["answer_faithfulness"] is None and metrics["answer_relevancy"] is None
    assert metrics["retrieval_p95_ms"] > 0 and metrics["answer_p95_ms"] > 0
    table = "\n".join(kpi.kpi_table([("v1", metrics)]))
    assert "| nDCG@10 | 1.000 |" in table and "not measured" in table


def test_ragas_scores_the_contexts(conn: psycopg.Connection, version: int, tmp_path: Path) -> None:
    golden = write_set(tmp_path / "small.jsonl", QUESTIONS[:2])
    result = quality.evaluate_set(
        conn,
        version,
        golden,
        quality.configurations(RetrievalOptions())[1],  # vector only, no answers
        access_for,
        EMBEDDER,
        model_key=EMBEDDER.model_key,
    )
    # The reference passages resolve to the chunks holding them; ragas finds those retrieved.
    assert 0 < result.metrics["context_precision"] <= 1
    assert result.metrics["context_recall"] == pytest.approx(1.0)
    assert result.per_question["vpn"]["context_recall"] == pytest.approx(1.0)
    assert result.metrics["refusal_accuracy"] is None


def test_a_forbidden_document_served_is_an_incident_and_fails_the_gate(
    conn: psycopg.Connection, version: int, tmp_path: Path
) -> None:
    # A golden set claiming ann may not read the VPN page, which she can: the evaluator must see
    # the document served and count it (the detection a real leak would hit).
    leak = {**QUESTIONS[3], "id": "vpn-leak", "question": "VPN portal ACN-204"}
    leak["forbidden_doc_ids"] = ["s:vpn.txt"]
    golden = write_set(tmp_path / "leak.jsonl", [QUESTIONS[0], leak])
    result = evaluate(conn, version, golden)
    assert result.metrics["permission_incidents"] == 1
    assert result.per_question["vpn-leak"]["forbidden_retrieved"] == ["s:vpn.txt"]
    decision = regression.decide([result], {}, regression.QualityPolicy())
    assert not decision.passed and "permission incident" in decision.failures[0]


def test_regression_against_the_serving_version_fails_beyond_the_tolerance(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    ingest(conn, DOCS)
    serving = build(conn).version_id
    golden = write_set(tmp_path / "small.jsonl", QUESTIONS)
    before = evaluate(conn, serving, golden)
    # The Kafka runbook loses its content: the candidate answers that question worse.
    damaged = {**DOCS, "kafka.txt": ("acme", ("group:staff",), "Page intentionally left blank.")}
    ingest(conn, damaged)
    candidate = build(conn, promote=False).version_id
    after = evaluate(conn, candidate, golden)
    assert after.metrics["ndcg_at_10"] < before.metrics["ndcg_at_10"]

    decision = regression.decide([after], {golden.name: before}, regression.QualityPolicy())
    assert not decision.passed
    assert any("ndcg_at_10 fell from" in failure for failure in decision.failures)
    comparison = decision.comparisons[0]
    assert comparison.losses == ["kafka"] and comparison.wins == []
    detail = decision.detail()
    assert detail["sets"]["small"]["serving_version"] == serving

    # A tolerance as wide as the drop, or the same version on both sides, passes.
    assert regression.decide(
        [after], {golden.name: before}, regression.QualityPolicy(tolerance=1.0)
    ).passed
    assert regression.decide([before], {golden.name: before}, regression.QualityPolicy()).passed
    # Floors apply without any serving version.
    floor = regression.QualityPolicy(floors={"ndcg_at_10": 0.99})
    failed = regression.decide([after], {}, floor)
    assert not failed.passed and "below the floor" in failed.failures[0]


def test_results_are_stored_per_version_set_and_metric_and_found_again(
    conn: psycopg.Connection, version: int, tmp_path: Path
) -> None:
    golden = write_set(tmp_path / "small.jsonl", QUESTIONS)
    result = evaluate(conn, version, golden)
    evaluation_id = save_evaluation(conn, result, produced_by="test")
    rows = conn.execute(
        "SELECT metric, value FROM rag.evaluation_metrics WHERE evaluation_id = %s",
        (evaluation_id,),
    ).fetchall()
    assert {metric for metric, _ in rows} == set(quality.METRICS)
    found = find_evaluation(
        conn, version, golden.content_hash, result.configuration, result.options_hash
    )
    assert found is not None and found.reused
    assert found.metrics == pytest.approx(result.metrics)
    assert found.per_question["vpn"]["top_10"][0] == "s:vpn.txt"
    # Another option set, or an edited golden set, is not the same evaluation.
    other = quality.options_hash(RetrievalOptions(mode="lexical"), EMBEDDER.model_key)
    assert find_evaluation(conn, version, golden.content_hash, "default", other) is None
    edited = write_set(tmp_path / "small.jsonl", QUESTIONS[:2])
    assert edited.content_hash != golden.content_hash
    assert (
        find_evaluation(conn, version, edited.content_hash, "default", result.options_hash) is None
    )
    history = metric_history(conn)
    columns = kpi.history_columns(history)
    assert columns and columns[0][0] == f"v{version} small"


def test_an_llm_judge_grades_answers_only_when_configured(
    conn: psycopg.Connection, version: int, tmp_path: Path
) -> None:
    from rag_pipeline.lib.evaluation.judge import (
        JUDGE_PROMPT,
        JudgeError,
        OpenAICompatibleJudge,
        parse_scores,
    )
    from rag_pipeline_tests.test_answer import FakeChatServer

    golden = write_set(tmp_path / "small.jsonl", QUESTIONS)
    replies = iter(['{"faithfulness": 1, "relevancy": 0.5}', "I think it is fine.", "{}"])
    server = FakeChatServer(lambda body: next(replies, '{"faithfulness": 0, "relevancy": 0}'))
    try:
        judge = OpenAICompatibleJudge(server.url, "judge-model", "secret")
        configuration = quality.configurations(RetrievalOptions())[0]
        result = quality.evaluate_set(
            conn,
            version,
            golden,
            configuration,
            access_for,
            EMBEDDER,
            model_key=EMBEDDER.model_key,
            policy=POLICY,
            context_scorer=scorer,
            judge=judge,
        )
    finally:
        server.close()
    # Three answers graded (the refusal is not): one usable grade, two unusable replies.
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first["auth"] == "Bearer secret" and first["path"] == "/v1/chat/completions"
    messages = first["body"]["messages"]
    assert messages[0]["content"] == JUDGE_PROMPT and "<passage>" in messages[1]["content"]
    assert result.metrics["answer_faithfulness"] == 1.0
    assert result.metrics["answer_relevancy"] == 0.5
    assert result.metrics["judge_failures"] == 2
    # Judged results are another evaluation than unjudged ones.
    assert result.options_hash != quality.options_hash(configuration.options, EMBEDDER.model_key)
    for bad in ("no json", '{"faithfulness": 2, "relevancy": 1}', '{"relevancy": 1}'):
        with pytest.raises(JudgeError):
            parse_scores(bad)


def test_every_kpi_on_a_hand_checked_case() -> None:
    from rag_pipeline.lib.evaluation.judge import JudgeScores

    def ask(qid: str, relevant: list[str], **extra: object) -> GoldenQuestion:
        return GoldenQuestion(qid, f"question {qid}", "user:ann", tuple(relevant), extra=extra)

    outcomes = [
        # Relevant at rank 1: nDCG 1, RR 1; answered in 2 sentences, both cited.
        quality.QuestionOutcome(
            ask("a", ["d1"]),
            ["d1", "d2"],
            ["d1", "d2"],
            10.0,
            context=(1.0, 1.0),
            refused=False,
            sentences=2,
            cited_sentences=2,
            answer_ms=100.0,
            judged=JudgeScores(1.0, 0.5),
        ),
        # Relevant at rank 3: nDCG 1/log2(4) = 0.5, RR 1/3; answered, 1 of 2 sentences cited.
        quality.QuestionOutcome(
            ask("b", ["d3"]),
            ["d1", "d2", "d3"],
            ["d1", "d2", "d3"],
            20.0,
            context=(0.5, 0.0),
            refused=False,
            sentences=2,
            cited_sentences=1,
            answer_ms=200.0,
            judged=JudgeScores(0.5, 1.0),
        ),
        # Relevant nowhere: 0 everywhere; refused although answerable.
        quality.QuestionOutcome(
            ask("c", ["d9"]), ["d1"], ["d1"], 30.0, refused=True, answer_ms=300.0
        ),
        # Must refuse: refused. Must refuse: answered, citing the forbidden document.
        quality.QuestionOutcome(
            ask("r1", [], expect="refusal"), ["d1"], ["d1"], 40.0, refused=True, answer_ms=5.0
        ),
        quality.QuestionOutcome(
            ask("r2", [], expect="refusal", forbidden_doc_ids=["d7"]),
            ["d7"],
            ["d7"],
            50.0,
            leaked=["d7"],
            refused=False,
            sentences=1,
            cited_sentences=1,
            answer_ms=6.0,
            judge_error="no JSON",
        ),
    ]
    metrics, records = quality.aggregate(outcomes, answers=True, judged=True)
    expected = {
        "ndcg_at_10": (1 + 0.5 + 0) / 3,
        "recall_at_100": 2 / 3,
        "mrr_at_10": (1 + 1 / 3 + 0) / 3,
        "retrieval_success_rate": 2 / 3,
        "context_precision": 0.75,
        "context_recall": 0.5,
        "refusal_accuracy": 0.5,
        "answer_rate": 2 / 3,
        # Sentences of answers that were given: (2 + 1 + 1) cited of (2 + 2 + 1).
        "citation_coverage": 4 / 5,
        "answer_faithfulness": 0.75,
        "answer_relevancy": 0.75,
        "permission_incidents": 1,
        "judge_failures": 1,
        # p95 of 10..50 (inclusive quantiles): 48; of 5, 6, 100, 200, 300: 280.
        "retrieval_p95_ms": 48.0,
        "answer_p95_ms": 280.0,
    }
    assert metrics == pytest.approx(expected)
    assert records["b"]["ndcg_at_10"] == pytest.approx(0.5)
    assert records["r2"]["forbidden_retrieved"] == ["d7"]
    # Without answers and without a judge, those metrics are not measured.
    bare, _ = quality.aggregate(outcomes, answers=False, judged=False)
    assert bare["refusal_accuracy"] is None and bare["answer_faithfulness"] is None
