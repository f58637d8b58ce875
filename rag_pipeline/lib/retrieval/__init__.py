"""Retrieval from any index version: dense, BM25 inside Postgres, fused, reranked.

`retrieve` is the entry point (one query, one version, one snapshot); `search` is the thin
wrapper existing callers use. One module per stage: `versions` (which version), `vector`,
`lexical`, `fusion`, `rerank`, `hydrate` (hits from chunk ids) and `pipeline` (the order).
"""

from rag_pipeline.lib.retrieval.fusion import FUSION_METHODS, MINMAX, RRF, ZSCORE
from rag_pipeline.lib.retrieval.hits import (
    NoServingIndexError,
    QueryTooLongError,
    SearchHit,
    UnknownIndexVersionError,
)
from rag_pipeline.lib.retrieval.lexical import BM25Params
from rag_pipeline.lib.retrieval.pipeline import (
    DEFAULT_MAX_QUERY_CHARS,
    HYBRID,
    LEXICAL,
    MODES,
    VECTOR,
    LexicalIndexMissingError,
    RetrievalOptions,
    RetrievalResult,
    retrieve,
    search,
)
from rag_pipeline.lib.retrieval.rerank import CrossEncoderReranker, NoReranker, Reranker
from rag_pipeline.lib.retrieval.vector import HNSW_EF_SEARCH, vector_search

__all__ = [
    "DEFAULT_MAX_QUERY_CHARS",
    "FUSION_METHODS",
    "HNSW_EF_SEARCH",
    "HYBRID",
    "LEXICAL",
    "MINMAX",
    "MODES",
    "RRF",
    "VECTOR",
    "ZSCORE",
    "BM25Params",
    "CrossEncoderReranker",
    "LexicalIndexMissingError",
    "NoReranker",
    "NoServingIndexError",
    "QueryTooLongError",
    "Reranker",
    "RetrievalOptions",
    "RetrievalResult",
    "SearchHit",
    "UnknownIndexVersionError",
    "retrieve",
    "search",
    "vector_search",
]
