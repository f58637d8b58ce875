"""Run golden questions through the project's retrieval entry point and score each configuration.

A configuration is a named set of retrieval options (`CONFIGURATIONS`): adding one to the table
is all it takes to evaluate it. Questions are asked as their principal, so permissions apply
exactly as they do for a user, against one index version: the serving one by default, or any
version by id (a candidate can be measured before it is promoted).

Every question goes through `rag_pipeline.lib.retrieval.retrieve`, the entry point the CLI and
the HTTP API call, with `RetrievalOptions(**configuration.options, limit=depth)`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from rag_pipeline.lib.catalog import UserAccess, load_user_access
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.lib.evaluation.golden import GoldenQuestion
from rag_pipeline.lib.evaluation.measurement import percentile
from rag_pipeline.lib.evaluation.metrics import (
    REQUIRED_DEPTH,
    Evaluation,
    document_ranking,
    evaluate,
    rank_scores,
)
from rag_pipeline.lib.retrieval import RetrievalOptions, RetrievalResult, retrieve

# Chunks retrieved per question. Metrics are per document (a document ranks where its best
# chunk ranks) and recall@100 needs 100 distinct documents: SciFact averages 2.4 chunks per
# document, and 300 chunks filled the top 100 documents for every query measured.
DEFAULT_CHUNK_DEPTH = 300
PROGRESS_EVERY = 50

Progress = Callable[[str], None]
Retrieve = Callable[..., RetrievalResult]


@dataclass(frozen=True)
class Configuration:
    name: str
    # Fields of `RetrievalOptions` other than `limit`.
    options: Mapping[str, Any]
    description: str


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("vector", {"mode": "vector"}, "dense only: HNSW over chunk embeddings"),
    Configuration("lexical", {"mode": "lexical"}, "lexical only: BM25 inside Postgres"),
    Configuration("hybrid", {"mode": "hybrid"}, "lexical and vector fused (default settings)"),
    Configuration(
        "hybrid_rrf",
        {"mode": "hybrid", "fusion": "rrf", "rrf_k": 60.0, "lexical_weight": 0.5},
        "lexical and vector fused by RRF, k 60, equal weights (the published default)",
    ),
    Configuration(
        "hybrid_feedback",
        {"mode": "hybrid", "lexical_weight": 0.5, "feedback_chunks": 3, "feedback_weight": 0.7},
        "hybrid (z-scores, BM25 weight 0.5) plus dense pseudo-relevance feedback from the top 3"
        " chunks, weight 0.7: the dev half's best feedback setting",
    ),
)


@dataclass(frozen=True)
class QueryOutcome:
    question_id: str
    doc_ids: list[str]  # documents in rank order, at most REQUIRED_DEPTH
    chunks: int
    latency_ms: float
    version_id: int | None


@dataclass
class ConfigurationResult:
    name: str
    description: str
    status: str  # "ok", "unavailable" or "failed"
    reason: str | None = None
    evaluation: Evaluation | None = None
    outcomes: list[QueryOutcome] = field(default_factory=list)
    seconds: float = 0.0
    version_id: int | None = None

    @property
    def latency_ms(self) -> dict[str, float]:
        values = sorted(outcome.latency_ms for outcome in self.outcomes)
        if not values:
            return {}
        return {
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "mean": statistics.fmean(values),
        }

    @property
    def short_lists(self) -> int:
        """Queries that got fewer than REQUIRED_DEPTH distinct documents (recall@100 then
        counts only what was returned)."""
        return sum(1 for outcome in self.outcomes if len(outcome.doc_ids) < REQUIRED_DEPTH)


class UnavailableError(RuntimeError):
    """`RetrievalOptions` refuses this configuration's options."""


class FellBackError(RuntimeError):
    """Retrieval answered in another mode than asked (for example the embedder failed)."""


def _ask(
    retrieve_with: Retrieve,
    conn: psycopg.Connection,
    embedder: Embedder,
    access: UserAccess,
    question: str,
    configuration: Configuration,
    depth: int,
    version_id: int | None,
    base_options: RetrievalOptions | None,
) -> list[Any]:
    try:
        if base_options is not None:
            options = dataclasses.replace(base_options, **configuration.options, limit=depth)
        else:
            options = RetrievalOptions(**configuration.options, limit=depth)
    except (TypeError, ValueError) as error:
        raise UnavailableError(
            f"RetrievalOptions refuses {configuration.options}: {error}"
        ) from error
    result = retrieve_with(conn, access, question, options, embedder, version_id=version_id)
    if result.fallback_reason:
        # The figures would measure another mode than the configuration's.
        raise FellBackError(
            f"asked for {result.mode_requested}, answered by {result.mode_used}: "
            f"{result.fallback_reason}"
        )
    return list(result.hits)


def serving_version_id(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT version_id FROM rag.active_index").fetchone()
    return int(row[0]) if row else None


class AccessResolver:
    """Principal -> `UserAccess` from a directory file, looked up once per user."""

    def __init__(self, directory_file: Path | str) -> None:
        self.directory_file = Path(directory_file)
        self._found: dict[str, UserAccess] = {}

    def __call__(self, question: GoldenQuestion) -> UserAccess:
        if question.user not in self._found:
            self._found[question.user] = load_user_access(self.directory_file, question.user)
        return self._found[question.user]


def evaluate_configuration(
    conn: psycopg.Connection,
    embedder: Embedder,
    questions: Sequence[GoldenQuestion],
    access_for: Callable[[GoldenQuestion], UserAccess],
    configuration: Configuration,
    *,
    depth: int = DEFAULT_CHUNK_DEPTH,
    version_id: int | None = None,
    base_options: RetrievalOptions | None = None,
    progress: Progress | None = None,
    retrieve_with: Retrieve = retrieve,
) -> ConfigurationResult:
    """Ask every question with `configuration`, then score the document rankings.

    `base_options` (a `RetrievalOptions`, e.g. the configured defaults) supplies every option the
    configuration does not set; without it, the option type's own defaults apply.

    A configuration whose options `RetrievalOptions` refuses is `unavailable`; one that raises on
    a question, or that retrieval answers in another mode, is `failed` with the reason (the other
    configurations still run). `retrieve_with` stands in for `retrieve` in tests.
    """
    say = progress or (lambda message: None)
    result = ConfigurationResult(configuration.name, configuration.description, "ok")
    started = time.perf_counter()
    for number, question in enumerate(questions, 1):
        asked = time.perf_counter()
        try:
            hits = _ask(
                retrieve_with,
                conn,
                embedder,
                access_for(question),
                question.question,
                configuration,
                depth,
                version_id,
                base_options,
            )
        except UnavailableError as error:
            result.status, result.reason = "unavailable", str(error)
            result.outcomes.clear()
            return result
        except Exception as error:  # one configuration failing must not stop the others
            result.status = "failed"
            result.reason = f"question {question.id}: {type(error).__name__}: {error}"
            result.outcomes.clear()
            return result
        latency = (time.perf_counter() - asked) * 1000
        result.outcomes.append(
            QueryOutcome(
                question_id=question.id,
                doc_ids=document_ranking(hit.doc_id for hit in hits)[:REQUIRED_DEPTH],
                chunks=len(hits),
                latency_ms=latency,
                version_id=hits[0].version_id if hits else None,
            )
        )
        if number % PROGRESS_EVERY == 0 or number == len(questions):
            elapsed = time.perf_counter() - started
            say(
                f"  {configuration.name}: {number}/{len(questions)} questions "
                f"({number / elapsed:.1f}/s)"
            )
    result.seconds = time.perf_counter() - started
    versions = {outcome.version_id for outcome in result.outcomes} - {None}
    result.version_id = versions.pop() if len(versions) == 1 else version_id
    result.evaluation = evaluate(
        {question.id: question.judgments() for question in questions},
        {outcome.question_id: rank_scores(outcome.doc_ids) for outcome in result.outcomes},
    )
    return result


def best_configuration(
    results: Sequence[ConfigurationResult], measure: str = "ndcg_at_10"
) -> ConfigurationResult | None:
    """The evaluated configuration with the highest `measure` (first listed wins a tie)."""
    scored = [r for r in results if r.status == "ok" and r.evaluation is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: r.evaluation.aggregate[measure])  # type: ignore[union-attr]


def per_query_records(
    questions: Sequence[GoldenQuestion],
    name: str,
    evaluation: Evaluation,
    rankings: Mapping[str, Sequence[str]],
    latencies: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One record per question: its scores, where the first relevant document ranked and the
    top 10, so wins and losses between configurations can be read later."""
    records = []
    for question in questions:
        ranking = list(rankings.get(question.id, []))
        relevant = set(question.relevant_doc_ids)
        first = next((rank for rank, d in enumerate(ranking, 1) if d in relevant), None)
        record: dict[str, Any] = {
            "configuration": name,
            "question_id": question.id,
            **{key: round(value, 6) for key, value in evaluation.per_query[question.id].items()},
            "first_relevant_rank": first,
            "relevant_doc_ids": list(question.relevant_doc_ids),
            "top_10": ranking[:10],
        }
        if latencies is not None and question.id in latencies:
            record["latency_ms"] = round(latencies[question.id], 2)
        records.append(record)
    return records
