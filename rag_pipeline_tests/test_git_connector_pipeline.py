"""A git source through the real pipeline: commits become document versions, incrementally.

The repository is built with dulwich in tmp_path (fixed author and times). First ingestion, a
no-op re-run, then one commit that edits a file, renames another and deletes a third: exactly
those paths are re-processed, the rename costs no embedding, the deletion leaves search, the
`acl_rules` path stays with its group, and lineage shows the commit and path.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import SAMPLE_CORPUS_DIR, load_user_access
from rag_pipeline.lib.lineage import trace_chunk
from rag_pipeline.lib.retrieval import search
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.lib.test_connector_git import commit_snapshot, init_repository
from rag_pipeline_tests.pipeline_helpers import (
    materialize_sources,
    metadata_of,
    run_everything,
    total,
)

DIRECTORY = SAMPLE_CORPUS_DIR / "directory.yaml"
SOURCE = "platform_tools"
T0 = 1_775_037_600  # 2026-04-01T10:00:00Z

README = """# Acme platform tools

Handbook of the Acme platform team: the acme-deploy rollout tool, rollbacks and on-call tooling.
Questions go to the platform-help channel.
"""
DEPLOY = """# acme-deploy rollouts

Every rollout starts with a canary: five percent of the pods run the new image for fifteen
minutes. The rollout pauses on its own when the canary error rate exceeds two percent.
"""
DEPLOY_EDITED = (
    DEPLOY
    + """
## Automatic canary analysis
After fifteen minutes acme-deploy scores the canary against the stable pods; a score below
eighty aborts the rollout and scales the canary back to zero replicas.
"""
)
ROLLBACK = """# Rolling back with acme-deploy

Run acme-deploy rollback with the previous tag; the rollback skips the canary stage and every
pod must report the old image within ten minutes. Database migrations are never rolled back.
"""
PAGER = """# Pager rotation of the SRE team

The SRE pager rotates every Monday at nine UTC. Acknowledge a page within five minutes with the
acme-pager app, otherwise it escalates to the secondary engineer and the SRE lead.
"""
LEGACY_CI = """# Legacy Jenkins pipelines

The old Jenkins server builds the monolith nightly at two UTC from the release branch; its
artifacts are kept for fourteen days on the build-cache volume.
"""


def _files(texts: dict[str, str]) -> dict[str, bytes]:
    return {path: text.encode() for path, text in texts.items()}


def _doc(path: str) -> str:
    return f"{SOURCE}:{path}"


def _write_sources(tmp_path: Path) -> Path:
    sources_file = tmp_path / "sources.yaml"
    entry = {
        "name": SOURCE,
        "connector": "git",
        "path": "platform-tools.git",
        "ref": "main",
        "tenant": "acme",
        "acl": ["group:acme-engineering"],
        "acl_rules": [{"paths": ["docs/oncall/**"], "acl": ["group:acme-sre"]}],
        "redaction": {"pii": "flag"},
    }
    sources_file.write_text(yaml.safe_dump({"sources": [entry]}))
    return sources_file


def test_git_source_is_ingested_incrementally_by_commit(
    instance: dg.DagsterInstance, database_url: str, tmp_path: Path
) -> None:
    repo = init_repository(tmp_path / "platform-tools.git")
    first_commit = commit_snapshot(
        repo,
        _files(
            {
                "README.md": README,
                "docs/deploy/acme-deploy.md": DEPLOY,
                "docs/deploy/rollback.md": ROLLBACK,
                "docs/oncall/pager.md": PAGER,
                "docs/legacy/jenkins.md": LEGACY_CI,
            }
        ),
        "Platform handbook",
        T0,
    )
    sources_file = _write_sources(tmp_path)
    # Two of five paths leave the tree (a rename and a deletion): above the default 25% loss
    # that stops an index version from serving, and expected here.
    resources = make_resources(database_url, sources_file, max_removed_fraction=0.5)

    # First ingestion: every file, read once.
    per_source, _ = run_everything(instance, resources, sources_file)
    first = metadata_of(per_source[SOURCE], "source_documents")
    assert first["documents_added"] == 5 and first["documents_quarantined"] == 0
    assert first["cursor"] == {"commit": first_commit, "ref": "main"}
    assert total(per_source, "parsed_documents", "documents_parsed") == 5

    # No new commit: nothing read, parsed or embedded.
    per_source = materialize_sources(instance, resources, sources_file)
    again = metadata_of(per_source[SOURCE], "source_documents")
    assert again["documents_unchanged"] == 5 and again["bytes_scanned"] == 0
    assert total(per_source, "parsed_documents", "documents_parsed") == 0
    assert total(per_source, "chunk_embeddings", "texts_embedded") == 0

    second_commit = commit_snapshot(
        repo,
        _files(
            {
                "README.md": README,
                "docs/deploy/acme-deploy.md": DEPLOY_EDITED,
                "docs/runbooks/rollback.md": ROLLBACK,
                "docs/oncall/pager.md": PAGER,
            }
        ),
        "Canary analysis; rollback guide moved to runbooks; Jenkins retired",
        T0 + 86_400,
    )
    with database.connection(database_url) as conn:
        (before,) = conn.execute("SELECT now()").fetchone()
    per_source, _ = run_everything(instance, resources, sources_file)

    scanned = metadata_of(per_source[SOURCE], "source_documents")
    assert scanned["documents_changed"] == 1  # acme-deploy.md
    assert scanned["documents_added"] == 1  # runbooks/rollback.md
    assert scanned["documents_deleted"] == 2  # deploy/rollback.md, legacy/jenkins.md
    assert scanned["documents_unchanged"] == 2  # README.md, pager.md: blobs not even read
    assert scanned["bytes_scanned"] == len(DEPLOY_EDITED) + len(ROLLBACK)
    # Parsing and chunking are per document: the renamed file is a new document, parsed again.
    assert total(per_source, "parsed_documents", "documents_parsed") == 2
    assert total(per_source, "chunks", "documents_chunked") == 2
    embedded = total(per_source, "chunk_embeddings", "texts_embedded")

    embedder = resources["embedder"].embedder()
    with database.connection(database_url) as conn:
        new_texts = {
            text_hash
            for (text_hash,) in conn.execute(
                "SELECT text_hash FROM rag.embeddings WHERE created_at >= %s", (before,)
            )
        }
        chunk_texts = {
            doc_id: {
                text_hash
                for (text_hash,) in conn.execute(
                    "SELECT c.text_hash FROM rag.chunks c JOIN rag.documents d"
                    " USING (doc_id, content_hash) WHERE d.doc_id = %s",
                    (doc_id,),
                )
            }
            for doc_id in (_doc("docs/runbooks/rollback.md"), _doc("docs/deploy/acme-deploy.md"))
        }
        removal_reasons = dict(
            conn.execute(
                "SELECT doc_id, detail ->> 'reason' FROM rag.document_events"
                " WHERE event = 'deleted' AND source = %s",
                (SOURCE,),
            ).fetchall()
        )
        (cursor,) = conn.execute(
            "SELECT cursor FROM rag.source_cursors WHERE source = %s", (SOURCE,)
        ).fetchone()

        alice = load_user_access(DIRECTORY, "alice")  # acme-engineering and acme-sre
        dana = load_user_access(DIRECTORY, "dana")  # acme-engineering only
        henry = load_user_access(DIRECTORY, "henry")  # neither
        pager_query = "SRE pager rotation acknowledge within five minutes"
        alice_pager = search(conn, embedder, pager_query, alice, limit=20)
        dana_pager = search(conn, embedder, pager_query, dana, limit=20)
        henry_hits = search(conn, embedder, "acme-deploy canary rollout", henry, limit=20)
        jenkins_hits = search(conn, embedder, "legacy Jenkins nightly builds", alice, limit=20)
        rollback_hits = search(conn, embedder, "rolling back with acme-deploy", dana, limit=5)
        lineage = trace_chunk(conn, rollback_hits[0].chunk_id, dana)

    # The renamed file's chunks have the same texts as before: no embedding for them; the new
    # texts are those of the edited file alone.
    assert chunk_texts[_doc("docs/runbooks/rollback.md")]
    assert chunk_texts[_doc("docs/runbooks/rollback.md")].isdisjoint(new_texts)
    assert 0 < embedded == len(new_texts)
    assert new_texts <= chunk_texts[_doc("docs/deploy/acme-deploy.md")]

    assert removal_reasons == {
        _doc("docs/deploy/rollback.md"): f"renamed to docs/runbooks/rollback.md in {second_commit}",
        _doc("docs/legacy/jenkins.md"): f"deleted in commit {second_commit}",
    }
    assert cursor == {"commit": second_commit, "ref": "main"}

    # Access: the acl_rules path is readable by its group only, within the same tenant.
    assert _doc("docs/oncall/pager.md") in {hit.doc_id for hit in alice_pager}
    assert _doc("docs/oncall/pager.md") not in {hit.doc_id for hit in dana_pager}
    assert henry_hits == []
    # Deleted at the source, gone from search.
    assert _doc("docs/legacy/jenkins.md") not in {hit.doc_id for hit in jenkins_hits}

    # Lineage names the commit this version was read at and the path in the repository.
    assert rollback_hits[0].doc_id == _doc("docs/runbooks/rollback.md")
    document = lineage["document"]
    assert document["source_metadata"] == {
        "repository": str(repo),
        "ref": "main",
        "commit": second_commit,
        "path": "docs/runbooks/rollback.md",
        "blob": document["source_metadata"]["blob"],
        "renamed_from": "docs/deploy/rollback.md",
    }
    assert document["uri"] == f"git+{repo.as_uri()}@{second_commit}#docs/runbooks/rollback.md"
