"""One typed view of the environment, read by the Dagster resources, the CLI and the runner alike.

Every documented `RAG_*` variable is read here and nowhere else, so a variable means the same
thing whichever entry point a user goes through. Invalid values fail with the variable's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from pathlib import Path

from rag_pipeline.lib.catalog import (
    DEFAULT_DIRECTORY_FILE,
    DEFAULT_SOURCES_FILE,
    ConfigurationError,
)
from rag_pipeline.lib.connectors import DEFAULT_MAX_DOCUMENT_BYTES
from rag_pipeline.lib.embedding import BACKENDS, DEFAULT_BACKEND, DEFAULT_MODEL_NAME
from rag_pipeline.lib.retrieval import (
    FUSION_METHODS,
    MODES,
    BM25Params,
    RetrievalOptions,
)
from rag_pipeline.lib.retrieval.answer import (
    DEFAULT_MIN_COVERAGE,
    DEFAULT_MIN_SIMILARITY,
    DEFAULT_SIMILARITY_FLOOR,
)
from rag_pipeline.lib.retrieval.lexical import DEFAULT_B, DEFAULT_K1
from rag_pipeline.lib.retrieval.pipeline import (
    DEFAULT_CANDIDATES,
    DEFAULT_FEEDBACK_WEIGHT,
    DEFAULT_FUSION,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_MODE,
    DEFAULT_RRF_K,
)
from rag_pipeline.lib.retrieval.rerank import NO_RERANKER

DEFAULT_DATA_DIR = Path(".rag_data")


@dataclass(frozen=True)
class Settings:
    """The pipeline's configuration; each field documents its variable in `ENVIRONMENT`."""

    database_url: str = ""
    data_dir: Path = DEFAULT_DATA_DIR
    dagster_pg_url: str = ""
    sources_file: Path = DEFAULT_SOURCES_FILE
    directory_file: Path = DEFAULT_DIRECTORY_FILE
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    embedding_model: str = DEFAULT_MODEL_NAME
    embedding_batch_size: int = 32
    # torch (the packaged safetensors), openvino, openvino-int8 or onnx (a local export of the
    # same weights, cached in `embedding_cache_dir`, default `<data_dir>/models`). Part of the
    # embedding key.
    embedding_backend: str = DEFAULT_BACKEND
    embedding_cache_dir: str = ""
    keep_index_versions: int = 5
    parse_timeout_seconds: float = 60.0
    max_query_chars: int = 2000
    retrieval_mode: str = DEFAULT_MODE
    retrieval_candidates: int = DEFAULT_CANDIDATES
    fusion: str = DEFAULT_FUSION
    rrf_k: float = DEFAULT_RRF_K
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    bm25_k1: float = DEFAULT_K1
    bm25_b: float = DEFAULT_B
    reranker: str = NO_RERANKER
    max_chunks_per_document: int = 0
    feedback_chunks: int = 0
    feedback_weight: float = DEFAULT_FEEDBACK_WEIGHT
    # Evaluation reports and the quality gate: golden sets (comma-separated files; empty: the
    # bundled sample set when the bundled sample corpus is the source), tolerance and floors.
    golden_sets: str = ""
    quality_tolerance: float = 0.02
    quality_min_ndcg: float = 0.0
    quality_min_refusal_accuracy: float = 0.0
    # The HTTP API (`rag-pipeline serve`).
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_body_bytes: int = 65536
    api_rate_limit: str = "60/minute"
    api_pool_size: int = 4
    # Answers (rag_pipeline.lib.retrieval.answer): an OpenAI-compatible endpoint (none: the
    # offline extractive generator) and the evidence thresholds of the refusal rule.
    llm_url: str = ""
    llm_model: str = ""
    # Not in repr(): settings get printed in errors and logs.
    llm_api_key: str = dataclass_field(default="", repr=False)
    answer_min_similarity: float = DEFAULT_MIN_SIMILARITY
    answer_min_coverage: float = DEFAULT_MIN_COVERAGE
    answer_similarity_floor: float = DEFAULT_SIMILARITY_FLOOR
    # Progress bars on stderr for long commands (`run`, `import-beir`, `make bench`), drawn
    # only to a terminal; an off value or `--quiet` turns them off.
    progress: str = "1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            variable = ENVIRONMENT[field.name]
            raw = (env.get(variable) or "").strip()
            if not raw:
                continue
            values[field.name] = _convert(variable, raw, field.default)
            _validate(field.name, variable, raw, values[field.name])
        return cls(**values)  # type: ignore[arg-type]

    def golden_set_files(self) -> list[Path]:
        """The golden sets the evaluation report asks; see `golden_sets`."""
        if self.golden_sets.strip():
            return [
                Path(part.strip()).expanduser()
                for part in self.golden_sets.split(",")
                if part.strip()
            ]
        bundled = Path(__file__).resolve().parents[1] / "eval_sets" / "sample_corpus.jsonl"
        if self.sources_file.resolve() == DEFAULT_SOURCES_FILE.resolve() and bundled.is_file():
            return [bundled]
        return []

    @property
    def progress_on(self) -> bool:
        return self.progress.lower() not in PROGRESS_OFF

    def embedding_export_dir(self) -> Path:
        """Where exported (non-torch) embedding models are cached."""
        if self.embedding_cache_dir.strip():
            return Path(self.embedding_cache_dir.strip()).expanduser().resolve()
        return Path(self.data_dir).expanduser().resolve() / "models"

    def retrieval_options(self) -> RetrievalOptions:
        """The configured retrieval defaults; a request may override any of them."""
        return RetrievalOptions(
            mode=self.retrieval_mode,
            candidates=self.retrieval_candidates,
            fusion=self.fusion,
            rrf_k=self.rrf_k,
            lexical_weight=self.lexical_weight,
            bm25=BM25Params(k1=self.bm25_k1, b=self.bm25_b),
            reranker=self.reranker,
            max_chunks_per_document=self.max_chunks_per_document or None,
            max_query_chars=self.max_query_chars,
            feedback_chunks=self.feedback_chunks,
            feedback_weight=self.feedback_weight,
        )


# Field -> environment variable (the README's configuration reference lists the same names).
ENVIRONMENT = {
    "database_url": "RAG_DATABASE_URL",
    "data_dir": "RAG_DATA_DIR",
    "dagster_pg_url": "RAG_DAGSTER_PG_URL",
    "sources_file": "RAG_SOURCES_FILE",
    "directory_file": "RAG_DIRECTORY_FILE",
    "max_document_bytes": "RAG_MAX_DOCUMENT_BYTES",
    "embedding_model": "RAG_EMBEDDING_MODEL",
    "embedding_batch_size": "RAG_EMBEDDING_BATCH_SIZE",
    "embedding_backend": "RAG_EMBEDDING_BACKEND",
    "embedding_cache_dir": "RAG_EMBEDDING_CACHE_DIR",
    "keep_index_versions": "RAG_KEEP_INDEX_VERSIONS",
    "parse_timeout_seconds": "RAG_PARSE_TIMEOUT_SECONDS",
    "max_query_chars": "RAG_MAX_QUERY_CHARS",
    "retrieval_mode": "RAG_RETRIEVAL_MODE",
    "retrieval_candidates": "RAG_RETRIEVAL_CANDIDATES",
    "fusion": "RAG_FUSION",
    "rrf_k": "RAG_RRF_K",
    "lexical_weight": "RAG_LEXICAL_WEIGHT",
    "bm25_k1": "RAG_BM25_K1",
    "bm25_b": "RAG_BM25_B",
    "reranker": "RAG_RERANKER",
    "max_chunks_per_document": "RAG_MAX_CHUNKS_PER_DOCUMENT",
    "feedback_chunks": "RAG_FEEDBACK_CHUNKS",
    "feedback_weight": "RAG_FEEDBACK_WEIGHT",
    "golden_sets": "RAG_GOLDEN_SETS",
    "quality_tolerance": "RAG_QUALITY_TOLERANCE",
    "quality_min_ndcg": "RAG_QUALITY_MIN_NDCG",
    "quality_min_refusal_accuracy": "RAG_QUALITY_MIN_REFUSAL_ACCURACY",
    "api_host": "RAG_API_HOST",
    "api_port": "RAG_API_PORT",
    "api_max_body_bytes": "RAG_API_MAX_BODY_BYTES",
    "api_rate_limit": "RAG_API_RATE_LIMIT",
    "api_pool_size": "RAG_API_POOL_SIZE",
    "llm_url": "RAG_LLM_URL",
    "llm_model": "RAG_LLM_MODEL",
    "llm_api_key": "RAG_LLM_API_KEY",
    "answer_min_similarity": "RAG_ANSWER_MIN_SIMILARITY",
    "answer_min_coverage": "RAG_ANSWER_MIN_COVERAGE",
    "answer_similarity_floor": "RAG_ANSWER_SIMILARITY_FLOOR",
    "progress": "RAG_PROGRESS",
}
PROGRESS_OFF = ("0", "off", "false", "no")

# Numbers that may be zero, with their upper bound (None: unbounded). Every other number must be
# greater than zero.
_ZERO_ALLOWED: dict[str, float | None] = {
    "lexical_weight": 1.0,
    "bm25_b": 1.0,
    "max_chunks_per_document": None,
    "feedback_chunks": None,
    "feedback_weight": 1.0,
    "quality_tolerance": 1.0,
    "quality_min_ndcg": 1.0,
    "quality_min_refusal_accuracy": 1.0,
    "answer_min_similarity": 1.0,
    "answer_min_coverage": 1.0,
    "answer_similarity_floor": 1.0,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "retrieval_mode": MODES,
    "fusion": FUSION_METHODS,
    "embedding_backend": BACKENDS,
}


def _convert(variable: str, raw: str, default: object) -> object:
    if isinstance(default, Path):
        return Path(raw).expanduser()
    if isinstance(default, bool):
        raise TypeError("no boolean settings")
    if isinstance(default, int | float):
        kind = type(default)
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigurationError(f"{variable}={raw!r} is not a valid {kind.__name__}") from None
        if variable in _ZERO_ALLOWED_VARIABLES:
            if value < 0:
                raise ConfigurationError(f"{variable}={raw!r} must be zero or more")
        elif value <= 0:
            raise ConfigurationError(f"{variable}={raw!r} must be greater than zero")
        return value
    return raw


def _validate(name: str, variable: str, raw: str, value: object) -> None:
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigurationError(f"{variable}={raw!r} is not one of {', '.join(_CHOICES[name])}")
    if name == "api_rate_limit":
        _check_rate_limit(variable, raw)
    upper = _ZERO_ALLOWED.get(name)
    if upper is not None and isinstance(value, int | float) and value > upper:
        raise ConfigurationError(f"{variable}={raw!r} must be between 0 and {upper:g}")


_ZERO_ALLOWED_VARIABLES = {ENVIRONMENT[name] for name in _ZERO_ALLOWED}


def _check_rate_limit(variable: str, raw: str) -> None:
    """A `limits` rate string ("60/minute", "10 per second"), checked here so that a typo fails
    at startup with the variable named, not on the first request."""
    from limits import parse

    try:
        parse(raw)
    except ValueError:
        raise ConfigurationError(
            f"{variable}={raw!r} is not a rate limit like '60/minute' or '10/second'"
        ) from None


def current_settings() -> Settings:
    """The settings of this process's environment, read now (never cached: the CLI sets
    `RAG_DATA_DIR` from `--data-dir` before anything reads it)."""
    return Settings.from_env()
