"""Fusion of rankings and the per-document cap, on hand-checkable cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rag_pipeline.lib.retrieval import SearchHit
from rag_pipeline.lib.retrieval.fusion import (
    MINMAX,
    RRF,
    ZSCORE,
    fuse,
    normalise,
    reciprocal_rank_fusion,
    score_fusion,
)
from rag_pipeline.lib.retrieval.rerank import NoReranker, cap_per_document, load_reranker

VECTOR = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
LEXICAL = [("c", 12.0), ("a", 3.0), ("d", 1.0)]


def test_rrf_by_hand() -> None:
    fused = dict(reciprocal_rank_fusion({"vector": VECTOR, "lexical": LEXICAL}, k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)
    order = [chunk for chunk, _ in reciprocal_rank_fusion({"v": VECTOR, "l": LEXICAL}, k=60)]
    assert order == ["a", "c", "b", "d"]


def test_rrf_weights_and_k() -> None:
    weights = {"vector": 0.2, "lexical": 0.8}
    fused = dict(reciprocal_rank_fusion({"vector": VECTOR, "lexical": LEXICAL}, 10, weights))
    assert fused["c"] == pytest.approx(0.2 / 13 + 0.8 / 11)
    assert max(fused, key=fused.__getitem__) == "c"
    with pytest.raises(ValueError):
        reciprocal_rank_fusion({"vector": VECTOR}, k=0)


def test_rrf_ties_are_broken_by_best_rank_then_id() -> None:
    # x is first in one leg, y first in the other: equal RRF scores, then the id decides.
    fused = reciprocal_rank_fusion({"v": [("y", 1.0)], "l": [("x", 1.0)]}, k=60)
    assert [chunk for chunk, _ in fused] == ["x", "y"]


def test_minmax_by_hand() -> None:
    assert normalise(VECTOR, MINMAX) == pytest.approx({"a": 1.0, "b": 0.875, "c": 0.0})
    fused = dict(score_fusion({"vector": VECTOR, "lexical": LEXICAL}, MINMAX))
    # lexical: c 1.0, a 2/11, d 0.0; a chunk a leg did not return gets that leg's floor (0).
    assert fused["a"] == pytest.approx(1.0 + 2 / 11)
    assert fused["c"] == pytest.approx(0.0 + 1.0)
    assert fused["b"] == pytest.approx(0.875)
    assert fused["d"] == pytest.approx(0.0)
    assert normalise([("only", 3.0)], MINMAX) == {"only": 1.0}


def test_zscore_by_hand() -> None:
    z = normalise([("a", 1.0), ("b", 2.0), ("c", 3.0)], ZSCORE)
    spread = (2 / 3) ** 0.5
    assert z == pytest.approx({"a": -1 / spread, "b": 0.0, "c": 1 / spread})
    fused = dict(
        score_fusion({"l": [("a", 1.0), ("b", 2.0), ("c", 3.0)], "v": [("d", 5.0)]}, ZSCORE)
    )
    # d: single candidate of its leg (z 0), floor of the other leg (-1/spread).
    assert fused["d"] == pytest.approx(-1 / spread)


def test_fuse_dispatches_and_refuses_unknown_methods() -> None:
    rankings = {"vector": VECTOR, "lexical": LEXICAL}
    assert fuse(rankings, RRF, rrf_k=60) == reciprocal_rank_fusion(rankings, 60)
    assert fuse(rankings, MINMAX, rrf_k=60) == score_fusion(rankings, MINMAX)
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(rankings, "borda", rrf_k=60)


def hit(chunk_id: str, doc_id: str) -> SearchHit:
    return SearchHit(chunk_id, doc_id, None, "file:///x", (), "text", 1.0, 0, 1, 0, 4, (), 1)


def test_cap_per_document_keeps_order() -> None:
    hits = [hit("1", "a"), hit("2", "a"), hit("3", "b"), hit("4", "a"), hit("5", "b")]
    assert [h.chunk_id for h in cap_per_document(hits, 1)] == ["1", "3"]
    assert [h.chunk_id for h in cap_per_document(hits, 2)] == ["1", "2", "3", "5"]
    assert cap_per_document(hits, None) == hits
    with pytest.raises(ValueError):
        cap_per_document(hits, 0)


def test_no_reranker_keeps_the_order_and_unknown_paths_are_refused() -> None:
    hits = [hit("1", "a"), replace(hit("2", "b"), score=5.0)]
    assert NoReranker().rerank("q", hits) == hits
    assert isinstance(load_reranker("none"), NoReranker)
    with pytest.raises(ValueError, match="nothing is downloaded"):
        load_reranker("cross-encoder/ms-marco-MiniLM-L-6-v2")
