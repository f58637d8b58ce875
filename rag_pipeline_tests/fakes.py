"""Deterministic fakes at the pipeline's boundary, for fast tests that need no model.

`HashedBagOfWordsEmbedder` implements the `Embedder` protocol: every word is hashed to one of
384 dimensions with a sign, the counts are summed and the vector is scaled to unit length. Texts
that share words get similar vectors, which is all a retrieval test needs, and the same text
always gets the same vector, in any process. Its `model_key` is its own, so its vectors never mix
with the real model's in the embedding cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

FAKE_DIMENSION = 384
_WORD = re.compile(r"\w+")


class HashedBagOfWordsEmbedder:
    """Hashed bag of words, unit-normalised: deterministic, instant, no weights."""

    model_key = "fake-hashed-bow-384@v1"
    dimension = FAKE_DIMENSION
    max_tokens = 256

    def __init__(self) -> None:
        self.texts_embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.sha256(word.encode()).digest()
                slot = int.from_bytes(digest[:4], "big") % self.dimension
                vectors[row, slot] += 1.0 if digest[4] & 1 else -1.0
            norm = float(np.linalg.norm(vectors[row]))
            if norm == 0.0:
                # A text without words still needs a unit vector: the gates reject any other.
                vectors[row, 0] = 1.0
            else:
                vectors[row] /= norm
        self.texts_embedded += len(texts)
        return vectors


class WordCounter:
    """A `TokenCounter` that counts words: chunking without loading a tokenizer."""

    name = "fake-words-v1"

    def count(self, text: str) -> int:
        return len(_WORD.findall(text))
