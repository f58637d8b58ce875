"""Context precision and recall against reference contexts, by ragas' non-LLM metrics (offline).

No LLM, no embedding model, no network: ragas 0.4.3 compares texts by string similarity
(`NonLLMStringSimilarity`: 1 - normalised Levenshtein distance, computed by rapidfuzz).

- `NonLLMContextPrecisionWithReference` marks each retrieved context relevant when its best
  similarity to any reference context is `>= threshold`, then takes the average precision of that
  0/1 list (sum over relevant ranks of precision@rank, divided by the number relevant). It is
  rank-aware: one relevant context among two scores 1.0 at rank 1 and 0.5 at rank 2.
- `NonLLMContextRecall` marks each reference context found when its best similarity to any
  retrieved context is `> threshold` (strictly: ragas' own asymmetry), and returns the share found.
  It ignores rank.

Similarity is normalised by the longer text, so a retrieved chunk that is an exact quarter of a
reference passage scores at most 0.25: reference contexts must be cut at the granularity of the
retrieved chunks for these figures to mean anything. ragas' average precision divides by
`relevant + 1e-10`, so a perfect list scores 0.9999999999, not exactly 1.0.

Edge cases, chosen here: no retrieved contexts scores 0 for both (ragas' recall would raise on an
empty `max`); no reference contexts raises `ValueError`, because the score is undefined and a
`None` or NaN would silently shrink a mean. Levenshtein costs O(n*m): contexts are cut to their
first `max_context_chars` characters (default 10,000) before comparison; pass None to compare
whole texts.

Measured on a 2-core machine (ragas 0.4.3, rapidfuzz): importing ragas takes 1.8 s idle and up to
5 s under load, so it is imported lazily, on the first score (importing this module costs nothing
of it). One question with 10 retrieved and 3 reference contexts (60 comparisons, both metrics)
takes about 10 ms at 1,000 characters a context (16 ms under load; 100 such questions in 1.1 s),
0.22 s at 10,000, 5 s at 50,000 and 86 s at 200,000 uncut -- hence the cap.

ragas' scoring API is async (`single_turn_ascore`). Its synchronous `single_turn_score` calls
`nest_asyncio.apply()` when a loop is running, which patches asyncio for the whole process; we
never call it. `context_scores` runs the coroutine with `asyncio.run` when the calling thread has
no running loop (Dagster runs ops and assets in such threads), and otherwise on a short-lived
worker thread of its own, blocking the caller's loop for the (CPU-bound) duration; async callers
should `await acontext_scores(...)` instead.

Telemetry: every ragas score queues a usage event that a background thread posts to
t.explodinggradients.com unless `RAGAS_DO_NOT_TRACK` is "true" (case-insensitive; "1" does not
count) when ragas first checks it (the answer is cached). `rag_pipeline.lib.offline` sets it;
loading ragas here refuses to go on if ragas does not see tracking as off. Building an event still
writes a user id to `~/.local/share/ragas/uuid.json` (a file, not the network).
"""

from __future__ import annotations

import asyncio
import statistics
import warnings
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, TypeVar

from rag_pipeline.lib.offline import apply_offline_environment

T = TypeVar("T")

Measure = Literal["levenshtein", "hamming", "jaro", "jaro_winkler"]

# ragas' own default: a retrieved context is relevant when half of it matches a reference.
DEFAULT_THRESHOLD = 0.5
DEFAULT_MEASURE: Measure = "levenshtein"
# 10 retrieved x 3 references at 10,000 characters score in about 0.2 s (see the docstring).
DEFAULT_MAX_CONTEXT_CHARS = 10_000


@dataclass(frozen=True)
class ContextScores:
    """One question's context precision (rank-aware) and recall, each in [0, 1]."""

    context_precision: float
    context_recall: float


@dataclass(frozen=True)
class ContextEvaluation:
    """Per-question scores and their means over every question with reference contexts."""

    per_question: dict[str, ContextScores]
    mean_context_precision: float
    mean_context_recall: float
    questions: int


@dataclass(frozen=True)
class _Metrics:
    precision: Any  # ragas NonLLMContextPrecisionWithReference
    recall: Any  # ragas NonLLMContextRecall
    sample_type: Any  # ragas SingleTurnSample


@cache
def _ragas_metrics(threshold: float, measure: Measure) -> _Metrics:
    """Import ragas (slow) once and build the two metrics for one threshold and measure."""
    apply_offline_environment()
    from ragas import SingleTurnSample
    from ragas._analytics import do_not_track

    with warnings.catch_warnings():
        # 0.4.3 warns to import these from ragas.metrics.collections, which does not have them.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import (
            DistanceMeasure,
            NonLLMContextPrecisionWithReference,
            NonLLMContextRecall,
            NonLLMStringSimilarity,
        )

    if not do_not_track():
        raise RuntimeError(
            "ragas telemetry is on: set RAGAS_DO_NOT_TRACK=true before ragas is first used "
            "(rag_pipeline.lib.offline does this unless the variable is already set otherwise)"
        )
    distance = DistanceMeasure(measure)
    precision = NonLLMContextPrecisionWithReference(
        distance_measure=NonLLMStringSimilarity(distance_measure=distance), threshold=threshold
    )
    recall = NonLLMContextRecall(threshold=threshold)
    recall.distance_measure = distance  # the setter wraps it in NonLLMStringSimilarity
    return _Metrics(precision=precision, recall=recall, sample_type=SingleTurnSample)


def _check_arguments(threshold: float, measure: str, max_context_chars: int | None) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    if measure not in ("levenshtein", "hamming", "jaro", "jaro_winkler"):
        raise ValueError(f"unknown string distance measure {measure!r}")
    if max_context_chars is not None and max_context_chars < 1:
        raise ValueError(f"max_context_chars must be positive or None, got {max_context_chars}")


def _cut(contexts: Sequence[str], max_context_chars: int | None) -> list[str]:
    if isinstance(contexts, str):
        raise TypeError("contexts must be a sequence of strings, not one string")
    return [text[:max_context_chars] if max_context_chars else text for text in contexts]


async def acontext_scores(
    retrieved_contexts: Sequence[str],
    reference_contexts: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    measure: Measure = DEFAULT_MEASURE,
    max_context_chars: int | None = DEFAULT_MAX_CONTEXT_CHARS,
) -> ContextScores:
    """`context_scores` for callers already inside an event loop."""
    _check_arguments(threshold, measure, max_context_chars)
    references = _cut(reference_contexts, max_context_chars)
    retrieved = _cut(retrieved_contexts, max_context_chars)
    if not references:
        raise ValueError("no reference contexts: context precision and recall are undefined")
    if not retrieved:
        return ContextScores(context_precision=0.0, context_recall=0.0)
    metrics = _ragas_metrics(float(threshold), measure)
    sample = metrics.sample_type(retrieved_contexts=retrieved, reference_contexts=references)
    precision = await metrics.precision.single_turn_ascore(sample)
    recall = await metrics.recall.single_turn_ascore(sample)
    return ContextScores(context_precision=float(precision), context_recall=float(recall))


def context_scores(
    retrieved_contexts: Sequence[str],
    reference_contexts: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    measure: Measure = DEFAULT_MEASURE,
    max_context_chars: int | None = DEFAULT_MAX_CONTEXT_CHARS,
) -> ContextScores:
    """Context precision and recall of `retrieved_contexts` (in rank order) against references.

    Computed by ragas' `NonLLMContextPrecisionWithReference` and `NonLLMContextRecall` with
    `NonLLMStringSimilarity(measure)` at `threshold`. No retrieved contexts scores 0 for both; no
    reference contexts raises ValueError. Safe to call with or without a running event loop.
    """
    return _run(
        acontext_scores(
            retrieved_contexts,
            reference_contexts,
            threshold=threshold,
            measure=measure,
            max_context_chars=max_context_chars,
        )
    )


async def aevaluate_contexts(
    retrieved: Mapping[str, Sequence[str]],
    references: Mapping[str, Sequence[str]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    measure: Measure = DEFAULT_MEASURE,
    max_context_chars: int | None = DEFAULT_MAX_CONTEXT_CHARS,
) -> ContextEvaluation:
    """`evaluate_contexts` for callers already inside an event loop."""
    _check_arguments(threshold, measure, max_context_chars)
    if not references:
        raise ValueError("no questions with reference contexts to evaluate")
    for question_id, contexts in references.items():
        if not contexts:
            raise ValueError(f"question {question_id!r} has no reference contexts")
    per_question: dict[str, ContextScores] = {}
    for question_id, contexts in references.items():
        per_question[question_id] = await acontext_scores(
            retrieved.get(question_id, ()),
            contexts,
            threshold=threshold,
            measure=measure,
            max_context_chars=max_context_chars,
        )
    scores = per_question.values()
    return ContextEvaluation(
        per_question=per_question,
        mean_context_precision=statistics.fmean(s.context_precision for s in scores),
        mean_context_recall=statistics.fmean(s.context_recall for s in scores),
        questions=len(per_question),
    )


def evaluate_contexts(
    retrieved: Mapping[str, Sequence[str]],
    references: Mapping[str, Sequence[str]],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    measure: Measure = DEFAULT_MEASURE,
    max_context_chars: int | None = DEFAULT_MAX_CONTEXT_CHARS,
) -> ContextEvaluation:
    """Score every question in `references` (question id -> reference contexts).

    `retrieved` maps question id -> retrieved contexts in rank order; a question missing from it
    retrieved nothing and scores 0. Questions only in `retrieved` are ignored. A question with no
    reference contexts raises ValueError naming it, before anything is scored.
    """
    return _run(
        aevaluate_contexts(
            retrieved,
            references,
            threshold=threshold,
            measure=measure,
            max_context_chars=max_context_chars,
        )
    )


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, whether or not a loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # A loop runs in this thread: asyncio.run would refuse, and nest_asyncio would patch asyncio
    # process-wide. Run on a fresh thread with its own loop instead.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="context-metrics") as pool:
        return pool.submit(asyncio.run, coroutine).result()
