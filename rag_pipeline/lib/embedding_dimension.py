"""Whether a model's vectors fit the database before any work is done for them.

`rag.embeddings.embedding` is `vector(384)` (sql/003), the size of the packaged
all-MiniLM-L6-v2. `RAG_EMBEDDING_MODEL` may name any local sentence-transformers directory, so a
model of another size would otherwise be found out by Postgres at the first insert, after the
whole corpus was parsed and chunked, as a bare `expected 384 dimensions, not 768`. Read from the
model's sentence-transformers configuration, the size is known without loading any weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rag_pipeline.lib.embedding import packaged_model_path

# Pooling modes of a sentence-transformers `Pooling` module: each enabled one contributes one
# word-embedding-sized block to the sentence vector.
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
# Hugging Face config keys that name a transformer's hidden size, by architecture family.
_HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


class EmbeddingDimensionError(ValueError):
    """The embedding model's vectors do not fit the database's embedding column."""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def configured_dimension(model_dir: Path) -> int | None:
    """The size of the sentence vectors that the sentence-transformers model in `model_dir`
    produces, from its `modules.json` and module configurations; None where they do not say
    (an unknown module type, a missing file), so that the caller checks after loading instead."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dimension: int | None = None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        config = _read_json(model_dir / str(module.get("path", "")) / "config.json") or {}
        if kind == "Transformer":
            found = [config[key] for key in _HIDDEN_SIZE_KEYS if isinstance(config.get(key), int)]
            dimension = found[0] if found else None
        elif kind == "Pooling":
            width = config.get("word_embedding_dimension")
            modes = sum(1 for mode in _POOLING_MODES if config.get(mode))
            dimension = width * modes if isinstance(width, int) and modes else None
        elif kind == "Dense":
            out_features = config.get("out_features")
            dimension = out_features if isinstance(out_features, int) else None
        elif kind != "Normalize":
            return None
        if dimension is None:
            return None
    return dimension


def require_configured_fit(model_name: str, stored: int) -> None:
    """`require_fitting_dimension` with the size the model's configuration declares: nothing is
    loaded, so it can run before any work for the model."""
    require_fitting_dimension(
        model_name, configured_dimension(packaged_model_path(model_name)), stored
    )


def require_fitting_dimension(model_name: str, model_dimension: int | None, stored: int) -> None:
    """Raise `EmbeddingDimensionError` unless the model's vectors have the stored size.

    `model_dimension` None (not known from the configuration) passes: the check is made again
    with the loaded model's own figure before anything is embedded.
    """
    if model_dimension is None or model_dimension == stored:
        return
    raise EmbeddingDimensionError(
        f"embedding model {model_name!r} gives {model_dimension}-dimensional vectors, but this "
        f"database stores {stored}-dimensional ones (rag.embeddings.embedding is "
        f"vector({stored}), sql/003). Nothing was embedded. Use a {stored}-dimensional model "
        "(RAG_EMBEDDING_MODEL), or keep the model of the existing index; another size needs a "
        "schema migration."
    )
