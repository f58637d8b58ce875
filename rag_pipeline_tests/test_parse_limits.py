"""A per-document parse time limit, and parser crashes that cost one document (issue 10, class 9).

The slow input is real: unstructured 0.27.35 renders Markdown with Python-Markdown, whose link
patterns make an unclosed run of `[` take time that grows with the square of its length (1 KB
0.3 s, 2 KB 1.0 s, 4 KB 3.6 s, 8 KB 14.5 s on the development machine). Crashes are simulated
by parse functions that kill their own process with the signal a segfault or the out-of-memory
killer would send. The integration test runs `ingest_source_job` through `run_pipeline`, what
`rag-pipeline run` calls, on the real embedded Postgres.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import dagster as dg
import psutil
import pytest
import yaml

from rag_pipeline.definitions import build_defs
from rag_pipeline.defs.resources import ParsingResource
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import SAMPLE_CORPUS_DIR, load_user_access
from rag_pipeline.lib.parse_worker import ParseWorker, ParseWorkerError
from rag_pipeline.lib.parsing import ParsedDocument, ParseError, parse_document
from rag_pipeline.lib.retrieval import search
from rag_pipeline.runner import run_pipeline
from rag_pipeline_tests.conftest import install_network_guard, make_resources

REPO_ROOT = Path(__file__).resolve().parents[1]
# About 15 s to parse in-process; every limit below is a small fraction of that.
PATHOLOGICAL_MARKDOWN = b"[" * 8000
LIMIT_S = 1.0
SHORT_MARKDOWN = b"# Ready\n\nThe parser process is up and answering.\n"
# The same corpus files parsed both ways: one of each format the pipeline reads.
SAMPLE_DOCUMENTS = [
    ("acme_policies/password-policy.md", "text/markdown"),
    ("acme_policies/travel-expense-policy.pdf", "application/pdf"),
    ("acme_engineering/wiki/api-rate-limits.html", "text/html"),
    ("acme_support/tickets/TCK-1001-sso-login-loop.txt", "text/plain"),
]


def parse_or_die(
    content: bytes,
    mime_type: str,
    *,
    encoding: str | None = None,
    filename: str = "document",
    declared_title: str | None = None,
) -> ParsedDocument:
    """Dies of the signal named by a `die:<SIGNAL>` document; parses any other normally."""
    if content.startswith(b"die:"):
        os.kill(os.getpid(), signal.Signals[content[4:].decode()])
        time.sleep(60)  # the signal arrives asynchronously
    return parse_document(
        content, mime_type, encoding=encoding, filename=filename, declared_title=declared_title
    )


def is_gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether the process has ended (a zombie waiting for a reaper has ended too)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.fixture(scope="module")
def offline_worker() -> Iterator[ParseWorker]:
    """One worker for the module whose child runs under the tests' network guard.

    `spawn` instead of the fork server: the child then imports unstructured and loads its
    models itself, after the guard is in place, so any attempt to reach the network on the way
    fails its start (the fork server does the same work unguarded, before any initializer).
    """
    with ParseWorker(60.0, initializer=install_network_guard, start_method="spawn") as worker:
        yield worker


@pytest.mark.parametrize(("relative_path", "mime_type"), SAMPLE_DOCUMENTS)
def test_worker_result_equals_the_in_process_result(
    offline_worker: ParseWorker, relative_path: str, mime_type: str
) -> None:
    content = (SAMPLE_CORPUS_DIR / relative_path).read_bytes()
    in_process = parse_document(content, mime_type, filename=relative_path)
    in_worker = offline_worker.parse(content, mime_type, filename=relative_path)
    assert isinstance(in_worker, ParsedDocument)
    assert in_worker.title == in_process.title
    assert in_worker.elements == in_process.elements
    assert in_worker.elements


def test_parse_errors_come_back_with_their_code_and_keep_the_child(
    offline_worker: ParseWorker,
) -> None:
    offline_worker.parse(SHORT_MARKDOWN, "text/markdown")
    child = offline_worker.pid
    deep = b"<html><body>" + b"<div>" * 300 + b"Deep." + b"</div>" * 300 + b"</body></html>"
    with pytest.raises(ParseError) as raised:
        offline_worker.parse(deep, "text/html", filename="deep.html")
    assert raised.value.code == "markup_too_deep"
    with pytest.raises(ParseError) as raised:
        offline_worker.parse(b"caf\xe9", "text/plain")
    assert raised.value.code == "parser_error"
    assert "UnicodeDecodeError" in raised.value.message
    assert offline_worker.pid == child


def test_a_document_over_the_limit_is_parse_timeout_and_the_next_one_parses() -> None:
    with ParseWorker(LIMIT_S) as worker:
        worker.parse(SHORT_MARKDOWN, "text/markdown")
        killed = worker.pid
        assert killed is not None
        started = time.monotonic()
        with pytest.raises(ParseError) as raised:
            worker.parse(PATHOLOGICAL_MARKDOWN, "text/markdown", filename="brackets.md")
        elapsed = time.monotonic() - started
        assert raised.value.code == "parse_timeout"
        assert "per-document limit of 1 s" in raised.value.message
        assert "RAG_PARSE_TIMEOUT_SECONDS" in raised.value.message
        assert elapsed < LIMIT_S + 5
        assert is_gone(killed, within_s=0.5)
        assert worker.pid is None
        after = worker.parse(SHORT_MARKDOWN, "text/markdown")
        assert after.title == "Ready"
        assert worker.pid not in (None, killed)
        assert worker.children_started == 2


@pytest.mark.parametrize("signal_name", ["SIGSEGV", "SIGKILL"])
def test_a_crashing_parser_is_parser_crashed_and_the_next_document_parses(
    signal_name: str,
) -> None:
    with ParseWorker(30.0, parse_function=parse_or_die) as worker:
        assert worker.parse(SHORT_MARKDOWN, "text/markdown").title == "Ready"
        crashed = worker.pid
        assert crashed is not None
        with pytest.raises(ParseError) as raised:
            worker.parse(f"die:{signal_name}".encode(), "text/markdown")
        assert raised.value.code == "parser_crashed"
        assert f"died of {signal_name}" in raised.value.message
        assert is_gone(crashed, within_s=0.5)
        assert worker.parse(SHORT_MARKDOWN, "text/markdown").title == "Ready"
        assert worker.pid not in (None, crashed)


def test_a_child_that_died_between_documents_is_replaced_without_blaming_a_document() -> None:
    with ParseWorker(30.0) as worker:
        worker.parse(SHORT_MARKDOWN, "text/markdown")
        idle = worker.pid
        assert idle is not None
        os.kill(idle, signal.SIGKILL)
        assert is_gone(idle)
        assert worker.parse(SHORT_MARKDOWN, "text/markdown").title == "Ready"
        assert worker.pid not in (None, idle)


def fail_to_start() -> None:
    raise RuntimeError("no parser in this environment")


def test_a_worker_that_cannot_start_fails_loudly_instead_of_quarantining() -> None:
    # Blaming every document for a broken installation would quarantine the whole corpus.
    with ParseWorker(30.0, initializer=fail_to_start) as worker:
        with pytest.raises(ParseWorkerError, match="no parser in this environment"):
            worker.parse(SHORT_MARKDOWN, "text/markdown")
        assert worker.pid is None


def test_close_and_every_exit_of_the_block_stop_the_child() -> None:
    worker = ParseWorker(30.0)
    worker.parse(SHORT_MARKDOWN, "text/markdown")
    child = worker.pid
    assert child is not None and not is_gone(child, within_s=0)
    worker.close()
    assert is_gone(child, within_s=0.5)
    assert worker.pid is None

    with pytest.raises(RuntimeError, match="between documents"), ParseWorker(30.0) as worker:
        worker.parse(SHORT_MARKDOWN, "text/markdown")
        child = worker.pid
        raise RuntimeError("the asset failed between documents")
    assert child is not None and is_gone(child, within_s=0.5)


class RunTerminatedError(Exception):
    """Stands in for Dagster's DagsterExecutionInterruptedError."""


def terminate_run(signum: int, frame: FrameType | None) -> None:
    raise RunTerminatedError


def test_an_interrupt_in_the_middle_of_a_document_stops_the_child() -> None:
    # What Dagster does on run termination: an exception in the step while it waits.
    previous = signal.signal(signal.SIGALRM, terminate_run)
    child = None
    try:
        with pytest.raises(RunTerminatedError), ParseWorker(60.0) as worker:
            worker.parse(SHORT_MARKDOWN, "text/markdown")
            child = worker.pid
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            worker.parse(PATHOLOGICAL_MARKDOWN, "text/markdown")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert child is not None and is_gone(child, within_s=0.5)


# An owner process that starts a worker, prints the parse worker's pid and those of all the
# processes it started, then waits on a document that would take minutes (40 KB of `[`).
OWNER = """
import psutil
from rag_pipeline_tests.conftest import install_network_guard
install_network_guard()
from rag_pipeline.lib.parse_worker import ParseWorker
worker = ParseWorker(600.0)
worker.parse(b"# Ready\\n\\nThe worker is up.", "text/markdown")
descendants = [p.pid for p in psutil.Process().children(recursive=True)]
print(worker.pid, *descendants, flush=True)
worker.parse(b"[" * 40000, "text/markdown")
"""


def test_an_owner_killed_mid_document_leaves_no_process_behind() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        worker, *descendants = [int(pid) for pid in owner.stdout.readline().split()]
        # The parse worker, the fork server it came from and multiprocessing's resource tracker.
        assert worker in descendants and len(descendants) == 3, (worker, descendants)
        time.sleep(1.0)  # well inside the document
        assert not is_gone(worker, within_s=0)
    finally:
        owner.kill()
        owner.wait()
    left = [pid for pid in descendants if not is_gone(pid, within_s=15)]
    assert not left, f"processes still running after their owner was killed: {left}"


def write_yaml(path: Path, data: object) -> None:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_pipeline_quarantines_a_slow_document_as_parse_timeout_and_serves_the_others(
    tmp_path: Path, database_url: str, instance: dg.DagsterInstance
) -> None:
    folder = tmp_path / "handbook"
    folder.mkdir()
    # Sorted first, so the documents after it are parsed by the replacement child.
    (folder / "a-brackets.md").write_bytes(PATHOLOGICAL_MARKDOWN)
    (folder / "b-onboarding.md").write_text(
        "# Onboarding\n\nNew starters collect their badge from the reception desk on the first "
        "morning and meet their buddy for coffee.\n"
    )
    (folder / "c-vpn.txt").write_text(
        "VPN access\n\nThe VPN portal address is vpn.example.test and it needs the hardware "
        "token issued by the service desk.\n"
    )
    write_yaml(
        folder / "_metadata.yaml", {"defaults": {"tenant": "acme", "acl": ["group:everyone"]}}
    )
    sources_file = tmp_path / "sources.yaml"
    write_yaml(
        sources_file, {"sources": [{"name": "handbook", "path": "handbook", "tenants": ["acme"]}]}
    )
    directory = tmp_path / "directory.yaml"
    write_yaml(directory, {"users": {"erin": {"tenant": "acme", "groups": ["everyone"]}}})
    resources = make_resources(database_url, sources_file)
    resources["parsing"] = ParsingResource(timeout_seconds=2.0)

    run = run_pipeline(instance, defs=build_defs(resources))

    assert run.succeeded, run
    parse_metadata = run.metadata["parsed_documents[handbook]"]
    assert parse_metadata["documents_parsed"] == 2
    assert parse_metadata["documents_quarantined"] == 1
    assert parse_metadata["parse_timeout_s"] == 2.0
    with database.connection(database_url) as conn:
        quarantined = conn.execute(
            "SELECT doc_id, stage, reason_code, reason FROM rag.quarantine"
        ).fetchall()
        parsed = {row[0] for row in conn.execute("SELECT doc_id FROM rag.parsed_documents")}
        access = load_user_access(directory, "erin")
        embedder = resources["embedder"].embedder()
        badge = search(conn, embedder, "where do new starters collect their badge", access)
        vpn = search(conn, embedder, "VPN portal address", access)
    [(doc_id, stage, reason_code, reason)] = quarantined
    assert (doc_id, stage, reason_code) == ("handbook:a-brackets.md", "parse", "parse_timeout")
    assert "limit of 2 s" in reason and "RAG_PARSE_TIMEOUT_SECONDS" in reason
    assert parsed == {"handbook:b-onboarding.md", "handbook:c-vpn.txt"}
    assert badge and badge[0].doc_id == "handbook:b-onboarding.md"
    assert vpn and vpn[0].doc_id == "handbook:c-vpn.txt"
    assert "handbook:a-brackets.md" not in {hit.doc_id for hit in badge + vpn}

    # The same limit again: the slow document is not retried (a no-op run stays cheap).
    again = run_pipeline(instance, defs=build_defs(resources))
    assert again.metadata["parsed_documents[handbook]"]["documents_parsed"] == 0
    # A raised limit, as the quarantine message advises, gives it another try, which succeeds.
    resources["parsing"] = ParsingResource(timeout_seconds=300.0)
    raised = run_pipeline(instance, defs=build_defs(resources))
    assert raised.metadata["parsed_documents[handbook]"]["documents_parsed"] == 1
    with database.connection(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM rag.quarantine").fetchone()[0] == 0
        assert (
            conn.execute(
                "SELECT count(*) FROM rag.parsed_documents WHERE doc_id = 'handbook:a-brackets.md'"
            ).fetchone()[0]
            == 1
        )
