import dagster as dg

from rag_pipeline.defs.indexes.assets import latest_candidate_version, vector_index
from rag_pipeline.defs.resources import ChunkingResource, EmbedderResource, PostgresResource
from rag_pipeline.lib import chunk_expectations
from rag_pipeline.lib.index_versions import record_check


@dg.asset_check(
    asset=vector_index,
    name=chunk_expectations.CHECK_NAME,
    blocking=True,
    description="A Great Expectations suite on the candidate's chunks: text, budget, headings, "
    "ACLs, near-duplicates, encoding and language sanity.",
)
def chunk_expectations_check(
    context: dg.AssetCheckExecutionContext,
    postgres: PostgresResource,
    embedder: EmbedderResource,
    chunking: ChunkingResource,
) -> dg.AssetCheckResult:
    """A Great Expectations suite on the candidate version's chunks; stored for promotion.

    No chunk is blank, every token count is between 1 and the embedder's budget, most chunks of
    documents with headings carry a heading path, every chunk has a tenant and a non-empty ACL,
    few chunks repeat another document's normalised text, and the text is sane (no U+FFFD, no
    control characters, no mojibake, printable, mostly letters). The result is recorded in
    `rag.index_version_checks`, so a failure also refuses a later `rag-pipeline index promote`.
    """
    version_id = latest_candidate_version(context)
    budget = chunking.config(embedder).budget
    with postgres.connection() as conn:
        result = chunk_expectations.validate_chunks(conn, version_id, budget)
        with conn.transaction():
            record_check(
                conn,
                version_id,
                chunk_expectations.CHECK_NAME,
                result.passed,
                True,
                result.detail(),
            )
    return dg.AssetCheckResult(
        check_name=chunk_expectations.CHECK_NAME,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.summary,
        metadata={
            "version_id": version_id,
            "chunks": result.chunk_count,
            "budget": budget,
            "expectations": len(result.outcomes),
            "failed_expectations": dg.MetadataValue.json(result.failed),
            "duration_s": result.duration_s,
            "thresholds": dg.MetadataValue.json(result.detail()["thresholds"]),
            "results": dg.MetadataValue.md(result.markdown()),
        },
    )
