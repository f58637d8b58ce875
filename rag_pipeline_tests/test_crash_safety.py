"""A run killed with SIGKILL mid-embedding: serving is untouched, the next run converges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import psycopg

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.embedding import load_embedder
from rag_pipeline.lib.retrieval import search
from rag_pipeline_tests.conftest import copy_corpus, create_database, make_resources
from rag_pipeline_tests.pipeline_helpers import run_everything

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import sys
from rag_pipeline_tests.conftest import install_network_guard
install_network_guard()
import dagster as dg
from rag_pipeline.defs.resources import EmbedderResource
from rag_pipeline.definitions import build_defs
from rag_pipeline.runner import run_pipeline
from rag_pipeline_tests.conftest import make_resources

resources = make_resources(sys.argv[1], sys.argv[2])
resources["embedder"] = EmbedderResource(commit_batch_size=4, batch_size=4)
run_pipeline(dg.DagsterInstance.ephemeral(), defs=build_defs(resources))
"""


def add_new_documents(corpus: Path, copies: int) -> None:
    """New documents whose every chunk text is new, so the killed run has a lot to embed."""
    runbooks = sorted((corpus / "acme_engineering" / "runbooks").glob("*.md"))
    for number in range(copies):
        for runbook in runbooks[:4]:
            text = runbook.read_text()
            variant = "\n".join(
                f"{line} (variant {number})" if line.strip() else line for line in text.splitlines()
            )
            (runbook.parent / f"{runbook.stem}-variant-{number}.md").write_text(variant)


def state(database_url: str) -> dict[str, object]:
    """Everything that defines what readers get, independent of version numbering."""
    with database.connection(database_url) as conn:
        return {
            "documents": conn.execute(
                "SELECT doc_id, content_hash FROM rag.live_documents ORDER BY doc_id"
            ).fetchall(),
            "serving_chunks": conn.execute(
                "SELECT m.chunk_id, c.text_hash, m.tenant, m.acl_principals"
                " FROM rag.index_version_chunks m JOIN rag.active_index a USING (version_id)"
                " JOIN rag.chunks c USING (chunk_id) ORDER BY m.chunk_id"
            ).fetchall(),
            "serving_embeddings": conn.execute(
                "SELECT e.text_hash, e.embedding FROM rag.embeddings e WHERE e.text_hash IN"
                " (SELECT c.text_hash FROM rag.chunks c JOIN rag.index_version_chunks m"
                "  USING (chunk_id) JOIN rag.active_index a USING (version_id))"
                " ORDER BY e.text_hash"
            ).fetchall(),
        }


def start_worker(database_url: str, sources_file: Path) -> subprocess.Popen[bytes]:
    """A separate process running the whole pipeline, as a Dagster run worker would."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, database_url, str(sources_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def wait_until_embedding(database_url: str, worker: subprocess.Popen[bytes], at_least: int) -> None:
    """Block until the worker has committed `at_least` embeddings and is still running."""
    deadline = time.monotonic() + 240
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline and worker.poll() is None:
            if watcher.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0] >= at_least:
                break
            time.sleep(0.05)
    assert worker.poll() is None, "the worker finished before it could be killed"


def assert_converged(database_url: str, clean_url: str) -> None:
    """Same documents, same serving chunks and texts as a clean run; vectors up to float noise."""
    resumed, clean = state(database_url), state(clean_url)
    assert len(resumed["documents"]) == len(clean["documents"]) > 45
    assert resumed["documents"] == clean["documents"]
    assert resumed["serving_chunks"] == clean["serving_chunks"]
    resumed_vectors = dict(resumed["serving_embeddings"])
    clean_vectors = dict(clean["serving_embeddings"])
    assert resumed_vectors.keys() == clean_vectors.keys()
    # Batch composition changes float rounding in the model (the killed run used batches of 4),
    # so vectors are equal up to float noise, not bit for bit.
    for text_hash, vector in resumed_vectors.items():
        assert float(np.dot(vector.to_numpy(), clean_vectors[text_hash].to_numpy())) > 0.99999


def rebuild_and_compare(pg_data_dir: Path, database_url: str, sources_file: Path) -> None:
    """Resume on the crashed database, build the same corpus cleanly elsewhere, compare."""
    with dg.instance_for_test() as instance:
        run_everything(instance, make_resources(database_url, sources_file), sources_file)
    clean_url = create_database(pg_data_dir)
    with dg.instance_for_test() as instance:
        run_everything(instance, make_resources(clean_url, sources_file), sources_file)
    assert_converged(database_url, clean_url)


def test_sigkill_mid_embedding_then_rerun_equals_a_clean_run(
    pg_data_dir: Path, tmp_path: Path
) -> None:
    corpus = copy_corpus(tmp_path / "corpus")
    sources_file = corpus / "sources.yaml"
    database_url = create_database(pg_data_dir)
    resources = make_resources(database_url, sources_file)
    embedder = load_embedder()
    alice = load_user_access(corpus / "directory.yaml", "alice")
    query = "postgres failover when patroni lost quorum"

    with dg.instance_for_test() as instance:
        run_everything(instance, resources, sources_file)
    with database.connection(database_url) as conn:
        serving_before = conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]
        members_before = conn.execute(
            "SELECT count(*) FROM rag.index_version_chunks WHERE version_id = %s",
            (serving_before,),
        ).fetchone()[0]
        expected_hits = [hit.chunk_id for hit in search(conn, embedder, query, alice, 5)]
        embeddings_before = conn.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0]

    add_new_documents(corpus, copies=3)

    # Readers keep querying through the crash window; every answer must come from one complete
    # version, and that version must be the one serving before the run started.
    observed: list[tuple[set[int], list[str]]] = []
    stop = threading.Event()

    def reader() -> None:
        with database.connection(database_url) as conn:
            while not stop.is_set():
                hits = search(conn, embedder, query, alice, 5)
                observed.append(({hit.version_id for hit in hits}, [h.chunk_id for h in hits]))

    reader_thread = threading.Thread(target=reader)
    worker = start_worker(database_url, sources_file)
    reader_thread.start()
    try:
        wait_until_embedding(database_url, worker, embeddings_before + 12)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
        stop.set()
        reader_thread.join(timeout=60)

    assert worker.returncode == -signal.SIGKILL
    assert observed, "the reader never completed a query during the crash window"
    assert all(versions == {serving_before} for versions, _ in observed)
    assert all(chunk_ids == expected_hits for _, chunk_ids in observed)
    with database.connection(database_url) as conn:
        after_crash = conn.execute(
            "SELECT a.version_id, count(m.chunk_id) FROM rag.active_index a"
            " JOIN rag.index_version_chunks m USING (version_id) GROUP BY a.version_id"
        ).fetchone()
        partial = conn.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0]
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
    assert after_crash == (serving_before, members_before)
    assert embeddings_before < partial, "the killed run had committed some embedding batches"
    assert invalid == 0

    rebuild_and_compare(pg_data_dir, database_url, sources_file)


def test_postgres_killed_mid_run_recovers_and_converges(pg_data_dir: Path, tmp_path: Path) -> None:
    """SIGKILL of the database server itself: crash recovery, then the same end state."""
    own_server = tmp_path / "own_pg"
    database_url = database.start_embedded_server(own_server)
    corpus = copy_corpus(tmp_path / "corpus")
    sources_file = corpus / "sources.yaml"
    resources = make_resources(database_url, sources_file)
    embedder = load_embedder()
    alice = load_user_access(corpus / "directory.yaml", "alice")
    query = "postgres failover when patroni lost quorum"
    try:
        with dg.instance_for_test() as instance:
            run_everything(instance, resources, sources_file)
        with database.connection(database_url) as conn:
            serving_before = conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]
            expected_hits = [hit.chunk_id for hit in search(conn, embedder, query, alice, 5)]
            embeddings_before = conn.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0]

        add_new_documents(corpus, copies=3)
        worker = start_worker(database_url, sources_file)
        try:
            wait_until_embedding(database_url, worker, embeddings_before + 12)
            postmaster = database.embedded_server_status(own_server).pid
            assert postmaster is not None
            os.kill(postmaster, signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait(timeout=30)
        deadline = time.monotonic() + 30
        while database.embedded_server_status(own_server).running:
            assert time.monotonic() < deadline, "postgres did not die"
            time.sleep(0.2)

        database.start_embedded_server(own_server)  # crash recovery happens here
        with database.connection(database_url) as conn:
            assert conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0] == (
                serving_before
            )
            assert [hit.chunk_id for hit in search(conn, embedder, query, alice, 5)] == (
                expected_hits
            )
            assert (
                conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
                == 0
            )

        rebuild_and_compare(pg_data_dir, database_url, sources_file)
    finally:
        database.stop_embedded_server(own_server)
