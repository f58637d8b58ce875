"""Evaluation results as flat, dotted keys (`beir.scifact.hybrid.ndcg_at_10`) and a markdown table.

Flat keys make a figure addressable by one string in `reports/eval.json`, in Dagster metadata
and in a comparison between two runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag_pipeline.lib.evaluation.harness import ConfigurationResult, best_configuration
from rag_pipeline.lib.evaluation.metrics import MEASURES, Evaluation
from rag_pipeline.lib.evaluation.splits import SPLITS, split_of


@dataclass(frozen=True)
class ScoredRow:
    """One line of the results table: a pipeline configuration or a reference run."""

    name: str
    kind: str  # "pipeline" or "reference"
    description: str
    status: str
    reason: str | None
    evaluation: Evaluation | None
    latency_ms: dict[str, float]


def rows_for(results: Sequence[ConfigurationResult]) -> list[ScoredRow]:
    return [
        ScoredRow(
            result.name,
            "pipeline",
            result.description,
            result.status,
            result.reason,
            result.evaluation,
            result.latency_ms,
        )
        for result in results
    ]


def flat_keys(
    prefix: str, results: Sequence[ConfigurationResult], references: Sequence[ScoredRow]
) -> dict[str, Any]:
    """`<prefix>.<row>.<measure>` for every scored row, `<prefix>.<row>.status` for every row,
    and `<prefix>.best.*`: the pipeline configuration with the highest nDCG@10."""
    keys: dict[str, Any] = {}
    for row in [*rows_for(results), *references]:
        keys[f"{prefix}.{row.name}.status"] = row.status
        if row.reason:
            keys[f"{prefix}.{row.name}.reason"] = row.reason
        if row.evaluation is not None:
            for measure in MEASURES:
                keys[f"{prefix}.{row.name}.{measure}"] = round(row.evaluation.aggregate[measure], 4)
        for stat in ("p50", "p95"):
            if stat in row.latency_ms:
                keys[f"{prefix}.{row.name}.latency_{stat}_ms"] = round(row.latency_ms[stat], 1)
    for result in results:
        if result.status == "ok":
            # Queries with fewer than 100 distinct documents: recall@100 saw only those.
            keys[f"{prefix}.{result.name}.short_lists"] = result.short_lists
    best = best_configuration(results)
    if best is not None and best.evaluation is not None:
        keys[f"{prefix}.best.configuration"] = best.name
        for measure in MEASURES:
            keys[f"{prefix}.best.{measure}"] = round(best.evaluation.aggregate[measure], 4)
    return keys


def markdown_table(rows: Sequence[ScoredRow]) -> list[str]:
    lines = [
        "| run | nDCG@10 | recall@100 | MRR@10 | p50 ms | p95 ms | what it is |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.evaluation is None:
            lines.append(f"| {row.name} | - | - | - | - | - | **{row.status}**: {row.reason} |")
            continue
        scores = " | ".join(f"{row.evaluation.aggregate[m]:.3f}" for m in MEASURES)
        latency = " | ".join(
            f"{row.latency_ms[s]:.0f}" if s in row.latency_ms else "-" for s in ("p50", "p95")
        )
        label = f"{row.name} ({row.kind})" if row.kind == "reference" else row.name
        lines.append(f"| {label} | {scores} | {latency} | {row.description} |")
    return lines


def split_means(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """Split -> measure -> mean over that split's questions (`splits`: dev and held-out)."""
    means: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        scores = [s for qid, s in evaluation.per_query.items() if split_of(qid) == split]
        if scores:
            means[split] = {m: sum(q[m] for q in scores) / len(scores) for m in MEASURES}
    return means


def split_keys(prefix: str, rows: Sequence[ScoredRow]) -> dict[str, Any]:
    """`<prefix>.<row>.<split>.<measure>` for every scored row and split."""
    keys: dict[str, Any] = {}
    for row in rows:
        if row.evaluation is None:
            continue
        for split, means in split_means(row.evaluation).items():
            for measure, value in means.items():
                keys[f"{prefix}.{row.name}.{split}.{measure}"] = round(value, 4)
    return keys


def split_table(rows: Sequence[ScoredRow], measure: str = "ndcg_at_10") -> list[str]:
    lines = ["| run | dev half | held-out half | all |", "|---|---:|---:|---:|"]
    for row in rows:
        if row.evaluation is None:
            continue
        means = split_means(row.evaluation)
        cells = " | ".join(
            f"{means[split][measure]:.3f}" if split in means else "-" for split in SPLITS
        )
        lines.append(f"| {row.name} | {cells} | {row.evaluation.aggregate[measure]:.3f} |")
    return lines
