"""Run the real asset graph with `dg.materialize` and read back what it recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from rag_pipeline.defs.chunking.assets import chunks
from rag_pipeline.defs.connectors.assets import source_documents
from rag_pipeline.defs.embeddings.assets import chunk_embeddings
from rag_pipeline.defs.evaluation.assets import evaluation_report
from rag_pipeline.defs.indexes.assets import active_index, vector_index
from rag_pipeline.defs.indexes.checks import canary_leak_check, index_version_gates
from rag_pipeline.defs.indexes.chunk_checks import chunk_expectations_check
from rag_pipeline.defs.parsing.assets import parsed_documents
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS
from rag_pipeline.defs.redaction.assets import redacted_documents
from rag_pipeline.lib.catalog import load_sources
from rag_pipeline.runner import materialization_metadata

SOURCE_STAGES = [source_documents, parsed_documents, redacted_documents, chunks, chunk_embeddings]
# The whole index graph: promotion requires every check of `PROMOTION_CHECKS` to have run.
INDEX_STAGES = [
    vector_index,
    index_version_gates,
    chunk_expectations_check,
    canary_leak_check,
    evaluation_report,
    active_index,
]


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata `asset` reported in this run; KeyError if it was not materialized."""
    return materialization_metadata(result)[asset]


def materialize_sources(
    instance: dg.DagsterInstance, resources: dict[str, Any], sources_file: Path
) -> dict[str, dg.ExecuteInProcessResult]:
    names = [source.name for source in load_sources(sources_file)]
    known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS.name))
    instance.add_dynamic_partitions(SOURCE_PARTITIONS.name, [n for n in names if n not in known])
    return {
        name: dg.materialize(
            SOURCE_STAGES, instance=instance, resources=resources, partition_key=name
        )
        for name in names
    }


def materialize_index(
    instance: dg.DagsterInstance, resources: dict[str, Any], raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*SOURCE_STAGES, *INDEX_STAGES],
        selection=[asset.key for asset in (vector_index, evaluation_report, active_index)],
        instance=instance,
        resources=resources,
        raise_on_error=raise_on_error,
    )


def run_everything(
    instance: dg.DagsterInstance, resources: dict[str, Any], sources_file: Path
) -> tuple[dict[str, dg.ExecuteInProcessResult], dg.ExecuteInProcessResult]:
    per_source = materialize_sources(instance, resources, sources_file)
    return per_source, materialize_index(instance, resources)


def total(per_source: dict[str, dg.ExecuteInProcessResult], asset: str, key: str) -> int:
    return sum(int(metadata_of(result, asset)[key]) for result in per_source.values())
