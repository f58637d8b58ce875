"""Row-level security on the serving tables (sql/015): defence in depth behind the serving rule.

As `rag_serving` with a tenant set, a query without any WHERE sees only that tenant's rows; with
no tenant set, none. Serving (retrieval, lineage) runs that way, so even a serving rule that
forgot its tenant condition cannot hand out another tenant's chunks.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.lineage import UnknownChunkError, trace_chunk
from rag_pipeline.lib.retrieval import LEXICAL, RetrievalOptions, retrieve, vector_search
from rag_pipeline.lib.retrieval.session import (
    ServingAccessError,
    serving_transaction,
    set_reader,
)
from rag_pipeline_tests.small_corpus import DOCS, EMBEDDER, OUTSIDER, STAFF, build, ingest

# Table -> how to count its rows of tenant `%(tenant)s` as the pipeline's own (unrestricted)
# user; the serving role counts the same table with no condition at all.
TENANT_ROWS = {
    "rag.index_version_chunks": "SELECT count(*) FROM rag.index_version_chunks"
    " WHERE tenant = %(tenant)s",
    "rag.documents": "SELECT count(*) FROM rag.documents WHERE tenant = %(tenant)s",
    "rag.chunks": "SELECT count(*) FROM rag.chunks c JOIN rag.documents d USING (doc_id)"
    " WHERE d.tenant = %(tenant)s",
    "rag.embeddings": "SELECT count(*) FROM rag.embeddings e WHERE EXISTS (SELECT 1"
    " FROM rag.chunks c JOIN rag.documents d USING (doc_id)"
    " WHERE c.text_hash = e.text_hash AND d.tenant = %(tenant)s)",
    "rag.index_version_terms": "SELECT count(*) FROM rag.index_version_terms"
    " WHERE tenant = %(tenant)s",
    "rag.index_version_lexical": "SELECT count(*) FROM rag.index_version_lexical"
    " WHERE tenant = %(tenant)s",
    "rag.document_events": "SELECT count(*) FROM rag.document_events e"
    " JOIN rag.documents d USING (doc_id) WHERE d.tenant = %(tenant)s",
    "rag.servable_documents": "SELECT count(*) FROM rag.servable_documents"
    " WHERE tenant = %(tenant)s",
}
# The same tables, with no WHERE: what a query that forgot the filter would run.
UNFILTERED = {table: f"SELECT count(*) FROM {table}" for table in TENANT_ROWS}


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


@pytest.fixture()
def served(conn: psycopg.Connection) -> int:
    ingest(conn, DOCS)
    return build(conn).version_id


def expected_counts(conn: psycopg.Connection, tenant: str) -> dict[str, int]:
    return {
        table: conn.execute(query, {"tenant": tenant}).fetchone()[0]
        for table, query in TENANT_ROWS.items()
    }


def unfiltered_counts(conn: psycopg.Connection) -> dict[str, int]:
    return {table: conn.execute(query).fetchone()[0] for table, query in UNFILTERED.items()}


def test_an_unfiltered_query_sees_only_the_readers_tenant(
    conn: psycopg.Connection, served: int
) -> None:
    everything = unfiltered_counts(conn)
    for access in (STAFF, OUTSIDER):
        expected = expected_counts(conn, access.tenant)
        # Both tenants have rows in every table, so the test can tell filtered from unfiltered.
        assert all(0 < expected[table] < everything[table] for table in TENANT_ROWS), expected
        with serving_transaction(conn, access):
            assert conn.execute("SELECT current_user").fetchone()[0] == "rag_serving"
            assert unfiltered_counts(conn) == expected


def test_a_transaction_without_a_tenant_sees_nothing(conn: psycopg.Connection, served: int) -> None:
    # Never set in this session: the setting does not exist at all.
    with conn.transaction():
        conn.execute("SET LOCAL ROLE rag_serving")
        assert set(unfiltered_counts(conn).values()) == {0}
    # Set by an earlier transaction, so it now reads '' instead of NULL: still nothing.
    with serving_transaction(conn, STAFF):
        pass
    assert conn.execute("SELECT current_setting('rag.tenant', true)").fetchone()[0] == ""
    with conn.transaction():
        conn.execute("SET LOCAL ROLE rag_serving")
        assert set(unfiltered_counts(conn).values()) == {0}
    # A tenant that exists nowhere.
    with serving_transaction(conn, UserAccess("eve", "initech", ("group:staff",))):
        assert set(unfiltered_counts(conn).values()) == {0}


def test_the_serving_role_cannot_read_raw_bytes_or_write(
    conn: psycopg.Connection, served: int
) -> None:
    role = conn.execute(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'rag_serving'"
    ).fetchone()
    assert role == (False, False, False)
    forbidden = [
        "SELECT count(*) FROM rag.source_blobs",
        "SELECT count(elements) FROM rag.parsed_documents",
        "SELECT count(*) FROM rag.live_documents",
        "DELETE FROM rag.documents",
        "UPDATE rag.index_version_chunks SET tenant = 'acme'",
    ]
    for statement in forbidden:
        # A read-write transaction: the role, not READ ONLY, must refuse the writes.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            set_reader(conn, STAFF)
            conn.execute(statement)
    # Titles are readable (search hits show them), through the same tenant filter.
    with serving_transaction(conn, OUTSIDER):
        titles = conn.execute("SELECT title FROM rag.parsed_documents").fetchall()
    assert titles == [("globex-vpn",)]


def test_role_and_reader_end_with_the_serving_block(conn: psycopg.Connection, served: int) -> None:
    connecting_user = conn.execute("SELECT current_user").fetchone()[0]
    with serving_transaction(conn, STAFF):
        pass
    assert conn.execute("SELECT current_user").fetchone()[0] == connecting_user
    # Nested in a writer's transaction: the writer is itself again afterwards and can write.
    with conn.transaction():
        conn.execute("UPDATE rag.documents SET title = 'renamed' WHERE doc_id = 's:vpn.txt'")
        with serving_transaction(conn, OUTSIDER):
            assert conn.execute("SELECT count(*) FROM rag.documents").fetchone()[0] == 1
        assert conn.execute("SELECT current_user").fetchone()[0] == connecting_user
        assert conn.execute("SELECT current_setting('rag.tenant', true)").fetchone()[0] == ""
        conn.execute("UPDATE rag.documents SET title = 'vpn' WHERE doc_id = 's:vpn.txt'")


def test_a_reader_without_a_tenant_is_refused(conn: psycopg.Connection) -> None:
    for access in (
        UserAccess("nobody", "", ("group:staff",)),
        UserAccess("nobody", "   ", ("group:staff",)),
        UserAccess("nobody", "acme", ("group:staff", "")),
        UserAccess("nobody", "acme", "group:staff"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ServingAccessError), serving_transaction(conn, access):
            pass
        with pytest.raises(ServingAccessError), conn.transaction():
            set_reader(conn, access)


def break_the_serving_rule(conn: psycopg.Connection) -> None:
    """`rag.readable_chunks` and `rag.readable_documents` without any tenant or ACL test."""
    conn.execute(
        """
        CREATE OR REPLACE FUNCTION rag.readable_documents(p_tenant text, p_principals text[])
        RETURNS TABLE (doc_id text) LANGUAGE sql STABLE AS $$
            SELECT s.doc_id FROM rag.servable_documents s
        $$;
        CREATE OR REPLACE FUNCTION rag.readable_chunks(
            p_version_id bigint, p_tenant text, p_principals text[])
        RETURNS TABLE (chunk_id text, doc_id text) LANGUAGE sql STABLE AS $$
            SELECT m.chunk_id, m.doc_id FROM rag.index_version_chunks m
            WHERE m.version_id = p_version_id
        $$;
        """
    )


def tenants_of(conn: psycopg.Connection, chunk_ids: list[str]) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT d.tenant FROM rag.chunks c JOIN rag.documents d USING (doc_id)"
        " WHERE c.chunk_id = ANY(%s)",
        (chunk_ids,),
    ).fetchall()
    return {row[0] for row in rows}


def test_row_level_security_holds_when_the_serving_rule_forgets_the_tenant(
    conn: psycopg.Connection, served: int
) -> None:
    query = "VPN portal error ACN-204"
    everything = RetrievalOptions(mode=LEXICAL, limit=100, candidates=100)
    vector = EMBEDDER.embed([query])[0]
    globex_chunk = conn.execute(
        "SELECT chunk_id FROM rag.chunks WHERE doc_id = 's:globex-vpn.txt'"
    ).fetchone()[0]
    before = retrieve(conn, STAFF, query, everything).hits
    assert before and tenants_of(conn, [hit.chunk_id for hit in before]) == {"acme"}

    break_the_serving_rule(conn)
    # As the unrestricted user, the broken rule now admits the other tenant's chunks...
    admitted = conn.execute(
        "SELECT chunk_id FROM rag.readable_chunks(%s, 'acme', '{group:staff}')", (served,)
    ).fetchall()
    assert "globex" in tenants_of(conn, [row[0] for row in admitted])
    # ...but serving runs under row-level security: still acme only, through every path.
    lexical = retrieve(conn, STAFF, query, everything).hits
    dense = vector_search(conn, vector, EMBEDDER.model_key, STAFF, limit=100)
    for hits in (lexical, dense):
        assert hits and tenants_of(conn, [hit.chunk_id for hit in hits]) == {"acme"}
    with pytest.raises(UnknownChunkError):
        trace_chunk(conn, globex_chunk, STAFF)
    # Within the tenant, the ACL is the serving rule's job, not row-level security's: HR's
    # leave policy now reaches staff (what the canary gate's same-tenant probe detects).
    assert "s:leave.txt" in {hit.doc_id for hit in dense}


def test_lineage_still_proves_the_source_bytes(conn: psycopg.Connection, served: int) -> None:
    chunk_id = conn.execute(
        "SELECT chunk_id FROM rag.chunks WHERE doc_id = 's:globex-vpn.txt'"
    ).fetchone()[0]
    trace = trace_chunk(conn, chunk_id, OUTSIDER)
    assert trace["source_bytes"]["sha256_verified"] is True
    assert trace["source_bytes"]["byte_size"] == len(DOCS["globex-vpn.txt"][2].encode())
    assert trace["elements"]
    with pytest.raises(UnknownChunkError):
        trace_chunk(conn, chunk_id, STAFF)
    # The evidence function checks the reader itself: no row for another tenant's reader, nor
    # for the serving role without a reader, which may not read the bytes directly either.
    with serving_transaction(conn, STAFF):
        evidence = conn.execute("SELECT * FROM rag.chunk_source_evidence(%s)", (chunk_id,))
        assert evidence.fetchall() == []
    with conn.transaction():
        conn.execute("SET LOCAL ROLE rag_serving")
        evidence = conn.execute("SELECT * FROM rag.chunk_source_evidence(%s)", (chunk_id,))
        assert evidence.fetchall() == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL ROLE rag_serving")
        conn.execute("SELECT content FROM rag.source_blobs").fetchall()
