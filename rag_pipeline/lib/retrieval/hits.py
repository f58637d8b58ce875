"""What retrieval returns, and the errors it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class NoServingIndexError(RuntimeError):
    """Nothing has been promoted yet, or the serving version was built with another model."""


class UnknownIndexVersionError(LookupError):
    """An explicitly requested index version does not exist (or was garbage-collected)."""


class QueryTooLongError(ValueError):
    """A query longer than the configured cap (`RAG_MAX_QUERY_CHARS`)."""


@dataclass(frozen=True)
class SearchHit:
    """One chunk the reader may read, with where it comes from.

    `score` is the score of the last stage that ordered the list (vector: cosine similarity;
    lexical: BM25; hybrid: the fused score; reranked: the reranker's). `scores` and `ranks` hold
    every stage's score and 1-based rank for this chunk (a leg that did not find it is absent).
    """

    chunk_id: str
    doc_id: str
    title: str | None
    uri: str
    heading_path: tuple[str, ...]
    text: str
    score: float
    element_start: int
    element_end: int
    char_start: int
    char_end: int
    page_numbers: tuple[int, ...]
    version_id: int
    scores: Mapping[str, float] = field(default_factory=dict, compare=False)
    ranks: Mapping[str, int] = field(default_factory=dict, compare=False)
    # Flagged as a prompt injection at ingest (tagged by the source's policy): search shows it,
    # answers leave it out unless asked (`rag_pipeline.lib.retrieval.answer`).
    injection: bool = False
