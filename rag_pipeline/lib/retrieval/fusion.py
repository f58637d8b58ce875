"""Fusion of the legs' rankings into one: reciprocal rank fusion, or normalised scores.

Pure functions over (chunk id, score) lists, best first. A chunk found by one leg only gets
nothing from the other (rank infinity in RRF, the floor of the normalised range otherwise).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

# Method names accepted in settings and options.
RRF = "rrf"
MINMAX = "minmax"
ZSCORE = "zscore"
FUSION_METHODS = (RRF, MINMAX, ZSCORE)

Ranking = Sequence[tuple[str, float]]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Ranking], k: float, weights: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """sum over legs of weight / (k + rank), rank 1-based (Cormack et al., 2009).

    Ties are broken by the best rank in any leg, then by chunk id, so the result is stable.
    """
    if k <= 0:
        raise ValueError(f"RRF k must be greater than zero (got {k})")
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    for leg, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(leg, 0.0)
        for rank, (chunk_id, _) in enumerate(ranking, 1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
            best_rank[chunk_id] = min(best_rank.get(chunk_id, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


def normalise(ranking: Ranking, method: str) -> dict[str, float]:
    """One leg's scores on a common scale: min-max to [0, 1], or z-scores."""
    if not ranking:
        return {}
    values = [score for _, score in ranking]
    if method == MINMAX:
        low, high = min(values), max(values)
        span = high - low
        # One candidate, or all equal: they are all as good as the leg can say.
        return {chunk_id: (score - low) / span if span else 1.0 for chunk_id, score in ranking}
    if method == ZSCORE:
        mean = statistics.fmean(values)
        spread = statistics.pstdev(values)
        return {chunk_id: (score - mean) / spread if spread else 0.0 for chunk_id, score in ranking}
    raise ValueError(f"unknown normalisation {method!r}; expected {MINMAX!r} or {ZSCORE!r}")


def score_fusion(
    rankings: Mapping[str, Ranking], method: str, weights: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """Weighted sum of each leg's normalised scores.

    A chunk missing from a leg gets that leg's lowest normalised score among its candidates (0
    for min-max): the leg ranked it below everything it returned, and nothing more is known.
    """
    normalised = {leg: normalise(ranking, method) for leg, ranking in rankings.items()}
    floors = {leg: min(values.values(), default=0.0) for leg, values in normalised.items()}
    chunk_ids = sorted({chunk_id for values in normalised.values() for chunk_id in values})
    fused = []
    for chunk_id in chunk_ids:
        total = 0.0
        for leg, values in normalised.items():
            weight = 1.0 if weights is None else weights.get(leg, 0.0)
            total += weight * values.get(chunk_id, floors[leg])
        fused.append((chunk_id, total))
    return sorted(fused, key=lambda item: (-item[1], item[0]))


def fuse(
    rankings: Mapping[str, Ranking],
    method: str,
    *,
    rrf_k: float,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    if method == RRF:
        return reciprocal_rank_fusion(rankings, rrf_k, weights)
    if method in (MINMAX, ZSCORE):
        return score_fusion(rankings, method, weights)
    raise ValueError(f"unknown fusion method {method!r}; expected one of {FUSION_METHODS}")
