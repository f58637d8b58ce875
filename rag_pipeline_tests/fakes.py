"""Deterministic fakes at the pipeline's boundary, for fast tests that need no model.

`HashedBagOfWordsEmbedder` implements the `Embedder` protocol: every word is hashed to one of
384 dimensions with a sign, the counts are summed and the vector is scaled to unit length. Texts
that share words get similar vectors, which is all a retrieval test needs, and the same text
always gets the same vector, in any process. Its `model_key` is its own, so its vectors never mix
with the real model's in the embedding cache.

`HashedEmbedderResource` puts it behind the pipeline's own `EmbedderResource`, which is how tests
that run the asset graph get it (`conftest.make_resources`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache

import numpy as np

from rag_pipeline.defs.resources import EmbedderResource

FAKE_DIMENSION = 384
_WORD = re.compile(r"\w+")


class HashedBagOfWordsEmbedder:
    """Hashed bag of words, unit-normalised: deterministic, instant, no weights."""

    model_key = "fake-hashed-bow-384@v1"
    dimension = FAKE_DIMENSION
    max_tokens = 256

    def __init__(self, variant: str = "") -> None:
        """`variant` makes another fake model: other vectors under another model key."""
        self.texts_embedded = 0
        self._salt = variant.encode()
        if variant:
            self.model_key = f"{type(self).model_key}+{variant}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.sha256(self._salt + word.encode()).digest()
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


@cache
def hashed_embedder(variant: str = "") -> HashedBagOfWordsEmbedder:
    """One instance per variant and process, as `load_embedder` keeps one model."""
    return HashedBagOfWordsEmbedder(variant)


class HashedEmbedderResource(EmbedderResource):
    """The pipeline's `EmbedderResource` with the hashed fake in place of the model.

    Only the vectors change: chunking still counts tokens with the configured model's tokenizer
    (no weights loaded), so the chunks are the ones a real run cuts. Set `variant` for another
    fake model, as a test of a model change needs.
    """

    variant: str = ""

    def embedder(self) -> HashedBagOfWordsEmbedder:  # type: ignore[override]
        return hashed_embedder(self.variant)

    def model_key(self) -> str:
        return self.embedder().model_key


class WordCounter:
    """A `TokenCounter` that counts words: chunking without loading a tokenizer."""

    name = "fake-words-v1"

    def count(self, text: str) -> int:
        return len(_WORD.findall(text))
