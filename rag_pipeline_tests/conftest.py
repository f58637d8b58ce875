"""Shared fixtures: no internet, one embedded PostgreSQL per session, a fresh database per test."""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

import rag_pipeline  # noqa: F401  (offline environment before anything else is imported)
from rag_pipeline.defs.resources import (
    ChunkingResource,
    EmbedderResource,
    EvaluationResource,
    IndexPolicyResource,
    ParsingResource,
    PostgresResource,
    SourceCatalogResource,
)
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import SAMPLE_CORPUS_DIR
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline_tests.fakes import HashedEmbedderResource

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# The longest test files (a minute or more each at load 1), scheduled first: `make test` runs the
# suite on two pytest-xdist workers, one file per worker at a time (`--dist loadfile`, so a
# module's fixtures are built once, in this order with `--no-loadscope-reorder`), and a long file
# started last would leave the other worker idle at the end.
LONGEST_FILES_FIRST = (
    "test_crash_safety.py",
    "test_permission_fuzz.py",
    "test_permission_matrix.py",
    "test_erasure.py",
    "test_index_versions.py",
    "test_pipeline.py",
    "test_answer.py",
)


class NetworkBlockedError(OSError):
    """A test tried to reach the network; everything must work offline."""


def _guard(address: Any) -> None:
    if isinstance(address, tuple) and address and str(address[0]) not in LOOPBACK:
        raise NetworkBlockedError(f"outbound connection to {address!r} blocked in tests")


def install_network_guard() -> Callable[[], None]:
    """Refuse every non-loopback connection and name lookup; returns a function that undoes it.

    Unix sockets (the embedded PostgreSQL) pass. Also installed in the subprocesses tests start.
    """
    original = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "sendto": socket.socket.sendto,
        "getaddrinfo": socket.getaddrinfo,
    }

    def connect(self: socket.socket, address: Any) -> Any:
        _guard(address)
        return original["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        _guard(address)
        return original["connect_ex"](self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        _guard(args[-1])
        return original["sendto"](self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and str(host) not in LOOPBACK:
            raise NetworkBlockedError(f"name lookup of {host!r} blocked in tests")
        return original["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]

    def restore() -> None:
        socket.socket.connect = original["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = original["connect_ex"]  # type: ignore[method-assign]
        socket.socket.sendto = original["sendto"]  # type: ignore[method-assign]
        socket.getaddrinfo = original["getaddrinfo"]  # type: ignore[assignment]

    return restore


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of `LONGEST_FILES_FIRST` first, in that order; the rest keep their order."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return (
            LONGEST_FILES_FIRST.index(name)
            if name in LONGEST_FILES_FIRST
            else len(LONGEST_FILES_FIRST)
        )

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def block_outbound_network() -> Iterator[None]:
    """No test may reach the internet: everything must work offline."""
    restore = install_network_guard()
    yield
    restore()


def server_data_dir() -> Path:
    """A directory for an embedded server, outside pytest's temporary root.

    The server runs as the `pgserver` OS user and needs to traverse the path's parents; pytest
    resets its root (`/tmp/pytest-of-<user>`) to mode 0700 whenever another pytest process starts,
    which would lock a running server out of its own data directory.
    """
    path = Path(tempfile.mkdtemp(prefix="rag-pipeline-pg-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_data_dir() -> Iterator[Path]:
    """One embedded PostgreSQL for the whole session, stopped and removed at the end."""
    data_dir = server_data_dir()
    database.start_embedded_server(data_dir)
    yield data_dir
    database.stop_embedded_server(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def create_database(pg_data_dir: Path) -> str:
    """A new, migrated database on the session server; returns its URL.

    Migrated on its own, never copied from a template: migrations generate per-database secrets
    (`rag.query_log_secret`) that a copy would share.
    """
    admin_url = database.start_embedded_server(pg_data_dir)
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = admin_url.replace(f"/{database.PIPELINE_DATABASE}?", f"/{name}?")
    with database.connection(url):
        pass
    return url


def copy_corpus(target: Path) -> Path:
    shutil.copytree(SAMPLE_CORPUS_DIR, target)
    return target


@pytest.fixture()
def database_url(pg_data_dir: Path) -> str:
    """A fresh, migrated database on the session server."""
    return create_database(pg_data_dir)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A private copy of the bundled sample corpus that a test may edit."""
    return copy_corpus(tmp_path / "corpus")


def make_resources(
    database_url: str, sources_file: Path, *, real_model: bool = False, **policy: Any
) -> dict[str, Any]:
    """The pipeline's resources on a test database, with the hashed fake embedder.

    `real_model=True` gives the shipped model, for tests marked `real_model`: those whose
    assertions need its semantics. Search with `resources["embedder"].embedder()` (in-process
    CLI commands: `cli_embeds_with`), so that queries are embedded by the model the index was
    built with; any other model is refused with "embedded with".
    """
    return {
        "postgres": PostgresResource(database_url=database_url),
        "catalog": SourceCatalogResource(sources_file=str(sources_file)),
        "embedder": EmbedderResource() if real_model else HashedEmbedderResource(),
        "chunking": ChunkingResource(),
        "parsing": ParsingResource(),
        "index_policy": IndexPolicyResource(**policy),
        # No golden set: the quality gate passes and says so (tests that need one set it).
        "evaluation": EvaluationResource(),
    }


def in_memory_instance() -> dg.DagsterInstance:
    """A Dagster instance whose run and event storage live in memory, for whole-corpus builds.

    The sqlite files of `dg.instance_for_test` cost a new connection per event: a no-op run of the
    sample corpus took three times as long on them. Not persistent: no instance ref, so nothing
    that reopens the instance (a schedule context) can use it.
    """
    return dg.DagsterInstance.ephemeral(settings={"telemetry": {"enabled": False}})


def cli_embeds_with(monkeypatch: pytest.MonkeyPatch, embedder: Embedder) -> None:
    """In-process CLI commands embed queries with `embedder` (the one the test index was built
    with) instead of loading the configured model."""
    from rag_pipeline.cli import common

    monkeypatch.setattr(common, "_embedder", lambda settings: embedder)


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in memory (`in_memory_instance`) for materializing the graph."""
    with in_memory_instance() as test_instance:
        yield test_instance


@pytest.fixture()
def persistent_instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on sqlite files: schedule contexts and other out-of-run readers need
    an instance ref, which an in-memory instance does not have."""
    with dg.instance_for_test() as test_instance:
        yield test_instance
