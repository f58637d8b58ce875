"""Quality of one index version on one golden set: the numbers a RAG team is judged by.

For every question, asked as its principal against an explicit version (so a candidate is
measured before it serves), through the same entry points users call:

- retrieval (`retrieve`, `IR_DEPTH` chunks): nDCG@10, recall@100 and MRR@10 by ir-measures at
  the document level; retrieval success rate (answerable questions with at least one relevant
  document among the first `SUCCESS_DEPTH` chunks); ragas' offline context precision and recall
  of those chunks against the question's reference passages; p95 latency;
- permission safety: any forbidden document (`forbidden_doc_ids`) retrieved or cited is an
  incident; there must be none;
- answers (`answer`, the configured generator and evidence policy), for the default
  configuration: refusal accuracy on the questions whose right answer is a refusal, answer rate
  on the answerable ones, citation coverage of answer sentences, p95 end-to-end latency.

LLM-judged answer faithfulness and relevancy need an endpoint; without one they are reported as
not measured (None), never guessed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.lib.evaluation.golden import GoldenQuestion, read_golden_set
from rag_pipeline.lib.evaluation.judge import AnswerJudge, JudgeError, JudgeScores
from rag_pipeline.lib.evaluation.measurement import percentile
from rag_pipeline.lib.evaluation.metrics import document_ranking, evaluate, rank_scores
from rag_pipeline.lib.retrieval.answer import EvidencePolicy, answer
from rag_pipeline.lib.retrieval.generators import Generator
from rag_pipeline.lib.retrieval.pipeline import LEXICAL, VECTOR, RetrievalOptions, retrieve
from rag_pipeline.lib.retrieval.session import serving_transaction

# Chunks retrieved per question for the IR metrics; recall@100 counts the documents among them.
IR_DEPTH = 100
# "Retrieval success": at least one relevant document among this many first chunks.
SUCCESS_DEPTH = 5
DEFAULT_CONFIGURATION = "default"

# Metric names, in the order reports show them.
METRICS = (
    "ndcg_at_10",
    "recall_at_100",
    "mrr_at_10",
    "retrieval_success_rate",
    "context_precision",
    "context_recall",
    "refusal_accuracy",
    "answer_rate",
    "citation_coverage",
    "answer_faithfulness",
    "answer_relevancy",
    "permission_incidents",
    "judge_failures",
    "retrieval_p95_ms",
    "answer_p95_ms",
)


@dataclass(frozen=True)
class GoldenSet:
    name: str
    path: Path
    questions: tuple[GoldenQuestion, ...]
    # SHA-256 of the file: results are reused only for exactly the same questions.
    content_hash: str


def load_golden_set(path: Path | str) -> GoldenSet:
    path = Path(path)
    return GoldenSet(
        name=path.stem,
        path=path,
        questions=tuple(read_golden_set(path)),
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


@dataclass(frozen=True)
class Configuration:
    name: str
    options: RetrievalOptions
    # Answers are asked (and answer metrics computed) for the default configuration only.
    answers: bool


def configurations(default: RetrievalOptions) -> tuple[Configuration, ...]:
    """The configured defaults, and each leg alone: a regression can be traced to its leg."""
    return (
        Configuration(DEFAULT_CONFIGURATION, default, answers=True),
        Configuration(VECTOR, dataclasses.replace(default, mode=VECTOR), answers=False),
        Configuration(LEXICAL, dataclasses.replace(default, mode=LEXICAL), answers=False),
    )


def options_hash(options: RetrievalOptions, model_key: str, judge: str = "") -> str:
    payload = json.dumps(
        {"options": dataclasses.asdict(options), "model": model_key, "judge": judge},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass
class SetEvaluation:
    """One version x golden set x configuration: its metrics and per-question outcomes."""

    version_id: int
    golden_set: str
    golden_set_hash: str
    configuration: str
    options_hash: str
    questions: int
    metrics: dict[str, float | None]
    per_question: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Loaded from an earlier run instead of measured now.
    reused: bool = False


ContextScorer = Callable[[Sequence[str], Sequence[str]], tuple[float, float]]


def _ragas_context_scores(
    retrieved: Sequence[str], references: Sequence[str]
) -> tuple[float, float]:
    from rag_pipeline.lib.evaluation.context_metrics import context_scores

    scores = context_scores(retrieved, references)
    return scores.context_precision, scores.context_recall


def _normalised(text: str) -> str:
    return " ".join(text.split()).lower()


def reference_chunks(
    conn: psycopg.Connection,
    version_id: int,
    access: UserAccess,
    relevant_doc_ids: Sequence[str],
    passages: Sequence[str],
) -> list[str]:
    """The version's chunks that hold each reference passage (whitespace and case ignored).

    ragas' non-LLM metrics compare whole texts by string similarity, so a short passage never
    resembles the longer chunk that contains it; comparing retrieved chunks with the chunks that
    hold the reference passages measures what was meant. A passage no chunk holds whole (split
    by the chunker) is kept as it is.
    """
    if not passages:
        return []
    # Read as the question's reader, like retrieval (row-level security, sql/015).
    with serving_transaction(conn, access):
        rows = conn.execute(
            "SELECT c.text FROM rag.readable_chunks(%s, %s, %s::text[]) r"
            " JOIN rag.chunks c ON c.chunk_id = r.chunk_id"
            " WHERE c.doc_id = ANY(%s) ORDER BY c.doc_id, c.ordinal",
            (version_id, access.tenant, list(access.principals), list(relevant_doc_ids)),
        ).fetchall()
    texts = [(text, _normalised(text)) for (text,) in rows]
    found: list[str] = []
    for passage in passages:
        wanted = _normalised(passage)
        holders = [text for text, normal in texts if wanted in normal]
        for text in holders or [passage]:
            if text not in found:
                found.append(text)
    return found


def _p95(values: Sequence[float]) -> float | None:
    return percentile(values, 0.95) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


@dataclass
class QuestionOutcome:
    """What happened to one golden question; `aggregate` turns a list of them into metrics."""

    question: GoldenQuestion
    # Documents in the order of their best chunk, and those of the first SUCCESS_DEPTH chunks.
    ranking: list[str]
    first_doc_ids: list[str]
    retrieval_ms: float
    mode_used: str = ""
    # (context precision, context recall), when the question has reference passages.
    context: tuple[float, float] | None = None
    # Forbidden documents that were retrieved or cited.
    leaked: list[str] = field(default_factory=list)
    # Answers (the default configuration only): None when no answer was asked for.
    refused: bool | None = None
    sentences: int = 0
    cited_sentences: int = 0
    cited_doc_ids: list[str] = field(default_factory=list)
    answer_ms: float | None = None
    judged: JudgeScores | None = None
    judge_error: str | None = None

    @property
    def expects_refusal(self) -> bool:
        return self.question.extra.get("expect") == "refusal" or not self.question.relevant_doc_ids


def aggregate(
    outcomes: Sequence[QuestionOutcome], *, answers: bool, judged: bool
) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    """Metrics of a set (see METRICS) and a record per question, from the outcomes alone."""
    metrics: dict[str, float | None] = dict.fromkeys(METRICS)
    records: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        record: dict[str, Any] = {"top_10": outcome.ranking[:10], "mode_used": outcome.mode_used}
        if outcome.context is not None:
            record.update(context_precision=outcome.context[0], context_recall=outcome.context[1])
        if outcome.refused is not None:
            record.update(refused=outcome.refused, cited_doc_ids=outcome.cited_doc_ids)
        if outcome.judged is not None:
            record.update(
                faithfulness=outcome.judged.faithfulness, relevancy=outcome.judged.relevancy
            )
        if outcome.judge_error:
            record["judge_error"] = outcome.judge_error
        if outcome.leaked:
            record["forbidden_retrieved"] = outcome.leaked
        records[outcome.question.id] = record
    answerable = [o for o in outcomes if o.question.relevant_doc_ids]
    if answerable:
        evaluation = evaluate(
            {o.question.id: o.question.judgments() for o in answerable},
            {o.question.id: rank_scores(o.ranking) for o in answerable},
        )
        metrics.update(evaluation.aggregate)
        for qid, scores in evaluation.per_query.items():
            records[qid].update({k: round(v, 6) for k, v in scores.items()})
    metrics["retrieval_success_rate"] = _mean(
        [float(bool(set(o.first_doc_ids) & set(o.question.relevant_doc_ids))) for o in answerable]
    )
    contexts = [o.context for o in outcomes if o.context is not None]
    metrics["context_precision"] = _mean([c[0] for c in contexts])
    metrics["context_recall"] = _mean([c[1] for c in contexts])
    metrics["permission_incidents"] = float(sum(1 for o in outcomes if o.leaked))
    metrics["retrieval_p95_ms"] = _p95([o.retrieval_ms for o in outcomes])
    if answers:
        asked = [o for o in outcomes if o.refused is not None]
        metrics["refusal_accuracy"] = _mean(
            [float(bool(o.refused)) for o in asked if o.expects_refusal]
        )
        metrics["answer_rate"] = _mean(
            [float(not o.refused) for o in asked if not o.expects_refusal]
        )
        sentences = sum(o.sentences for o in asked if not o.refused)
        cited = sum(o.cited_sentences for o in asked if not o.refused)
        metrics["citation_coverage"] = cited / sentences if sentences else None
        metrics["answer_p95_ms"] = _p95([o.answer_ms for o in asked if o.answer_ms is not None])
        if judged:
            grades = [o.judged for o in asked if o.judged is not None]
            metrics["answer_faithfulness"] = _mean([g.faithfulness for g in grades])
            metrics["answer_relevancy"] = _mean([g.relevancy for g in grades])
            metrics["judge_failures"] = float(sum(1 for o in asked if o.judge_error))
    return metrics, records


def evaluate_set(
    conn: psycopg.Connection,
    version_id: int,
    golden_set: GoldenSet,
    configuration: Configuration,
    access_for: Callable[[GoldenQuestion], UserAccess],
    embedder: Embedder | None,
    *,
    model_key: str,
    generator: Generator | None = None,
    policy: EvidencePolicy | None = None,
    context_scorer: ContextScorer = _ragas_context_scores,
    judge: AnswerJudge | None = None,
) -> SetEvaluation:
    """Ask every question of `golden_set` against `version_id` with `configuration`.

    With a `judge` (an LLM endpoint is configured), every answer that is not a refusal is also
    graded for faithfulness to its cited passages and relevancy to the question."""
    options = dataclasses.replace(configuration.options, limit=IR_DEPTH)
    outcomes = []
    for question in golden_set.questions:
        access = access_for(question)
        started = time.perf_counter()
        result = retrieve(conn, access, question.question, options, embedder, version_id)
        hits = result.hits
        forbidden = set(question.extra.get("forbidden_doc_ids") or [])
        outcome = QuestionOutcome(
            question=question,
            ranking=document_ranking(hit.doc_id for hit in hits),
            first_doc_ids=[hit.doc_id for hit in hits[:SUCCESS_DEPTH]],
            retrieval_ms=(time.perf_counter() - started) * 1000,
            mode_used=result.mode_used,
            leaked=sorted(forbidden & {hit.doc_id for hit in hits}),
        )
        references = (
            reference_chunks(
                conn,
                version_id,
                access,
                question.relevant_doc_ids,
                question.extra.get("reference_contexts") or [],
            )
            if question.relevant_doc_ids
            else []
        )
        if references:
            outcome.context = context_scorer([hit.text for hit in hits[:SUCCESS_DEPTH]], references)
        if configuration.answers:
            started = time.perf_counter()
            built = answer(
                conn,
                access,
                question.question,
                configuration.options,
                embedder,
                generator=generator,
                version_id=version_id,
                policy=policy,
                channel="evaluation",
            )
            outcome.answer_ms = (time.perf_counter() - started) * 1000
            cited_docs = {citation.doc_id for citation in built.citations}
            outcome.leaked = sorted(set(outcome.leaked) | (forbidden & cited_docs))
            outcome.refused = built.refused
            outcome.cited_doc_ids = sorted(cited_docs)
            outcome.sentences = len(built.sentences)
            outcome.cited_sentences = sum(1 for sentence in built.sentences if sentence.citations)
            if judge is not None and not built.refused:
                cited = {citation.chunk_id for citation in built.citations}
                passages = [hit.text for hit in built.retrieval.hits if hit.chunk_id in cited]
                try:
                    outcome.judged = judge.judge(question.question, built.text, passages)
                except JudgeError as error:
                    outcome.judge_error = str(error)[:200]
        outcomes.append(outcome)
    metrics, per_question = aggregate(
        outcomes, answers=configuration.answers, judged=judge is not None
    )
    return SetEvaluation(
        version_id=version_id,
        golden_set=golden_set.name,
        golden_set_hash=golden_set.content_hash,
        configuration=configuration.name,
        options_hash=options_hash(
            configuration.options, model_key, judge.name if judge and configuration.answers else ""
        ),
        questions=len(golden_set.questions),
        metrics=metrics,
        per_question=per_question,
    )
