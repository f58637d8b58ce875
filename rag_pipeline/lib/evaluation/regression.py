"""The `retrieval_quality_not_regressed` gate: may a candidate replace the serving version?

Compares the candidate's default configuration with the serving version's on every golden set:
no gated metric may fall by more than the tolerance, none below its absolute floor, and no
permission incident is ever tolerated. Also lists per-question wins and losses (nDCG@10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_pipeline.lib.evaluation.quality import SetEvaluation

# Higher is better for each; a drop beyond the tolerance fails the gate.
GATED_METRICS = (
    "ndcg_at_10",
    "recall_at_100",
    "mrr_at_10",
    "retrieval_success_rate",
    "context_recall",
    "refusal_accuracy",
)
# A question whose nDCG@10 moved by more than this counts as a win or a loss.
PER_QUESTION_DELTA = 0.01


@dataclass(frozen=True)
class QualityPolicy:
    """Tolerance against the serving version, and absolute floors (None: no floor)."""

    tolerance: float = 0.02
    floors: Mapping[str, float] = field(default_factory=dict)


@dataclass
class SetComparison:
    golden_set: str
    candidate: SetEvaluation
    serving: SetEvaluation | None
    failures: list[str]
    wins: list[str]
    losses: list[str]


@dataclass
class GateDecision:
    passed: bool
    comparisons: list[SetComparison]
    # Why the gate passes without measuring anything, e.g. no golden set configured.
    note: str | None = None

    @property
    def failures(self) -> list[str]:
        return [failure for c in self.comparisons for failure in c.failures]

    def detail(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "note": self.note,
            "sets": {
                c.golden_set: {
                    "candidate_version": c.candidate.version_id,
                    "serving_version": c.serving.version_id if c.serving else None,
                    "candidate": _rounded(c.candidate.metrics),
                    "serving": _rounded(c.serving.metrics) if c.serving else None,
                    "wins": c.wins,
                    "losses": c.losses,
                }
                for c in self.comparisons
            },
        }


def _rounded(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v, 4) if v is not None else None) for k, v in metrics.items()}


def wins_and_losses(
    candidate: SetEvaluation, serving: SetEvaluation, delta: float = PER_QUESTION_DELTA
) -> tuple[list[str], list[str]]:
    wins, losses = [], []
    for question_id, record in candidate.per_question.items():
        before = serving.per_question.get(question_id, {}).get("ndcg_at_10")
        after = record.get("ndcg_at_10")
        if before is None or after is None:
            continue
        if after > before + delta:
            wins.append(question_id)
        elif after < before - delta:
            losses.append(question_id)
    return sorted(wins), sorted(losses)


def compare_set(
    candidate: SetEvaluation, serving: SetEvaluation | None, policy: QualityPolicy
) -> SetComparison:
    failures = []
    name = candidate.golden_set
    incidents = candidate.metrics.get("permission_incidents") or 0
    if incidents:
        failures.append(f"{name}: {incidents:g} permission incident(s): forbidden documents served")
    for metric, floor in policy.floors.items():
        value = candidate.metrics.get(metric)
        if value is not None and value < floor:
            failures.append(f"{name}: {metric} {value:.4f} is below the floor {floor:g}")
    wins: list[str] = []
    losses: list[str] = []
    if serving is not None and serving.version_id != candidate.version_id:
        for metric in GATED_METRICS:
            now, before = candidate.metrics.get(metric), serving.metrics.get(metric)
            if now is None or before is None:
                continue
            if now < before - policy.tolerance:
                failures.append(
                    f"{name}: {metric} fell from {before:.4f} (version {serving.version_id}) "
                    f"to {now:.4f}, more than the tolerance {policy.tolerance:g}"
                )
        wins, losses = wins_and_losses(candidate, serving)
    return SetComparison(name, candidate, serving, failures, wins, losses)


def decide(
    candidates: Sequence[SetEvaluation],
    serving: Mapping[str, SetEvaluation],
    policy: QualityPolicy,
    note: str | None = None,
) -> GateDecision:
    """`candidates`: the candidate's default-configuration result per set; `serving`: the
    serving version's, by set name (absent when nothing serves yet, or for a new set)."""
    comparisons = [compare_set(c, serving.get(c.golden_set), policy) for c in candidates]
    passed = not any(c.failures for c in comparisons)
    return GateDecision(passed, comparisons, note)
