"""Erasure on the small corpus (fake embedder, no Dagster): keys, shared rows, dry run, errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from rag_pipeline.lib import database, erasure, erasure_records, erasure_scan, index_versions
from rag_pipeline.lib.erasure_records import ErasureError
from rag_pipeline_tests.small_corpus import DOCS, build, ingest
from rag_pipeline_tests.test_erasure import dagster_database

UNIQUE = (
    "Quarterly audit of the Vexmoor ledger. The Vexmoor ledger is reconciled by Odalys Pemberton "
    "every quarter, and the reconciliation notes stay in the locked cabinet on floor nine."
)
CORPUS = {**DOCS, "audit.txt": ("acme", ("group:staff",), UNIQUE)}


def _row_counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = conn.execute(
        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'rag' AND c.relkind = 'r' ORDER BY relname"
    ).fetchall()
    return {
        name: conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("rag", name))
        ).fetchone()[0]
        for (name,) in tables
    }


def _oracle(conn: psycopg.Connection, word: str) -> list[str]:
    """Tables with any row whose whole text form holds `word`, or a bytea holding it."""
    found = []
    for schema, table in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    ).fetchall():
        query = sql.SQL("SELECT count(*) FROM {t} r WHERE r::text ILIKE %s").format(
            t=sql.Identifier(schema, table)
        )
        if conn.execute(query, (f"%{word}%",)).fetchone()[0]:
            found.append(f"{schema}.{table}")
    for schema, table, column in conn.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns"
        " WHERE data_type = 'bytea' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall():
        query = sql.SQL("SELECT count(*) FROM {t} WHERE position(%s IN {c}) > 0").format(
            t=sql.Identifier(schema, table), c=sql.Identifier(column)
        )
        if conn.execute(query, (word.encode(),)).fetchone()[0]:
            found.append(f"{schema}.{table}.{column}")
    return found


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        ingest(connection, CORPUS)
        # A second source holding kafka.txt's exact bytes under the same name: same chunks'
        # texts, hence the same embeddings and the same blob.
        ingest(connection, {"kafka.txt": DOCS["kafka.txt"]}, source="twin")
        build(connection)
        yield connection


def test_fragments_are_windows_of_the_text_minus_what_other_documents_hold(
    conn: psycopg.Connection,
) -> None:
    fragments = erasure.collect_fragments(conn, ["s:audit.txt"])
    assert fragments and all(fragment in UNIQUE for fragment in fragments)
    assert any("Vexmoor" in fragment for fragment in fragments)
    # kafka.txt's text is also in the twin source: nothing of it is distinctive.
    assert erasure.collect_fragments(conn, ["s:kafka.txt"]) == []


def test_unknown_ids_owners_and_missing_reason_are_clear_errors(conn: psycopg.Connection) -> None:
    with pytest.raises(ErasureError, match=r"unknown document id\(s\): s:nope\.txt"):
        erasure.resolve_targets(conn, ["s:audit.txt", "s:nope.txt"])
    with pytest.raises(ErasureError, match="must be a principal"):
        erasure.resolve_targets(conn, owner="alice")
    with pytest.raises(ErasureError, match="no document is owned by 'user:zed'"):
        erasure.resolve_targets(conn, owner="user:zed")
    with pytest.raises(ErasureError, match="--doc ID"):
        erasure.resolve_targets(conn)
    targets = erasure.resolve_targets(conn, ["s:audit.txt"])
    with pytest.raises(ErasureError, match="--reason"):
        erasure.erase_documents(conn, targets, " ", "dpo")


def test_dry_run_counts_exactly_and_changes_nothing(conn: psycopg.Connection) -> None:
    before = _row_counts(conn)
    targets = erasure.resolve_targets(conn, ["s:audit.txt"])
    dry = erasure.erase_documents(conn, targets, "request 1", "dpo", dry_run=True)
    assert _row_counts(conn) == before
    assert dry.dry_run and dry.documents[0].rows_removed["rag.chunks"] >= 1
    real = erasure.erase_documents(conn, targets, "request 1", "dpo")
    assert real.documents[0].rows_removed == dry.documents[0].rows_removed
    after = _row_counts(conn)
    assert after["chunks"] == before["chunks"] - dry.documents[0].rows_removed["rag.chunks"]


def test_erasure_removes_the_text_everywhere_and_keeps_shared_rows(
    conn: psycopg.Connection,
) -> None:
    version = index_versions.active_version_id(conn)
    kafka_hashes = conn.execute(
        "SELECT text_hash FROM rag.chunks WHERE doc_id = 's:kafka.txt'"
    ).fetchall()
    kafka_blob = conn.execute(
        "SELECT content_hash FROM rag.documents WHERE doc_id = 's:kafka.txt'"
    ).fetchone()[0]
    assert _oracle(conn, "Vexmoor"), "the test must start with the text stored"

    targets = erasure.resolve_targets(conn, ["s:audit.txt", "s:kafka.txt"])
    report = erasure.erase_documents(conn, targets, "GDPR art. 17", "dpo")

    assert report.scanned and report.hits == []
    assert _oracle(conn, "Vexmoor") == []
    assert _oracle(conn, "Pemberton") == []
    # The twin still holds kafka's text: its blob and embeddings stay.
    assert (
        conn.execute(
            "SELECT count(*) FROM rag.source_blobs WHERE content_hash = %s", (kafka_blob,)
        ).fetchone()[0]
        == 1
    )
    for (text_hash,) in kafka_hashes:
        assert (
            conn.execute(
                "SELECT count(*) FROM rag.embeddings WHERE text_hash = %s", (text_hash,)
            ).fetchone()[0]
            == 1
        )
    # The version keeps serving the rest, with counts and BM25 statistics of what is left.
    counts = conn.execute(
        "SELECT document_count, chunk_count FROM rag.index_versions WHERE version_id = %s",
        (version,),
    ).fetchone()
    members = conn.execute(
        "SELECT count(DISTINCT doc_id), count(*) FROM rag.index_version_chunks"
        " WHERE version_id = %s",
        (version,),
    ).fetchone()
    assert counts == members
    assert "s:audit.txt" not in {
        row[0]
        for row in conn.execute(
            "SELECT doc_id FROM rag.index_version_chunks WHERE version_id = %s", (version,)
        )
    }
    lexical = conn.execute(
        "SELECT sum(chunk_count) FROM rag.index_version_lexical WHERE version_id = %s", (version,)
    ).fetchone()[0]
    assert lexical == members[1]
    assert (
        conn.execute(
            "SELECT count(*) FROM rag.index_version_terms WHERE lexeme = 'vexmoor'"
        ).fetchone()[0]
        == 0
    )
    # Tombstones: no title, no text, no content hash.
    stones = erasure_records.tombstones(conn)
    assert {stone["doc_id"] for stone in stones} == {"s:audit.txt", "s:kafka.txt"}
    serialized = json.dumps(stones, default=str)
    assert "Vexmoor" not in serialized and kafka_blob not in serialized
    assert all(stone["rows_removed"]["rag.documents"] == 1 for stone in stones)
    with pytest.raises(ErasureError, match="already erased"):
        erasure.resolve_targets(conn, ["s:audit.txt"])


def test_scan_finds_each_stored_spelling(conn: psycopg.Connection) -> None:
    """The scan is what erasure is judged by: it must see JSON-escaped and flattened copies."""
    text = 'Line one of the Zyzzogeton memo,\nwith a quote " and café au lait on line two.'
    conn.execute("CREATE TABLE rag.scan_probe (j jsonb, t text, a text[], b bytea)")
    fragments = erasure_scan.text_fragments([text])
    assert erasure_scan.scan(conn, fragments, "rag", exclude_tables=()) == []
    conn.execute(
        "INSERT INTO rag.scan_probe VALUES (%s::jsonb, NULL, NULL, NULL)",
        (json.dumps({"x": text}),),
    )
    conn.execute(
        "INSERT INTO rag.scan_probe VALUES (NULL, %s, NULL, NULL)",
        ("| doc | " + erasure_scan.flatten(text).replace("|", "\\|") + " |",),
    )
    conn.execute("INSERT INTO rag.scan_probe VALUES (NULL, NULL, %s, NULL)", ([text],))
    conn.execute("INSERT INTO rag.scan_probe VALUES (NULL, NULL, NULL, %s)", (text.encode(),))
    hits = {
        hit.column: hit.rows
        for hit in erasure_scan.scan(conn, fragments, "rag")
        if hit.table == "rag.scan_probe"
    }
    assert hits == {"j": 1, "t": 1, "a": 1, "b": 1}
    rewritten = erasure_scan.scrub_database(conn, fragments, exclude_tables=())
    assert rewritten == {"rag.scan_probe.j": 1, "rag.scan_probe.t": 1}
    row = conn.execute("SELECT t FROM rag.scan_probe WHERE t IS NOT NULL").fetchone()
    assert row[0] == "| doc | [erased] |"


def test_scrub_keeps_dagster_events_deserializable() -> None:
    import dagster as dg
    from dagster._serdes import deserialize_value, serialize_value

    text = "Escort duty for contractor Quillon Marbury lasts the whole visit, no exceptions made."
    preview = "| doc_id | first chunk |\n|---|---|\n| s:a | " + text + " |\n| s:b | other text |"
    value = dg.AssetMaterialization("chunks", metadata={"preview": dg.MetadataValue.md(preview)})
    serialized = serialize_value(value)
    scrubbed = erasure_scan.scrub_value(
        serialized, erasure_scan.needles(erasure_scan.text_fragments([text])), frozenset()
    )
    restored = deserialize_value(scrubbed, dg.AssetMaterialization)
    md = restored.metadata["preview"].value
    assert "Quillon" not in md and "| s:a | [erased] |" in md and "| s:b | other text |" in md


def test_erasing_by_owner_takes_every_document_of_that_owner(conn: psycopg.Connection) -> None:
    conn.execute(
        "UPDATE rag.documents SET owner = 'user:odalys'"
        " WHERE doc_id IN ('s:audit.txt', 's:vpn.txt')"
    )
    targets = erasure.resolve_targets(conn, owner="user:odalys")
    assert [target.doc_id for target in targets] == ["s:audit.txt", "s:vpn.txt"]
    report = erasure.erase_documents(conn, targets, "owner left", "dpo")
    assert [document.doc_id for document in report.documents] == ["s:audit.txt", "s:vpn.txt"]
    assert report.hits == []
    remaining = {row[0] for row in conn.execute("SELECT doc_id FROM rag.documents")}
    assert "s:audit.txt" not in remaining and "s:vpn.txt" not in remaining
    assert "s:kafka.txt" in remaining
    # One request, one id, one transaction.
    assert len({stone["request_id"] for stone in erasure_records.tombstones(conn)}) == 1


def test_reverify_scrubs_and_reports_a_copy_made_after_the_erasure(
    conn: psycopg.Connection,
) -> None:
    targets = erasure.resolve_targets(conn, ["s:audit.txt"])
    erasure.erase_documents(conn, targets, "request 7", "dpo")
    # A copy the erasure could not know about: a note pasted into a JSON detail afterwards.
    conn.execute(
        "UPDATE rag.index_versions SET diff = %s::jsonb",
        (json.dumps({"note": "pasted: " + UNIQUE}),),
    )
    assert _oracle(conn, "Vexmoor") == ["rag.index_versions"]
    report = erasure.reverify(conn, "s:audit.txt", UNIQUE, dagster=None)
    assert report.hits == [] and report.documents[0].rows_removed == {
        "rag.index_versions.diff (rewritten)": 1
    }
    assert _oracle(conn, "Vexmoor") == []
    stone = erasure_records.tombstones(conn, "s:audit.txt")[0]
    assert stone["verified_at"] is not None and stone["verification"]["hits"] == []
    with pytest.raises(ErasureError, match="no standing erasure"):
        erasure.reverify(conn, "s:kafka.txt", UNIQUE, dagster=None)


def test_a_lifted_erasure_lets_the_document_back_in(conn: psycopg.Connection) -> None:
    targets = erasure.resolve_targets(conn, ["s:audit.txt"])
    erasure.erase_documents(conn, targets, "request 8", "dpo")
    ingest(conn, CORPUS)
    assert erasure_records.standing_erasures(conn, "s") == {"s:audit.txt"}
    assert (
        conn.execute("SELECT count(*) FROM rag.documents WHERE doc_id = 's:audit.txt'").fetchone()[
            0
        ]
        == 0
    )
    with pytest.raises(ErasureError, match="--reason"):
        erasure_records.lift_erasure(conn, "s:audit.txt", "dpo", "")
    erasure_records.lift_erasure(conn, "s:audit.txt", "dpo", "withdrawn")
    ingest(conn, CORPUS)
    assert (
        conn.execute("SELECT count(*) FROM rag.chunks WHERE doc_id = 's:audit.txt'").fetchone()[0]
        >= 1
    )
    with pytest.raises(ErasureError, match="no standing erasure"):
        erasure_records.lift_erasure(conn, "s:audit.txt", "dpo", "again")


def test_dagster_event_log_is_scrubbed_and_still_readable(
    conn: psycopg.Connection, pg_data_dir: Path
) -> None:
    import dagster as dg

    from rag_pipeline.defs.markdown import excerpt, table

    url = dagster_database(pg_data_dir)
    plain = url.replace("postgresql+psycopg2://", "postgresql://")

    @contextlib.contextmanager
    def dagster() -> Iterator[psycopg.Connection]:
        with psycopg.connect(plain, autocommit=True) as dagster_conn:
            yield dagster_conn

    preview = table(
        ("doc_id", "first chunk"),
        [
            ("s:audit.txt", excerpt(UNIQUE, 100)),
            ("s:kafka.txt", excerpt(DOCS["kafka.txt"][2], 100)),
        ],
    )
    overrides = {"storage": {"postgres": {"postgres_url": url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("chunks", metadata={"preview": dg.MetadataValue.md(preview)})
        )
        assert "public.event_logs" in _oracle_url(plain, "Vexmoor")
        targets = erasure.resolve_targets(conn, ["s:audit.txt"])
        report = erasure.erase_documents(conn, targets, "request 9", "dpo", dagster=dagster)
        assert report.clean and report.dagster and report.dagster["public.event_logs.event"] == 1
        assert _oracle_url(plain, "Vexmoor") == []
        event = instance.get_latest_materialization_event(dg.AssetKey("chunks"))
        assert event is not None and event.asset_materialization is not None
        shown = event.asset_materialization.metadata["preview"].value
        assert "| s:audit.txt | [erased] |" in shown and "Kafka consumer lag" in shown
        # Idempotent: a second pass finds nothing more to rewrite.
        assert erasure_records.scrub_dagster(dagster, erasure_scan.text_fragments([UNIQUE])) == {}


def _oracle_url(url: str, word: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as other:
        return _oracle(other, word)


def test_writers_in_flight_cannot_bring_an_erased_document_back(conn: psycopg.Connection) -> None:
    targets = erasure.resolve_targets(conn, ["s:audit.txt"])
    erasure.erase_documents(conn, targets, "request 10", "dpo")
    # A parse step that listed the document before the erasure writes its result afterwards.
    conn.execute(
        "INSERT INTO rag.parsed_documents (doc_id, content_hash, parser_key, title, elements,"
        " element_count, text_chars, duration_ms)"
        " VALUES ('s:audit.txt', 'h', 'p', 't', %s::jsonb, 1, 10, 1)",
        (json.dumps([{"text": UNIQUE}]),),
    )
    assert (
        conn.execute(
            "SELECT count(*) FROM rag.parsed_documents WHERE doc_id = 's:audit.txt'"
        ).fetchone()[0]
        == 0
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="is erased"):
        conn.execute(
            "INSERT INTO rag.documents (doc_id, source, uri, relative_path, content_hash,"
            " metadata_hash, byte_size, tenant, acl_principals, updated_at)"
            " VALUES ('s:audit.txt', 's', 'u', 'audit.txt', 'h', 'm', 1, 'acme', '{}', now())"
        )
