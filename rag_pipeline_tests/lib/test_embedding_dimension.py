import json
from pathlib import Path

import psycopg
import pytest

from rag_pipeline.lib.embedding import DEFAULT_MODEL_NAME, packaged_model_path
from rag_pipeline.lib.embedding_dimension import (
    EmbeddingDimensionError,
    configured_dimension,
    require_fitting_dimension,
)
from rag_pipeline.lib.stores.embeddings import stored_dimension

TRANSFORMER = {
    "idx": 0,
    "name": "0",
    "path": "",
    "type": "sentence_transformers.models.Transformer",
}
POOLING = {
    "idx": 1,
    "name": "1",
    "path": "1_Pooling",
    "type": "sentence_transformers.models.Pooling",
}
DENSE = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
NORMALIZE = {
    "idx": 3,
    "name": "3",
    "path": "3_Normalize",
    "type": "sentence_transformers.models.Normalize",
}


def write_model_config(
    root: Path, modules: list[dict[str, object]], hidden: dict[str, int], pooling_modes: list[str]
) -> Path:
    """The configuration files of a sentence-transformers model directory, without weights."""
    root.mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "config.json").write_text(json.dumps({"model_type": "test", **hidden}))
    (root / "1_Pooling").mkdir()
    width = next(iter(hidden.values()))
    pooling = {"word_embedding_dimension": width} | {mode: True for mode in pooling_modes}
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (root / "2_Dense").mkdir()
    (root / "2_Dense" / "config.json").write_text(
        json.dumps({"in_features": width, "out_features": 256})
    )
    return root


def test_the_packaged_model_is_384_dimensional_by_its_configuration() -> None:
    assert configured_dimension(packaged_model_path(DEFAULT_MODEL_NAME)) == 384


@pytest.mark.parametrize(
    ("modules", "hidden", "modes", "expected"),
    [
        (
            [TRANSFORMER, POOLING, NORMALIZE],
            {"hidden_size": 768},
            ["pooling_mode_mean_tokens"],
            768,
        ),
        ([TRANSFORMER, POOLING], {"d_model": 512}, ["pooling_mode_cls_token"], 512),
        # Mean and max pooling concatenated: two blocks of the hidden size.
        (
            [TRANSFORMER, POOLING],
            {"hidden_size": 384},
            ["pooling_mode_mean_tokens", "pooling_mode_max_tokens"],
            768,
        ),
        # A projection after pooling decides the size.
        (
            [TRANSFORMER, POOLING, DENSE, NORMALIZE],
            {"hidden_size": 768},
            ["pooling_mode_mean_tokens"],
            256,
        ),
    ],
)
def test_configured_dimension_follows_the_modules(
    tmp_path: Path,
    modules: list[dict[str, object]],
    hidden: dict[str, int],
    modes: list[str],
    expected: int,
) -> None:
    assert (
        configured_dimension(write_model_config(tmp_path / "m", modules, hidden, modes)) == expected
    )


def test_configured_dimension_is_unknown_rather_than_guessed(tmp_path: Path) -> None:
    custom = {"idx": 2, "name": "2", "path": "2_Custom", "type": "my_package.MyProjection"}
    model = write_model_config(
        tmp_path / "m",
        [TRANSFORMER, POOLING, custom],
        {"hidden_size": 768},
        ["pooling_mode_mean_tokens"],
    )
    assert configured_dimension(model) is None
    assert configured_dimension(tmp_path / "no-such-model") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "modules.json").write_text("{not json")
    assert configured_dimension(tmp_path / "broken") is None


def test_a_model_of_another_size_is_refused_by_name_and_size() -> None:
    require_fitting_dimension("mini", 384, 384)
    require_fitting_dimension("unknown-config", None, 384)
    with pytest.raises(EmbeddingDimensionError) as refused:
        require_fitting_dimension("/models/mpnet", 768, 384)
    message = str(refused.value)
    assert "'/models/mpnet' gives 768-dimensional vectors" in message
    assert "vector(384)" in message and "Nothing was embedded" in message


def test_the_database_says_what_size_it_stores(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert stored_dimension(conn) == 384
