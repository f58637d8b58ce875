"""The KPI table a RAG team is judged by: one row per metric, one column per version and set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rag_pipeline.lib.evaluation.quality import METRICS

# Metric -> (label, how to print it).
KPI_LABELS: dict[str, str] = {
    "retrieval_success_rate": "retrieval success rate (a relevant document in the first 5)",
    "ndcg_at_10": "nDCG@10",
    "recall_at_100": "recall@100",
    "mrr_at_10": "MRR@10",
    "context_precision": "context precision (ragas, non-LLM)",
    "context_recall": "context recall (ragas, non-LLM)",
    "citation_coverage": "citation coverage of answer sentences",
    "refusal_accuracy": "no-answer appropriateness: correct refusals",
    "answer_rate": "answerable questions answered",
    "answer_faithfulness": "answer faithfulness (LLM judge)",
    "answer_relevancy": "answer relevancy (LLM judge)",
    "permission_incidents": "permission-safety incidents (negative questions)",
    "judge_failures": "LLM judge replies that could not be used",
    "retrieval_p95_ms": "p95 retrieval latency, ms",
    "answer_p95_ms": "p95 end-to-end answer latency, ms",
}
_COUNTS = {"permission_incidents", "judge_failures"}
_MILLISECONDS = {"retrieval_p95_ms", "answer_p95_ms"}


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "not measured" if metric.startswith("answer_") and "ms" not in metric else "-"
    if metric in _COUNTS:
        return f"{value:.0f}"
    if metric in _MILLISECONDS:
        return f"{value:.0f}"
    return f"{value:.3f}"


def kpi_table(columns: Sequence[tuple[str, Mapping[str, float | None]]]) -> list[str]:
    """Markdown lines: a row per KPI, a column per (label, metrics)."""
    header = "| KPI | " + " | ".join(label for label, _ in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for metric in METRICS:
        cells = " | ".join(format_value(metric, values.get(metric)) for _, values in columns)
        lines.append(f"| {KPI_LABELS.get(metric, metric)} | {cells} |")
    return lines


def history_columns(
    history: Sequence[Mapping[str, Any]], configuration: str = "default"
) -> list[tuple[str, dict[str, float | None]]]:
    """`results_store.metric_history` rows -> one column per (version, set), oldest first."""
    columns: dict[tuple[int, str], dict[str, float | None]] = {}
    for row in history:
        if row["configuration"] != configuration:
            continue
        columns.setdefault((row["version_id"], row["golden_set"]), {})[row["metric"]] = row["value"]
    return [
        (f"v{version} {golden_set}", values)
        for (version, golden_set), values in sorted(columns.items())
    ]
