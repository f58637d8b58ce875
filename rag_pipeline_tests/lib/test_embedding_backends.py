"""Embedding backends: selection, the cached export, agreement with PyTorch, separate caches.

The OpenVINO tests export the packaged model once per module (about 10 s; the int8 one is
quantised too, about 20 s more on an idle machine) into a temporary cache, with `HOME`
pointed at a temporary directory so that the telemetry opt-out is observed there and not
written into the real home.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag_pipeline.cli import main
from rag_pipeline.defs.resources import (
    ChunkingResource,
    EmbedderResource,
    build_resources,
    index_keys,
)
from rag_pipeline.lib import database, embedding, embedding_int8
from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.embedding import (
    DEFAULT_MODEL_NAME,
    EXPORT_MANIFEST,
    OPENVINO,
    OPENVINO_INT8,
    TORCH,
    BackendUnavailableError,
    SentenceTransformerEmbedder,
    check_backend,
    export_is_complete,
    export_key,
    exported_model_dir,
    load_embedder,
    model_key_for,
)
from rag_pipeline.lib.stores.embeddings import save_embeddings
from rag_pipeline.settings import Settings

TEXTS = [
    "How do I fail over the Postgres primary when Patroni cannot elect a leader?",
    "Parental leave is sixteen weeks at full pay for every employee.",
    "0-dimensional biomaterials show inductive properties in bone regeneration studies, "
    "where scaffolds seeded with stem cells were implanted in rabbits for twelve weeks. " * 3,
    "VPN",
]

needs_openvino = pytest.mark.skipif(
    not embedding._module_available("optimum.intel.openvino"),
    reason="the openvino extra is not installed",
)
needs_nncf = pytest.mark.skipif(
    not embedding._module_available("nncf"), reason="the openvino extra is not installed"
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Path:
    cache = tmp_path_factory.mktemp("models")
    exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO, cache)
    return cache


def test_unknown_backend_is_refused_everywhere_with_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"RAG_EMBEDDING_BACKEND='tensorrt'.*openvino"):
        Settings.from_env({"RAG_EMBEDDING_BACKEND": "tensorrt"})
    with pytest.raises(ValueError, match=r"unknown embedding backend 'tensorrt'.*torch"):
        check_backend("tensorrt")
    with pytest.raises(ValueError, match="unknown embedding backend"):
        model_key_for(DEFAULT_MODEL_NAME, "tensorrt")
    with pytest.raises(ValueError, match="unknown embedding backend"):
        SentenceTransformerEmbedder(backend="tensorrt")


def test_cli_refuses_an_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--embedding-backend", "tensorrt", "index", "status"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_missing_backend_packages_name_the_extra_and_never_fall_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `sys.modules[name] = None` makes the module unimportable, as if it were not installed.
    monkeypatch.setitem(sys.modules, "optimum.intel.openvino", None)
    with pytest.raises(BackendUnavailableError, match=r"optimum\.intel\.openvino.*\[openvino\]"):
        check_backend(OPENVINO)
    with pytest.raises(BackendUnavailableError, match="No other backend is used"):
        SentenceTransformerEmbedder(backend=OPENVINO)
    # The resource fails the same way: no torch model under an openvino key.
    resource = EmbedderResource(backend=OPENVINO)
    with pytest.raises(BackendUnavailableError):
        resource.embedder()
    assert resource.model_key().endswith("/openvino")


def test_onnx_without_its_packages_names_them() -> None:
    if embedding._module_available("optimum.onnxruntime"):
        pytest.skip("optimum-onnx is installed here")
    with pytest.raises(BackendUnavailableError, match=r"'onnx' needs optimum\.onnxruntime"):
        load_embedder(DEFAULT_MODEL_NAME, 32, "onnx")


def test_setting_reaches_resources_and_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"RAG_EMBEDDING_BACKEND": "openvino", "RAG_DATA_DIR": str(tmp_path)}
    )
    embedder = build_resources(settings)["embedder"]
    assert isinstance(embedder, EmbedderResource)
    assert embedder.backend == OPENVINO
    assert embedder.cache_dir == str(tmp_path.resolve() / "models")
    custom = Settings.from_env({"RAG_EMBEDDING_CACHE_DIR": str(tmp_path / "exports")})
    assert custom.embedding_export_dir() == (tmp_path / "exports").resolve()
    assert Settings.from_env({}).embedding_backend == TORCH

    monkeypatch.setenv("RAG_EMBEDDING_BACKEND", "torch")
    # The flag overrides the environment for the whole command, before anything runs (this
    # command stops at its own usage check, so no database is touched).
    assert main(["--embedding-backend", "openvino", "index", "promote"]) == 2
    assert Settings.from_env().embedding_backend == OPENVINO


def test_two_backends_have_two_keys_and_never_share_cached_vectors(database_url: str) -> None:
    torch_resource = EmbedderResource(backend=TORCH)
    openvino_resource = EmbedderResource(backend=OPENVINO)
    torch_key, openvino_key = torch_resource.model_key(), openvino_resource.model_key()
    assert torch_key != openvino_key
    assert torch_key == model_key_for(DEFAULT_MODEL_NAME)  # existing torch caches stay valid
    chunking = ChunkingResource()
    torch_index = index_keys(torch_resource, chunking)
    openvino_index = index_keys(openvino_resource, chunking)
    assert torch_index.model_key != openvino_index.model_key
    assert torch_index.chunker_key == openvino_index.chunker_key  # the chunks are reused

    text_hash = "ab" * 32
    first, second = np.zeros((1, 384), np.float32), np.zeros((1, 384), np.float32)
    first[0, 0], second[0, 1] = 1.0, 1.0
    with database.connection(database_url) as conn:
        save_embeddings(conn, torch_key, [text_hash], first)
        save_embeddings(conn, openvino_key, [text_hash], second)
        rows = dict(
            conn.execute(
                "SELECT model_key, embedding FROM rag.embeddings WHERE text_hash = %s",
                (text_hash,),
            ).fetchall()
        )
    assert set(rows) == {torch_key, openvino_key}
    assert rows[torch_key].to_numpy()[0] == 1.0
    assert rows[openvino_key].to_numpy()[1] == 1.0


@needs_openvino
def test_export_is_cached_and_reused(
    export_cache: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO, export_cache)
    assert target.parent == export_cache
    assert export_key(DEFAULT_MODEL_NAME, OPENVINO) in target.name
    assert (target / "openvino" / "openvino_model.xml").is_file()
    assert export_is_complete(target, export_key(DEFAULT_MODEL_NAME, OPENVINO))
    # No staging directory is left behind.
    assert [path.name for path in export_cache.iterdir()] == [target.name]
    # OpenVINO's telemetry was opted out before its converter ran.
    assert (home / "intel" / "openvino_telemetry").read_text().strip() == "0"

    import sentence_transformers

    class NoExport:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", NoExport)
    assert exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO, export_cache) == target


@needs_openvino
@pytest.mark.parametrize("damage", ["truncated weights", "no manifest", "missing file"])
def test_corrupt_or_partial_export_is_rebuilt(
    export_cache: Path, tmp_path: Path, damage: str
) -> None:
    original = exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO, export_cache)
    cache = tmp_path / "models"
    target = cache / original.name
    shutil.copytree(original, target)
    weights = target / "openvino" / "openvino_model.bin"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "no manifest":
        (target / EXPORT_MANIFEST).unlink()
    else:
        (target / "tokenizer.json").unlink()
    key = export_key(DEFAULT_MODEL_NAME, OPENVINO)
    assert not export_is_complete(target, key)

    assert exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO, cache) == target
    assert export_is_complete(target, key)
    assert weights.stat().st_size == (original / "openvino" / "openvino_model.bin").stat().st_size


@needs_openvino
def test_openvino_agrees_with_torch(export_cache: Path) -> None:
    torch_embedder = load_embedder()
    openvino_embedder = SentenceTransformerEmbedder(backend=OPENVINO, cache_dir=export_cache)
    assert openvino_embedder.model_key == model_key_for(DEFAULT_MODEL_NAME, OPENVINO)
    assert openvino_embedder.backend == OPENVINO
    assert openvino_embedder.dimension == torch_embedder.dimension == 384
    assert openvino_embedder.max_tokens == torch_embedder.max_tokens
    expected = torch_embedder.embed(TEXTS)
    got = openvino_embedder.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(expected * got, axis=1)
    assert cosines.min() >= 0.9999, cosines
    # One text (a query) goes through the same path.
    assert float(expected[0] @ openvino_embedder.embed(TEXTS[:1])[0]) >= 0.9999


def test_int8_calibration_is_the_bundled_sample_corpus_and_keys_the_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    corpus = Path(embedding_int8.__file__).resolve().parents[1] / "sample_corpus"
    assert all((corpus / folder).is_dir() for folder in embedding_int8.CALIBRATION_FOLDERS)
    texts = embedding_int8.calibration_texts()
    assert 50 <= len(texts) <= embedding_int8.CALIBRATION_TEXTS
    assert all(0 < len(text.split()) <= embedding_int8.CALIBRATION_WORDS for text in texts)
    assert texts == embedding_int8.calibration_texts()  # the same on every call and machine
    # Thinned across the whole corpus, not only its first files.
    assert any("parental leave" in text.lower() for text in texts)
    assert any("TCK-" in text for text in texts)

    key = export_key(DEFAULT_MODEL_NAME, OPENVINO_INT8)
    assert key != export_key(DEFAULT_MODEL_NAME, OPENVINO)
    model_key = model_key_for(DEFAULT_MODEL_NAME, OPENVINO_INT8)
    assert f"/openvino-int8:{embedding_int8.quantisation_digest()}" in model_key
    # Other calibration texts or another recipe make other vectors: a new export and a new
    # embedding key, so no vector of the old quantisation is reused for the new one.
    monkeypatch.setattr(embedding_int8, "calibration_texts", lambda: [*texts, "one more text"])
    assert export_key(DEFAULT_MODEL_NAME, OPENVINO_INT8) != key
    assert model_key_for(DEFAULT_MODEL_NAME, OPENVINO_INT8) != model_key
    monkeypatch.undo()
    monkeypatch.setattr(embedding_int8, "RECIPE", "another recipe")
    assert export_key(DEFAULT_MODEL_NAME, OPENVINO_INT8) != key
    assert model_key_for(DEFAULT_MODEL_NAME, OPENVINO_INT8) != model_key


def test_int8_needs_nncf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    missing = r"'openvino-int8' needs .*nncf.*\[openvino\]"
    with pytest.raises(BackendUnavailableError, match=missing):
        check_backend(OPENVINO_INT8)


@needs_openvino
@needs_nncf
def test_int8_export_is_quantized_and_close_to_torch(
    export_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.mktemp("int8")
    target = exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO_INT8, cache)
    assert export_is_complete(target, export_key(DEFAULT_MODEL_NAME, OPENVINO_INT8))
    graph = (target / "openvino" / "openvino_model.xml").read_text(encoding="utf-8")
    float_graph = (
        exported_model_dir(DEFAULT_MODEL_NAME, OPENVINO, export_cache)
        / "openvino"
        / "openvino_model.xml"
    ).read_text(encoding="utf-8")
    # NNCF's quantisation inserts FakeQuantize operations; the float export has none.
    assert 'type="FakeQuantize"' in graph and 'type="FakeQuantize"' not in float_graph
    # The feed-forward output projections stay in float: their input, the GELU's output, is
    # quantised nowhere, while the attention's projections are.
    quantised = re.findall(r'name="([^"]*)" type="FakeQuantize"', graph)
    assert not [name for name in quantised if "gelu" in name.lower()], quantised
    assert any("attention.self.query" in name for name in quantised), quantised
    assert not list((target / "openvino").glob("*int8*"))  # the staged files were moved in place

    int8_embedder = SentenceTransformerEmbedder(backend=OPENVINO_INT8, cache_dir=cache)
    assert int8_embedder.model_key == model_key_for(DEFAULT_MODEL_NAME, OPENVINO_INT8)
    expected = load_embedder().embed(TEXTS)
    got = int8_embedder.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(expected * got, axis=1)
    # Close to PyTorch, but measurably not the same vectors: hence a key of its own.
    assert cosines.min() >= 0.97, cosines
    assert cosines.min() < 0.9999, cosines
