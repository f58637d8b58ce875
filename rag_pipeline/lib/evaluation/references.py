"""Reference runs computed outside the pipeline, over the same documents and queries.

They tell whether a pipeline figure is good for this data, on this machine, in this run:

- **BM25**: `bm25s` (Lucene's BM25 variant, k1 1.5, b 0.75) over title + text, lower-cased,
  English stopwords removed, English Snowball stemming (PyStemmer). The lexical leg of the
  pipeline should reach it.
- **Dense**: the pipeline's embedding model on each whole document (title + text, cut by the
  model at its sequence length, never chunked), ranked by exact cosine similarity with numpy.
  What the pipeline's vector search would score without chunking and without HNSW.

Each returns a run: query id -> [(document id, score), ...], best first.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_pipeline.lib.embedding import Embedder

BM25_K1 = 1.5
BM25_B = 0.75
BM25_METHOD = "lucene"
BM25_STEMMER = "english"  # Snowball English (Porter2), through PyStemmer
BM25_STOPWORDS = "en"
EMBED_BATCH = 256

Progress = Callable[[str], None]
RunRows = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class ReferenceRun:
    name: str
    run: RunRows
    index_seconds: float
    query_seconds: float
    description: str


def document_text(title: str, text: str) -> str:
    return f"{title} {text}".strip() if title else text


def bm25_reference(
    documents: Mapping[str, str], queries: Mapping[str, str], k: int
) -> ReferenceRun:
    """Top `k` documents per query by BM25; documents scoring 0 (no query term) are left out
    rather than listed in an arbitrary order."""
    import bm25s
    import Stemmer

    doc_ids = list(documents)
    stemmer = Stemmer.Stemmer(BM25_STEMMER)
    started = time.perf_counter()
    corpus_tokens = bm25s.tokenize(
        [documents[doc_id] for doc_id in doc_ids],
        stopwords=BM25_STOPWORDS,
        stemmer=stemmer,
        show_progress=False,
    )
    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method=BM25_METHOD)
    retriever.index(corpus_tokens, show_progress=False)
    index_seconds = time.perf_counter() - started

    started = time.perf_counter()
    query_ids = list(queries)
    # Strings, not ids: query ids from a second `tokenize` call would not match the corpus
    # vocabulary; bm25s looks strings up in its own vocabulary and drops unknown ones.
    query_tokens = bm25s.tokenize(
        [queries[qid] for qid in query_ids],
        stopwords=BM25_STOPWORDS,
        stemmer=stemmer,
        return_ids=False,
        show_progress=False,
    )
    depth = min(k, len(doc_ids))
    run: RunRows = {}
    for qid, tokens in zip(query_ids, query_tokens, strict=True):
        known = [token for token in tokens if token in retriever.vocab_dict]
        if not known:
            run[qid] = []
            continue
        indices, scores = retriever.retrieve([known], k=depth, show_progress=False)
        run[qid] = [
            (doc_ids[int(index)], float(score))
            for index, score in zip(indices[0], scores[0], strict=True)
            if score > 0
        ]
    return ReferenceRun(
        name="reference_bm25",
        run=run,
        index_seconds=index_seconds,
        query_seconds=time.perf_counter() - started,
        description=(
            f"bm25s {bm25s.__version__} ({BM25_METHOD}, k1={BM25_K1}, b={BM25_B}), title + text, "
            f"English stopwords, Snowball English stemmer (PyStemmer)"
        ),
    )


def _vectors_cache_key(model_key: str, doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    digest = hashlib.sha256(model_key.encode())
    for doc_id, text in zip(doc_ids, texts, strict=True):
        digest.update(b"\0" + doc_id.encode() + b"\0" + text.encode())
    return digest.hexdigest()[:24]


def embed_documents(
    embedder: Embedder,
    doc_ids: Sequence[str],
    texts: Sequence[str],
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, bool]:
    """Unit vectors for `texts` (and whether they came from the cache).

    Embedding a whole corpus takes minutes; the vectors are cached under `cache_dir`, keyed by
    the model and every (id, text), so a repeated evaluation of the same documents reuses them.
    """
    cache_file = None
    if cache_dir is not None:
        key = _vectors_cache_key(embedder.model_key, doc_ids, texts)
        cache_file = cache_dir / f"reference_dense_{key}.npy"
        if cache_file.is_file():
            return np.load(cache_file), True
    say = progress or (lambda message: None)
    parts: list[np.ndarray] = []
    started = time.perf_counter()
    for start in range(0, len(texts), EMBED_BATCH):
        parts.append(embedder.embed(list(texts[start : start + EMBED_BATCH])))
        done = min(start + EMBED_BATCH, len(texts))
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (len(texts) - done) / rate if rate > 0 else 0.0
        say(f"  dense reference: embedded {done:,}/{len(texts):,} ({rate:.1f}/s, ETA {eta:.0f} s)")
    vectors = np.vstack(parts) if parts else np.zeros((0, embedder.dimension), dtype=np.float32)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, vectors)
    return vectors, False


def dense_reference(
    documents: Mapping[str, str],
    queries: Mapping[str, str],
    embedder: Embedder,
    k: int,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> ReferenceRun:
    """Top `k` documents per query by exact cosine similarity of whole-document embeddings."""
    doc_ids = list(documents)
    started = time.perf_counter()
    doc_vectors, cached = embed_documents(
        embedder, doc_ids, [documents[d] for d in doc_ids], cache_dir, progress
    )
    index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    query_ids = list(queries)
    query_vectors = embedder.embed([queries[qid] for qid in query_ids])
    # Both sides are unit vectors, so the dot product is the cosine similarity.
    scores = query_vectors @ doc_vectors.T
    depth = min(k, len(doc_ids))
    run: RunRows = {}
    for row, qid in enumerate(query_ids):
        top = np.argpartition(-scores[row], depth - 1)[:depth]
        top = top[np.argsort(-scores[row, top], kind="stable")]
        run[qid] = [(doc_ids[int(i)], float(scores[row, i])) for i in top]
    return ReferenceRun(
        name="reference_dense",
        run=run,
        index_seconds=index_seconds,
        query_seconds=time.perf_counter() - started,
        description=(
            f"{embedder.model_key} on whole documents (title + text, truncated by the model), "
            "exact cosine with numpy" + (" (document vectors from the cache)" if cached else "")
        ),
    )
