"""IR metrics through ir-measures (pytrec_eval, i.e. trec_eval), never re-implemented here.

ir-measures is the library BEIR's own figures come from (BEIR evaluates with pytrec_eval), so a
figure here is comparable with the published ones. A run is ranked by score; `rank_scores` turns
an ordered list into strictly decreasing scores so that the order retrieval returned is exactly
the order measured (trec_eval breaks score ties by document id, which would reorder a list of
equal scores).

Metrics are per document. A pipeline returns chunks; `document_ranking` gives each document the
rank of its best chunk, which is how a reader meets a document in a result list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import ir_measures
from ir_measures import RR, R, nDCG

# Report name -> measure. nDCG uses the graded relevance as gain (trec_eval's `ndcg_cut`).
MEASURES = {
    "ndcg_at_10": nDCG @ 10,
    "recall_at_100": R @ 100,
    "mrr_at_10": RR @ 10,
}
# How many documents a run must hold per query for every measure above to be exact.
REQUIRED_DEPTH = 100

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[tuple[str, float]]]


@dataclass(frozen=True)
class Evaluation:
    """Mean of each measure over every judged query, and the per-query values."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries: int


def document_ranking(doc_ids_in_rank_order: Iterable[str]) -> list[str]:
    """Documents in the order of their best (first) chunk: duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for doc_id in doc_ids_in_rank_order:
        seen.setdefault(doc_id, None)
    return list(seen)


def rank_scores(ranked_doc_ids: Sequence[str]) -> list[tuple[str, float]]:
    """(doc id, score) pairs whose scores decrease strictly with the rank."""
    total = len(ranked_doc_ids)
    return [(doc_id, float(total - position)) for position, doc_id in enumerate(ranked_doc_ids)]


def evaluate(qrels: Qrels, run: Run, measures: Mapping[str, object] = MEASURES) -> Evaluation:
    """Score `run` against `qrels`.

    Every query in `qrels` counts: a query the run has no results for scores 0 on every measure
    (ir-measures fills it in), so a configuration cannot look better by answering less. Queries
    of the run that are not in `qrels` are ignored.
    """
    judged = {qid: dict(docs) for qid, docs in qrels.items() if docs}
    if not judged:
        raise ValueError("no judged queries to evaluate")
    qrel_rows = [
        ir_measures.Qrel(qid, doc_id, int(grade))
        for qid, docs in judged.items()
        for doc_id, grade in docs.items()
    ]
    run_rows = [
        ir_measures.ScoredDoc(qid, doc_id, float(score))
        for qid, scored in run.items()
        if qid in judged
        for doc_id, score in scored
    ]
    by_measure = {measure: name for name, measure in measures.items()}
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(measures, 0.0) for qid in judged}
    for metric in ir_measures.iter_calc(list(by_measure), qrel_rows, run_rows):
        per_query[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    aggregate = ir_measures.calc_aggregate(list(by_measure), qrel_rows, run_rows)
    return Evaluation(
        aggregate={by_measure[measure]: float(value) for measure, value in aggregate.items()},
        per_query=per_query,
        queries=len(judged),
    )
