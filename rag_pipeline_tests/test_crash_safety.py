"""Kill -9 of a `rag-pipeline run` (or of Postgres) mid-embedding, then run it again.

Everything goes through the path users take: the `rag-pipeline run` command, the repository's
`dagster.yaml` (Dagster storage in Postgres, the `embedder` pool limited to one slot). The dead
run holds that slot when it dies; the next run must still finish by itself, mark the dead run
failed, leave serving untouched meanwhile, and converge to the state of a clean build.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import psycopg
import pytest
import yaml

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.embedding import load_embedder
from rag_pipeline.lib.retrieval import search
from rag_pipeline.run_recovery import OWNER_PID_TAG
from rag_pipeline_tests.conftest import (
    copy_corpus,
    create_database,
    in_memory_instance,
    make_resources,
    server_data_dir,
)
from rag_pipeline_tests.pipeline_helpers import run_everything

REPO_ROOT = Path(__file__).resolve().parents[1]
# `rag-pipeline run` in a child process, with the same network guard as the tests.
CLI = """
import sys
from rag_pipeline_tests.conftest import install_network_guard
install_network_guard()
from rag_pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""
QUERY = "postgres failover when patroni lost quorum"
RERUN_TIMEOUT_S = 900  # a wedged run hangs forever; a healthy rerun takes well under this
# `rag-pipeline run` on its defaults: the shipped model, slow enough to be killed mid-embedding.
pytestmark = pytest.mark.real_model
# New documents each test adds before the run it kills.
VARIANT_COPIES = 8
# The sources each run ingests: two tenants' file shares. The connectors' own sources add Dagster
# runs and parse time to every one of the six `rag-pipeline run`s here, not crash paths.
CRASH_SOURCES = ("acme_engineering", "acme_policies", "globex_wiki")


def crash_corpus(target: Path) -> Path:
    """A copy of the sample corpus whose sources file lists only `CRASH_SOURCES`."""
    corpus = copy_corpus(target)
    sources_file = corpus / "sources.yaml"
    config = yaml.safe_load(sources_file.read_text())
    config["sources"] = [entry for entry in config["sources"] if entry["name"] in CRASH_SOURCES]
    assert [entry["name"] for entry in config["sources"]] == list(CRASH_SOURCES)
    sources_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return corpus


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


def create_empty_database(pg_data_dir: Path) -> str:
    """A new database for Dagster's storage (dagster-postgres creates its own tables)."""
    admin_url = database.start_embedded_server(pg_data_dir)
    name = f"dagster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    status = database.embedded_server_status(pg_data_dir)
    return f"postgresql+psycopg2://postgres:@/{name}?host={status.socket_dir}"


def cli_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RAG_") and key != "DAGSTER_HOME"
    }
    return {
        **env,
        "PYTHONPATH": str(REPO_ROOT),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        **variables,
    }


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def run_cli(args: list[str], env: dict[str, str], timeout: float = RERUN_TIMEOUT_S) -> str:
    """Run the CLI to completion; fail the test (not hang it) if it never finishes."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", CLI, *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"`rag-pipeline {' '.join(args)}` did not finish in {timeout}s: {expired}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def wait_until_embedding(database_url: str, worker: subprocess.Popen[bytes], at_least: int) -> None:
    """Block until the worker has committed `at_least` embeddings and is still running."""
    deadline = time.monotonic() + 300
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline and worker.poll() is None:
            if watcher.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0] >= at_least:
                break
            time.sleep(0.05)
    output = b"" if worker.poll() is None else worker.stdout.read()  # type: ignore[union-attr]
    assert worker.poll() is None, f"the worker ended before it could be killed: {output!r}"


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


def assert_converged(database_url: str, clean_url: str) -> None:
    """Same documents, same serving chunks and texts as a clean run; vectors up to float noise."""
    resumed, clean = state(database_url), state(clean_url)
    # The sources' documents and every variant the killed run was embedding.
    assert len(resumed["documents"]) == len(clean["documents"]) > 4 * VARIANT_COPIES + 20
    assert resumed["documents"] == clean["documents"]
    assert resumed["serving_chunks"] == clean["serving_chunks"]
    resumed_vectors = dict(resumed["serving_embeddings"])
    clean_vectors = dict(clean["serving_embeddings"])
    assert resumed_vectors.keys() == clean_vectors.keys()
    # Batch composition changes float rounding in the model, so vectors are equal up to float
    # noise, not bit for bit.
    for text_hash, vector in resumed_vectors.items():
        assert float(np.dot(vector.to_numpy(), clean_vectors[text_hash].to_numpy())) > 0.99999


@pytest.fixture(scope="module")
def clean_url(pg_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One uninterrupted in-process build of the corpus every test here ends with."""
    corpus = crash_corpus(tmp_path_factory.mktemp("clean") / "corpus")
    add_new_documents(corpus, VARIANT_COPIES)
    sources_file = corpus / "sources.yaml"
    url = create_database(pg_data_dir)
    with in_memory_instance() as instance:
        run_everything(instance, make_resources(url, sources_file, real_model=True), sources_file)
    return url


def dagster_instance(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """The same Dagster instance the CLI used: its DAGSTER_HOME and storage URL."""
    monkeypatch.setenv("RAG_DAGSTER_PG_URL", env["RAG_DAGSTER_PG_URL"])
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def runs_of(instance: dg.DagsterInstance, pid: int) -> list[dg.DagsterRun]:
    return [
        record.dagster_run
        for record in instance.get_run_records()
        if record.dagster_run.tags.get(OWNER_PID_TAG) == str(pid)
    ]


def assert_dead_run_held_the_pool(instance: dg.DagsterInstance, pid: int) -> str:
    """The precondition that used to wedge every later run: a STARTED run holding the slot."""
    dead = [run for run in runs_of(instance, pid) if run.status == dg.DagsterRunStatus.STARTED]
    assert len(dead) == 1, [(run.run_id, run.status) for run in runs_of(instance, pid)]
    pool = instance.event_log_storage.get_concurrency_info("embedder")
    assert pool.slot_count == 1
    assert [slot.run_id for slot in pool.claimed_slots] == [dead[0].run_id]
    return dead[0].run_id


def assert_recovered(instance: dg.DagsterInstance, dead_run_id: str) -> None:
    run = instance.get_run_by_id(dead_run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    failure = [
        event
        for event in instance.all_logs(dead_run_id)
        if event.dagster_event is not None
        and event.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    ]
    assert failure and "no longer exists" in (failure[-1].message or "")
    pool = instance.event_log_storage.get_concurrency_info("embedder")
    assert pool.claimed_slots == []
    assert pool.pending_steps == []


def test_sigkill_mid_embedding_then_rerun_finishes_and_equals_a_clean_run(
    pg_data_dir: Path, clean_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = crash_corpus(tmp_path / "corpus")
    sources_file = corpus / "sources.yaml"
    database_url = create_database(pg_data_dir)
    env = cli_env(
        tmp_path,
        RAG_DATABASE_URL=database_url,
        RAG_DAGSTER_PG_URL=create_empty_database(pg_data_dir),
        RAG_SOURCES_FILE=str(sources_file),
        RAG_DIRECTORY_FILE=str(corpus / "directory.yaml"),
    )
    run_cli(["run"], env)
    embedder = load_embedder()
    alice = load_user_access(corpus / "directory.yaml", "alice")
    with database.connection(database_url) as conn:
        serving_before = conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]
        expected_hits = [hit.chunk_id for hit in search(conn, embedder, QUERY, alice, 5)]
        embeddings_before = conn.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0]

    # Enough new text for several committed batches (128 texts each) before the kill.
    add_new_documents(corpus, VARIANT_COPIES)

    # Readers keep querying through the crash window; every answer must come from one complete
    # version, and that version must be the one serving before the run started.
    observed: list[tuple[set[int], list[str]]] = []
    stop = threading.Event()

    def reader() -> None:
        with database.connection(database_url) as conn:
            while not stop.is_set():
                hits = search(conn, embedder, QUERY, alice, 5)
                observed.append(({hit.version_id for hit in hits}, [h.chunk_id for h in hits]))
                time.sleep(0.02)

    reader_thread = threading.Thread(target=reader)
    worker = start_cli(["run"], env)
    reader_thread.start()
    try:
        wait_until_embedding(database_url, worker, embeddings_before + 128)
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
        assert conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0] == (
            serving_before
        )
        partial = conn.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0]
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
    assert embeddings_before < partial, "the killed run had committed some embedding batches"
    assert invalid == 0

    instance = dagster_instance(env, monkeypatch)
    dead_run_id = assert_dead_run_held_the_pool(instance, worker.pid)

    output = run_cli(["run"], env)
    assert dead_run_id in output  # the rerun says which run it marked failed
    assert_recovered(instance, dead_run_id)
    assert_converged(database_url, clean_url)


def test_postgres_killed_mid_run_then_rerun_finishes_and_converges(
    clean_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of the embedded database server under a `rag-pipeline run` on the defaults."""
    own_server = server_data_dir()
    corpus = crash_corpus(tmp_path / "corpus")
    sources_file = corpus / "sources.yaml"
    # Exactly `make demo`'s configuration: the embedded server holds both databases.
    env = cli_env(
        tmp_path,
        RAG_DATA_DIR=str(own_server),
        RAG_SOURCES_FILE=str(sources_file),
        RAG_DIRECTORY_FILE=str(corpus / "directory.yaml"),
    )
    env["DAGSTER_HOME"] = str(own_server / "dagster")
    try:
        run_cli(["run"], env)
        database_url = database.start_embedded_server(own_server)
        embedder = load_embedder()
        alice = load_user_access(corpus / "directory.yaml", "alice")
        with database.connection(database_url) as conn:
            serving_before = conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]
            embeddings_before = conn.execute("SELECT count(*) FROM rag.embeddings").fetchone()[0]

        add_new_documents(corpus, VARIANT_COPIES)
        worker = start_cli(["run"], env)
        try:
            wait_until_embedding(database_url, worker, embeddings_before + 128)
            postmaster = database.embedded_server_status(own_server).pid
            assert postmaster is not None
            os.kill(postmaster, signal.SIGKILL)
            # The run fails on its own without its database, or is stopped by its user.
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        deadline = time.monotonic() + 30
        while database.embedded_server_status(own_server).running:
            assert time.monotonic() < deadline, "postgres did not die"
            time.sleep(0.2)

        # The rerun starts the server itself (crash recovery happens there) and finishes.
        output = run_cli(["run"], env)
        env_instance = {
            **env,
            "RAG_DAGSTER_PG_URL": database.embedded_dagster_storage_url(own_server),
        }
        instance = dagster_instance(env_instance, monkeypatch)
        dead = runs_of(instance, worker.pid)
        assert dead, "the killed run was recorded in Dagster's run storage"
        assert all(run.status == dg.DagsterRunStatus.FAILURE for run in dead), [
            (run.run_id, run.status) for run in dead
        ]
        assert instance.event_log_storage.get_concurrency_info("embedder").claimed_slots == []
        assert "Pipeline summary" in output
        with database.connection(database_url) as conn:
            assert (
                conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
                == 0
            )
            assert search(conn, embedder, QUERY, alice, 5)
            assert conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0] > (
                serving_before
            )
        assert_converged(database_url, clean_url)
    finally:
        database.stop_embedded_server(own_server)
        shutil.rmtree(own_server, ignore_errors=True)
