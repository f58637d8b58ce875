"""Reranking stage: reorder the fused candidates with a costlier model, then cap per document.

No reranker ships in any package this project installs, so the default is `none`; a
sentence-transformers cross-encoder is used when `RAG_RERANKER` names a local model directory
(nothing is downloaded). Whatever reorders the list, `cap_per_document` then keeps at most N
chunks of one document, so near-duplicate chunks of one document do not fill the list.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Protocol

from rag_pipeline.lib.retrieval.hits import SearchHit

NO_RERANKER = "none"
CROSS_ENCODER_BATCH_SIZE = 16


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        """`hits` reordered best first, each with `score` (and `scores["rerank"]`) set."""
        ...


class NoReranker:
    """Keeps the fused order."""

    name = NO_RERANKER

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        return list(hits)


class CrossEncoderReranker:
    """A sentence-transformers `CrossEncoder` loaded from a local directory, scored on CPU.

    Each (query, chunk search text) pair is scored jointly; the chunk's title and heading path
    are part of what it reads, as for the embedder.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = CROSS_ENCODER_BATCH_SIZE) -> None:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"reranker {str(model_dir)!r} is neither 'none' nor a local cross-encoder "
                "directory; nothing is downloaded"
            )
        from sentence_transformers import CrossEncoder

        self.name = f"cross-encoder:{path}"
        self.batch_size = batch_size
        self._model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
        if not hits:
            return []
        pairs = [(query, _reranker_text(hit)) for hit in hits]
        with self._lock:
            scores = self._model.predict(
                pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        scored = [
            replace(hit, score=float(score), scores={**hit.scores, "rerank": float(score)})
            for hit, score in zip(hits, scores.reshape(len(hits), -1)[:, 0], strict=True)
        ]
        # Stable: equal scores keep the fused order.
        return sorted(scored, key=lambda hit: -hit.score)


def _reranker_text(hit: SearchHit) -> str:
    prefix = " > ".join(part for part in (hit.title or "", *hit.heading_path) if part)
    return f"{prefix}\n\n{hit.text}" if prefix else hit.text


@cache
def load_reranker(spec: str) -> Reranker:
    """`none`, or a local cross-encoder directory; loaded once per process."""
    if spec.strip().lower() in ("", NO_RERANKER, "off"):
        return NoReranker()
    return CrossEncoderReranker(spec)


def cap_per_document(hits: Sequence[SearchHit], per_document: int | None) -> list[SearchHit]:
    """At most `per_document` hits of each document, keeping the order (None: no cap)."""
    if per_document is None:
        return list(hits)
    if per_document < 1:
        raise ValueError(f"per-document cap must be at least 1 (got {per_document})")
    kept: list[SearchHit] = []
    seen: dict[str, int] = {}
    for hit in hits:
        count = seen.get(hit.doc_id, 0)
        if count < per_document:
            kept.append(hit)
            seen[hit.doc_id] = count + 1
    return kept
