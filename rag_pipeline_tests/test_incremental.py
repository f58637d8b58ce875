"""Re-runs do only the work that changed: edits, deletions and additions at the source."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.retrieval import search
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.pipeline_helpers import metadata_of, run_everything, total

EDITED = "acme_engineering/runbooks/redis-cache-eviction.md"
DELETED = "globex_wiki/ops/warehouse-scanner-setup.md"
ADDED = "acme_policies/expense-card-policy.md"
ADDED_TEXT = """# Corporate expense card policy

## Eligibility
Employees with more than three months of tenure may request an Acme corporate card through the
finance portal. The monthly limit is 4,500 EUR and cash withdrawals are blocked.

## Receipts
Upload every receipt within 10 days. Missing receipts above 75 EUR suspend the card after a
reminder from the finance team, and the amount is deducted from the next payroll run.
"""


def test_only_changed_documents_are_reprocessed(
    instance: dg.DagsterInstance, database_url: str, corpus: Path
) -> None:
    resources = make_resources(database_url, corpus / "sources.yaml")
    _, first_index = run_everything(instance, resources, corpus / "sources.yaml")
    first_version = metadata_of(first_index, "vector_index")["version_id"]

    edited = corpus / EDITED
    edited.write_text(
        edited.read_text()
        + "\n\n## Appendix: eviction storm drill\nRun the quarterly drill on staging-redis-7 "
        "with maxmemory lowered to 64 MB and confirm the pager fires within 4 minutes.\n"
    )
    (corpus / DELETED).unlink()
    (corpus / ADDED).write_text(ADDED_TEXT)

    per_source, index = run_everything(instance, resources, corpus / "sources.yaml")

    source = {name: metadata_of(result, "source_documents") for name, result in per_source.items()}
    assert source["acme_engineering"]["documents_changed"] == 1
    assert source["globex_wiki"]["documents_deleted"] == 1
    assert source["acme_policies"]["documents_added"] == 1
    assert sum(s["documents_changed"] + s["documents_added"] for s in source.values()) == 2
    assert total(per_source, "parsed_documents", "documents_parsed") == 2
    assert total(per_source, "chunks", "documents_chunked") == 2
    embedded = total(per_source, "chunk_embeddings", "texts_embedded")
    written = total(per_source, "chunks", "chunks_written")
    assert 0 < embedded <= written < 12, "only the new texts of the two documents are embedded"

    diff = metadata_of(index, "vector_index")["diff"]
    assert diff["base_version"] == first_version
    assert diff["documents"]["added"]["ids"] == [ADDED.replace("/", ":", 1)]
    assert diff["documents"]["removed"]["ids"] == [DELETED.replace("/", ":", 1)]
    assert diff["documents"]["changed"]["ids"] == [EDITED.replace("/", ":", 1)]
    assert metadata_of(index, "active_index")["switched"] is True

    deleted_id = DELETED.replace("/", ":", 1)
    embedder = resources["embedder"].embedder()
    with database.connection(database_url) as conn:
        erin = load_user_access(corpus / "directory.yaml", "erin")
        hits = search(conn, embedder, "warehouse handheld scanner setup", erin, limit=20)
        events = conn.execute(
            "SELECT event FROM rag.document_events WHERE doc_id = %s ORDER BY event_id",
            (deleted_id,),
        ).fetchall()
        alice = load_user_access(corpus / "directory.yaml", "alice")
        new_hits = search(conn, embedder, "corporate card monthly limit", alice, limit=1)
    assert deleted_id not in {hit.doc_id for hit in hits}
    assert [event for (event,) in events] == ["added", "deleted"]
    assert new_hits[0].doc_id == ADDED.replace("/", ":", 1)


def test_acl_change_alone_makes_a_new_version_without_reembedding(
    instance: dg.DagsterInstance, database_url: str, corpus: Path
) -> None:
    resources = make_resources(database_url, corpus / "sources.yaml")
    run_everything(instance, resources, corpus / "sources.yaml")
    sidecar = corpus / "acme_policies" / "_metadata.yaml"
    metadata = yaml.safe_load(sidecar.read_text())
    metadata["documents"]["remote-work-policy.md"]["acl"] = ["group:acme-hr"]
    sidecar.write_text(yaml.safe_dump(metadata))
    per_source, index = run_everything(instance, resources, corpus / "sources.yaml")
    assert total(per_source, "chunk_embeddings", "texts_embedded") == 0
    assert total(per_source, "source_documents", "documents_metadata_changed") == 1
    diff = metadata_of(index, "vector_index")["diff"]
    assert diff["documents"]["acl_changed"]["ids"] == ["acme_policies:remote-work-policy.md"]
    with database.connection(database_url) as conn:
        dana = load_user_access(corpus / "directory.yaml", "dana")
        hits = search(conn, resources["embedder"].embedder(), "remote work policy", dana, limit=10)
    assert "acme_policies:remote-work-policy.md" not in {hit.doc_id for hit in hits}
