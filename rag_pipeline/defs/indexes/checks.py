from collections.abc import Iterator

import dagster as dg

from rag_pipeline.defs.indexes.assets import latest_candidate_version, vector_index
from rag_pipeline.defs.resources import (
    ChunkingResource,
    EmbedderResource,
    IndexPolicyResource,
    PostgresResource,
    index_keys,
)
from rag_pipeline.lib import canaries, canary_probes, quality_gates
from rag_pipeline.lib.index_versions import record_check

GATE_DESCRIPTIONS = {
    name: (getattr(quality_gates, name).__doc__ or "").strip().splitlines()[0]
    for name in quality_gates.BLOCKING_GATES
}


def gate_check_result(version_id: int, result: quality_gates.GateResult) -> dg.AssetCheckResult:
    """A blocking gate's result as a Dagster check result, its detail as metadata."""
    return dg.AssetCheckResult(
        check_name=result.name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.summary,
        metadata={
            "version_id": version_id,
            **{
                key: dg.MetadataValue.json(value) if isinstance(value, list | dict) else value
                for key, value in result.detail.items()
            },
        },
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=vector_index, blocking=True, description=description)
        for name, description in GATE_DESCRIPTIONS.items()
    ],
)
def index_version_gates(
    context: dg.AssetCheckExecutionContext,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    chunking: ChunkingResource,
    index_policy: IndexPolicyResource,
) -> Iterator[dg.AssetCheckResult]:
    """Blocking quality gates on the candidate version; results are also stored in Postgres.

    A failure stops `active_index` in the same run, and because promotion re-reads the stored
    results, also refuses a later manual `rag-pipeline index promote` of the same version.
    """
    version_id = latest_candidate_version(context)
    keys = index_keys(embedder, chunking)
    budget = chunking.config(embedder).budget
    with postgres.connection() as conn:
        results = [
            quality_gates.candidate_covers_live_documents(conn, version_id, keys),
            quality_gates.chunks_within_token_budget(conn, version_id, budget),
            quality_gates.embeddings_are_unit_vectors(conn, version_id, keys.model_key),
            quality_gates.no_unexpected_document_loss(
                conn, version_id, index_policy.max_removed_fraction
            ),
            quality_gates.chunks_trace_to_source(conn, version_id),
        ]
        for result in results:
            with conn.transaction():
                record_check(conn, version_id, result.name, result.passed, True, result.detail)
    for result in results:
        yield gate_check_result(version_id, result)


@dg.asset_check(
    asset=vector_index,
    name=canaries.CHECK_NAME,
    blocking=True,
    description="Per-tenant canaries planted into the candidate (and rolled back) reach no reader "
    "who is not entitled, through retrieval, lineage or unfiltered SQL under row-level security.",
)
def canary_leak_check(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> dg.AssetCheckResult:
    """Canary leak probes on the candidate version; a leak blocks promotion.

    Per tenant, a canary document with a unique token, readable only by that tenant's canary
    principal, is planted into the candidate inside a transaction that is rolled back after
    probing, so no canary ever reaches the corpus, counts, diffs or golden sets. It is probed as
    every other tenant's canary principal and as the same tenant's real principals, through the
    real retrieval entry point (lexical with the token, vector with the canary's own vector),
    lineage, and unfiltered SQL under row-level security. The result is recorded in
    `rag.index_version_checks`, so a failure also refuses `rag-pipeline index promote`.
    """
    version_id = latest_candidate_version(context)
    with postgres.connection() as conn:
        result = canary_probes.no_canary_leaks(conn, version_id)
        with conn.transaction():
            record_check(conn, version_id, result.name, result.passed, True, result.detail)
    return gate_check_result(version_id, result)
