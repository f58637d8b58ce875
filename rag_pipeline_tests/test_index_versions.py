"""Index versions: gates block promotion, the serving version keeps answering, rollback, gc."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from rag_pipeline.defs.indexes.maintenance import rollback_index_job
from rag_pipeline.defs.resources import ChunkingResource
from rag_pipeline.lib import database, index_versions
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.embedding import DEFAULT_MODEL_NAME, model_key_for, packaged_model_path
from rag_pipeline.lib.quality_gates import BLOCKING_GATES
from rag_pipeline.lib.retrieval import NoServingIndexError, search
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.fakes import HashedEmbedderResource, hashed_embedder
from rag_pipeline_tests.pipeline_helpers import (
    materialize_index,
    materialize_sources,
    metadata_of,
    run_everything,
    total,
)

QUERIES = [
    ("alice", "How do I fail over the Postgres primary?"),
    ("alice", "redis eviction policy and memory limits"),
    ("bob", "customer cannot log in after password reset"),
    ("erin", "VPN portal address"),
]


def snapshot(database_url: str, corpus: Path) -> dict[str, list[tuple[str, float, int]]]:
    """What each test query returns: (chunk id, rounded score, version) of the top hits."""
    embedder = hashed_embedder()
    results = {}
    with database.connection(database_url) as conn:
        for user, query in QUERIES:
            access = load_user_access(corpus / "directory.yaml", user)
            results[f"{user}:{query}"] = [
                (hit.chunk_id, round(hit.score, 5), hit.version_id)
                for hit in search(conn, embedder, query, access, limit=5)
            ]
    return results


def serving(database_url: str) -> int | None:
    with database.connection(database_url) as conn:
        return index_versions.active_version_id(conn)


def test_failed_gate_blocks_promotion_and_rollback_restores_exact_results(
    instance: dg.DagsterInstance, database_url: str, corpus: Path
) -> None:
    # The share below holds about a fifth of the sample corpus: the gate's limit is set under it.
    resources = make_resources(database_url, corpus / "sources.yaml", max_removed_fraction=0.1)
    _, first = run_everything(instance, resources, corpus / "sources.yaml")
    version_a = metadata_of(first, "vector_index")["version_id"]
    results_a = snapshot(database_url, corpus)

    runbook = corpus / "acme_engineering" / "runbooks" / "redis-cache-eviction.md"
    runbook.write_text(runbook.read_text().replace("eviction", "eviction (LRU)"))
    _, second = run_everything(instance, resources, corpus / "sources.yaml")
    version_b = metadata_of(second, "vector_index")["version_id"]
    assert serving(database_url) == version_b != version_a
    results_b = snapshot(database_url, corpus)
    assert results_b != results_a

    # A source that suddenly looks empty (an unmounted share) must not reach readers.
    share = corpus.parent / "unmounted"
    shutil.copytree(corpus / "acme_engineering", share)
    shutil.rmtree(corpus / "acme_engineering" / "runbooks")
    shutil.rmtree(corpus / "acme_engineering" / "wiki")
    materialize_sources(instance, resources, corpus / "sources.yaml")
    third = materialize_index(instance, resources, raise_on_error=False)
    assert not third.success
    failed = {c.check_name for c in third.get_asset_check_evaluations() if not c.passed}
    assert failed == {"no_unexpected_document_loss"}
    version_c = metadata_of(third, "vector_index")["version_id"]
    with pytest.raises(KeyError):
        metadata_of(third, "active_index")
    assert serving(database_url) == version_b
    # Version b keeps serving, but the vanished documents fail closed: they are tombstoned, and
    # search never serves a deleted document, whichever version serves (issue 10, class 3).
    alice = load_user_access(corpus / "directory.yaml", "alice")
    with database.connection(database_url) as conn:
        hits = search(conn, hashed_embedder(), QUERIES[0][1], alice, limit=20)
    assert hits and not any(hit.doc_id.startswith("acme_engineering:") for hit in hits)
    erin = "erin:VPN portal address"
    assert snapshot(database_url, corpus)[erin] == results_b[erin]
    # The share is back: the next scan restores the documents and b serves them again as before,
    # with no new version.
    shutil.rmtree(corpus / "acme_engineering")
    shutil.copytree(share, corpus / "acme_engineering")
    materialize_sources(instance, resources, corpus / "sources.yaml")
    assert serving(database_url) == version_b
    assert snapshot(database_url, corpus) == results_b
    with database.connection(database_url) as conn:
        with pytest.raises(index_versions.PromotionBlockedError, match="no_unexpected_document"):
            index_versions.promote(conn, version_c, actor="test", required_checks=BLOCKING_GATES)
        statuses = {v.version_id: v.status for v in index_versions.list_versions(conn)}
    assert statuses == {version_a: "retired", version_b: "active", version_c: "rejected"}

    rollback = rollback_index_job.execute_in_process(
        resources={"postgres": resources["postgres"]}, instance=instance
    )
    assert rollback.success
    assert serving(database_url) == version_a
    assert snapshot(database_url, corpus) == results_a

    with database.connection(database_url) as conn:
        gc = index_versions.garbage_collect(conn, keep=1)
        remaining = {v.version_id for v in index_versions.list_versions(conn)}
        invalid = conn.execute(
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid OR NOT indisready"
        ).fetchone()[0]
    # Kept: the newest (c), the serving one (a) and its rollback target (b).
    assert remaining == {version_a, version_b, version_c} and gc.versions_removed == []
    assert invalid == 0
    assert snapshot(database_url, corpus) == results_a


def test_garbage_collection_removes_old_versions_and_orphans(
    instance: dg.DagsterInstance, database_url: str, corpus: Path
) -> None:
    resources = make_resources(database_url, corpus / "sources.yaml")
    versions = []
    runbook = corpus / "acme_engineering" / "runbooks" / "kafka-consumer-lag.md"
    for round_number in range(3):
        runbook.write_text(runbook.read_text() + f"\n\nRevision note {round_number}.\n")
        _, index = run_everything(instance, resources, corpus / "sources.yaml")
        versions.append(metadata_of(index, "vector_index")["version_id"])
    results = snapshot(database_url, corpus)
    with database.connection(database_url) as conn:
        gc = index_versions.garbage_collect(conn, keep=1)
        remaining = {v.version_id for v in index_versions.list_versions(conn)}
        stale_chunks = conn.execute(
            "SELECT count(*) FROM rag.chunks c WHERE c.doc_id = %s AND NOT EXISTS ("
            " SELECT 1 FROM rag.index_version_chunks m WHERE m.chunk_id = c.chunk_id)",
            ("acme_engineering:runbooks/kafka-consumer-lag.md",),
        ).fetchone()[0]
    assert gc.versions_removed == [versions[0]]
    assert remaining == {versions[1], versions[2]}
    assert gc.chunks_removed > 0 and gc.blobs_removed == 1
    assert stale_chunks == 0
    assert snapshot(database_url, corpus) == results


def test_chunker_change_builds_a_new_version_reusing_cached_embeddings(
    instance: dg.DagsterInstance, database_url: str, corpus: Path
) -> None:
    resources = make_resources(database_url, corpus / "sources.yaml")
    first_sources, first = run_everything(instance, resources, corpus / "sources.yaml")
    first_embedded = total(first_sources, "chunk_embeddings", "texts_embedded")
    rechunked = {**resources, "chunking": ChunkingResource(min_tokens=120)}
    per_source, index = run_everything(instance, rechunked, corpus / "sources.yaml")
    diff = metadata_of(index, "vector_index")["diff"]
    embedded = total(per_source, "chunk_embeddings", "texts_embedded")
    new_chunks = metadata_of(index, "vector_index")["chunks"]
    assert diff["chunker_changed"] is True and diff["model_changed"] is False
    assert total(per_source, "parsed_documents", "documents_parsed") == 0
    assert 0 < embedded < new_chunks, "unchanged chunk texts come from the cache"
    assert metadata_of(index, "active_index")["switched"] is True
    assert first_embedded == metadata_of(first, "vector_index")["chunks"]


def test_model_change_builds_a_new_version_and_queries_must_follow(
    instance: dg.DagsterInstance, database_url: str, corpus: Path
) -> None:
    resources = make_resources(database_url, corpus / "sources.yaml")
    _, first = run_everything(instance, resources, corpus / "sources.yaml")
    # Another model with the same tokenizer (the fake's vectors under another key).
    other_model = {**resources, "embedder": HashedEmbedderResource(variant="other")}
    per_source, index = run_everything(instance, other_model, corpus / "sources.yaml")
    diff = metadata_of(index, "vector_index")["diff"]
    assert diff["model_changed"] is True and diff["chunker_changed"] is False
    chunk_count = metadata_of(index, "vector_index")["chunks"]
    assert diff["chunks"] == {"added": 0, "removed": 0, "unchanged": chunk_count}
    assert (
        total(per_source, "chunk_embeddings", "texts_embedded")
        == metadata_of(index, "vector_index")["chunks"]
    )
    assert total(per_source, "parsed_documents", "documents_parsed") == 0
    assert total(per_source, "chunks", "chunks_written") == 0, "same tokenizer: same chunks"
    assert metadata_of(index, "active_index")["switched"] is True

    alice = load_user_access(corpus / "directory.yaml", "alice")
    with database.connection(database_url) as conn:
        with pytest.raises(NoServingIndexError, match="embedded with"):
            search(conn, hashed_embedder(), "postgres failover", alice)
        assert search(conn, hashed_embedder("other"), "postgres failover", alice)
        index_versions.rollback(conn, actor="test")
        assert search(conn, hashed_embedder(), "postgres failover", alice)
    assert serving(database_url) == metadata_of(first, "vector_index")["version_id"]


def test_the_same_weights_under_another_local_path_are_another_model(tmp_path: Path) -> None:
    """A model's cache key names its path, so switching paths is a model change (as above)."""
    local_model = tmp_path / "local-minilm"
    local_model.symlink_to(packaged_model_path(DEFAULT_MODEL_NAME), target_is_directory=True)
    key = model_key_for(str(local_model))
    assert key != model_key_for(DEFAULT_MODEL_NAME)
    assert key.rsplit("@", 1)[1] == model_key_for(DEFAULT_MODEL_NAME).rsplit("@", 1)[1]
