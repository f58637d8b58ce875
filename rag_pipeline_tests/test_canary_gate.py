"""Canary leak probes: the pure rules, the probe on a real database, and the blocking gate.

A clean candidate passes and leaves no trace of its canaries; a serving rule that forgets the
ACL (or, with row-level security off, the tenant) makes the gate fail with the tenant pair and
the path, and through `rag-pipeline run` the candidate is then not promoted while the serving
version keeps answering.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rag_pipeline.cli import main
from rag_pipeline.lib import canaries, database
from rag_pipeline.lib.canaries import (
    LEXICAL_PATH,
    OTHER_TENANT,
    OWNER,
    SAME_TENANT,
    VECTOR_PATH,
    Observation,
)
from rag_pipeline.lib.canary_probes import no_canary_leaks
from rag_pipeline_tests.small_corpus import DOCS, build, ingest
from rag_pipeline_tests.test_crash_safety import create_empty_database

TOKEN = "canary" + "1" * 18
# Every table a canary is planted in, and what the candidate's statistics hold.
FOOTPRINT = [
    "SELECT count(*) FROM rag.documents",
    "SELECT count(*) FROM rag.chunks",
    "SELECT count(*) FROM rag.embeddings",
    "SELECT count(*) FROM rag.index_version_chunks",
    "SELECT count(*) FROM rag.chunk_terms",
    "SELECT count(*) FROM rag.chunk_lexical",
    "SELECT coalesce(sum(df), 0) FROM rag.index_version_terms",
    "SELECT coalesce(sum(chunk_count), 0), coalesce(sum(total_length), 0)"
    " FROM rag.index_version_lexical",
    "SELECT count(*) FROM rag.documents WHERE source = '__canary__'",
]


def test_every_tenant_gets_its_own_canary_and_token() -> None:
    planted = canaries.make_canaries(["globex", "acme", "acme"], TOKEN)
    assert [canary.tenant for canary in planted] == ["acme", "globex"]
    assert len({canary.token for canary in planted}) == 2
    assert all(canary.token in canary.text for canary in planted)
    assert len({canary.principal for canary in planted}) == 2
    with pytest.raises(ValueError, match="canary token"):
        canaries.make_canaries(["acme"], "canary-not-digits")
    with pytest.raises(ValueError, match="non-empty"):
        canaries.make_canaries(["acme", ""], TOKEN)
    assert canaries.new_token() != canaries.new_token()


def test_probe_readers_and_entitlement() -> None:
    acme, globex = canaries.make_canaries(["acme", "globex"], TOKEN)
    readers = canaries.probe_readers([acme, globex], {"acme": ["group:staff", acme.principal]})
    kinds = sorted((reader.kind, reader.access.tenant, reader.target.tenant) for reader in readers)
    assert kinds == [
        (OTHER_TENANT, "acme", "globex"),
        (OTHER_TENANT, "globex", "acme"),
        (OWNER, "acme", "acme"),
        (OWNER, "globex", "globex"),
        (SAME_TENANT, "acme", "acme"),
        (SAME_TENANT, "globex", "globex"),
    ]
    same = next(r for r in readers if r.kind == SAME_TENANT and r.access.tenant == "acme")
    assert "group:staff" in same.access.principals and acme.principal not in same.access.principals
    other = next(r for r in readers if r.kind == OTHER_TENANT and r.access.tenant == "globex")
    # Holds acme's canary principal: only the tenant condition keeps acme's canary from it.
    assert acme.principal in other.access.principals
    assert not canaries.entitled(other, acme, VECTOR_PATH)
    assert canaries.entitled(other, globex, VECTOR_PATH)
    assert not canaries.entitled(same, acme, VECTOR_PATH)
    # Row-level security is tenant isolation: the same tenant may see the row in plain SQL.
    assert canaries.entitled(same, acme, "sql:chunks")
    assert not canaries.entitled(other, acme, "sql:chunks")


def test_judge_names_leaks_and_ineffective_probes() -> None:
    acme, globex = canaries.make_canaries(["acme", "globex"], TOKEN)
    readers = canaries.probe_readers([acme, globex], {})
    owner = next(r for r in readers if r.kind == OWNER and r.target is acme)
    other = next(r for r in readers if r.kind == OTHER_TENANT and r.target is acme)
    clean = canaries.judge(
        [acme, globex],
        [
            Observation(owner, LEXICAL_PATH, frozenset({acme.chunk_id})),
            Observation(other, LEXICAL_PATH, frozenset({globex.chunk_id})),
        ],
    )
    assert clean.passed and clean.observations == 2
    leaked = canaries.judge(
        [acme, globex],
        [
            Observation(owner, VECTOR_PATH, frozenset()),
            Observation(other, VECTOR_PATH, frozenset({acme.chunk_id, globex.chunk_id})),
        ],
    )
    assert not leaked.passed
    assert leaked.leaks == [
        {
            "canary_tenant": "acme",
            "reader_tenant": "globex",
            "reader": OTHER_TENANT,
            "path": VECTOR_PATH,
        }
    ]
    assert leaked.ineffective == [{"tenant": "acme", "path": VECTOR_PATH}]
    assert "acme -> globex via retrieve:vector" in canaries.summary(leaked, 2)
    with pytest.raises(ValueError, match="not a canary"):
        canaries.judge([acme], [Observation(owner, LEXICAL_PATH, frozenset({"s:vpn.txt#0"}))])


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


@pytest.fixture()
def candidate(conn: psycopg.Connection) -> int:
    ingest(conn, DOCS)
    return build(conn, promote=False).version_id


def footprint(conn: psycopg.Connection) -> list[tuple]:
    return [conn.execute(query).fetchone() for query in FOOTPRINT]


def forget_the_acl_and_tenant(conn: psycopg.Connection) -> None:
    """The serving rule with its tenant and ACL tests dropped (the simulated bug)."""
    conn.execute(
        """
        CREATE OR REPLACE FUNCTION rag.readable_chunks(
            p_version_id bigint, p_tenant text, p_principals text[])
        RETURNS TABLE (chunk_id text, doc_id text) LANGUAGE sql STABLE AS $$
            SELECT m.chunk_id, m.doc_id FROM rag.index_version_chunks m
            WHERE m.version_id = p_version_id
        $$
        """
    )


def test_a_clean_candidate_passes_and_keeps_no_canary(
    conn: psycopg.Connection, candidate: int
) -> None:
    before = footprint(conn)
    result = no_canary_leaks(conn, candidate, TOKEN)
    assert result.passed, result.summary
    assert result.name == "no_canary_leaks"
    # acme, globex and the probe's own tenant; every reader x every path observed.
    assert result.detail["tenants_probed"] == ["__canary_probe__", "acme", "globex"]
    assert result.detail["probes"] == (3 + 3 + 3 * 2) * 7
    assert result.detail["leak_count"] == 0 and result.detail["ineffective_probes"] == []
    assert footprint(conn) == before
    assert conn.execute("SELECT current_user").fetchone()[0] != "rag_serving"


def test_a_rule_that_forgets_the_acl_fails_the_gate(
    conn: psycopg.Connection, candidate: int
) -> None:
    forget_the_acl_and_tenant(conn)
    result = no_canary_leaks(conn, candidate, TOKEN)
    assert not result.passed
    # Row-level security still keeps every tenant to itself...
    assert all(leak["reader"] == SAME_TENANT for leak in result.detail["leaks"])
    # ...but within each tenant, readers without the canary principal now get the canary.
    assert result.detail["leaking_tenant_pairs"] == [
        "__canary_probe__->__canary_probe__",
        "acme->acme",
        "globex->globex",
    ]
    assert VECTOR_PATH in result.detail["leaking_paths"]
    assert "canary leaks" in result.summary


def test_without_row_level_security_a_cross_tenant_leak_names_the_pair(
    conn: psycopg.Connection, candidate: int
) -> None:
    forget_the_acl_and_tenant(conn)
    for table in ("index_version_chunks", "documents", "chunks", "embeddings"):
        conn.execute(
            psycopg.sql.SQL("ALTER TABLE rag.{} DISABLE ROW LEVEL SECURITY").format(
                psycopg.sql.Identifier(table)
            )
        )
    result = no_canary_leaks(conn, candidate, TOKEN)
    assert not result.passed
    pairs = set(result.detail["leaking_tenant_pairs"])
    assert {"acme->globex", "globex->acme"} <= pairs
    cross = {leak["path"] for leak in result.detail["leaks"] if leak["reader"] == OTHER_TENANT}
    assert {VECTOR_PATH, "sql:index_version_chunks", "sql:documents", "sql:chunks"} <= cross


def test_a_probe_that_cannot_find_its_own_canary_fails(
    conn: psycopg.Connection, candidate: int
) -> None:
    # A rule that admits nothing leaks nothing, but then the probes prove nothing either.
    conn.execute(
        """
        CREATE OR REPLACE FUNCTION rag.readable_chunks(
            p_version_id bigint, p_tenant text, p_principals text[])
        RETURNS TABLE (chunk_id text, doc_id text) LANGUAGE sql STABLE AS $$
            SELECT m.chunk_id, m.doc_id FROM rag.index_version_chunks m WHERE false
        $$
        """
    )
    result = no_canary_leaks(conn, candidate, TOKEN)
    assert not result.passed and result.detail["leak_count"] == 0
    paths = {item["path"] for item in result.detail["ineffective_probes"]}
    assert {LEXICAL_PATH, VECTOR_PATH} <= paths


# Two tenants, one source each, for the run through the real jobs.
TENANT_DOCS = {
    "initech": {
        "vpn.md": "# VPN\n\nConnect to vpn.initech.example. Error ACN-204 means the certificate "
        "expired: renew it in the self-service portal.\n",
        "payroll.md": "# Payroll\n\nSalaries are paid on the 25th of each month.\n",
    },
    "umbrella": {
        "labs.md": "# Labs\n\nThe third-floor lab badge readers reset every night at two.\n",
    },
}


@pytest.fixture()
def environment(
    tmp_path: Path, pg_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    root = tmp_path / "data"
    sources = []
    for tenant, docs in TENANT_DOCS.items():
        folder = root / tenant
        folder.mkdir(parents=True)
        (folder / "_metadata.yaml").write_text(
            f"defaults:\n  tenant: {tenant}\n  acl: [group:staff]\n"
        )
        for name, text in docs.items():
            (folder / name).write_text(text)
        sources.append(
            f"  - name: {tenant}\n    connector: filesystem\n    path: {tenant}\n"
            f"    tenants: [{tenant}]\n"
        )
    (root / "sources.yaml").write_text("sources:\n" + "".join(sources))
    (root / "directory.yaml").write_text(
        "users:\n  zed: {tenant: initech, groups: [staff]}\n"
        "  amy: {tenant: umbrella, groups: [staff]}\n"
    )
    for name, value in {
        "RAG_DATABASE_URL": database_url,
        "RAG_DAGSTER_PG_URL": create_empty_database(pg_data_dir),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "RAG_SOURCES_FILE": str(root / "sources.yaml"),
        "RAG_DIRECTORY_FILE": str(root / "directory.yaml"),
    }.items():
        monkeypatch.setenv(name, value)
    return root


def canary_check(conn: psycopg.Connection, version: int) -> tuple[bool, dict]:
    return conn.execute(
        "SELECT passed, detail FROM rag.index_version_checks"
        " WHERE version_id = %s AND check_name = 'no_canary_leaks'",
        (version,),
    ).fetchone()


@pytest.mark.real_model
def test_a_leaking_candidate_is_not_promoted_by_the_real_job(
    environment: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"]) == 0
    with database.connection(database_url) as conn:
        first = conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]
        passed, detail = canary_check(conn, first)
        assert passed and detail["tenants_probed"] == ["__canary_probe__", "initech", "umbrella"]
        assert (
            conn.execute(
                "SELECT count(*) FROM rag.documents WHERE source = '__canary__'"
            ).fetchone()[0]
            == 0
        )
        original = conn.execute(
            "SELECT pg_get_functiondef('rag.readable_chunks(bigint, text, text[])'::regprocedure)"
        ).fetchone()[0]
        forget_the_acl_and_tenant(conn)

    # A new page makes a new candidate, built and probed while the serving rule is broken.
    (environment / "initech" / "parking.md").write_text(
        "# Parking\n\nVisitor parking is on level two; register the plate at reception.\n"
    )
    capsys.readouterr()
    assert main(["run"]) == 1
    assert "no_canary_leaks" in capsys.readouterr().err
    with database.connection(database_url) as conn:
        assert conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0] == first
        candidate = conn.execute("SELECT max(version_id) FROM rag.index_versions").fetchone()[0]
        assert candidate != first
        passed, detail = canary_check(conn, candidate)
        assert not passed and detail["leak_count"] > 0
        assert "initech->initech" in detail["leaking_tenant_pairs"]
        conn.execute(original)
    # Promotion re-reads the failed check: the CLI refuses too.
    assert main(["index", "promote", str(candidate)]) == 1
    assert "no_canary_leaks" in capsys.readouterr().err
    # The serving version keeps answering, and never with a canary.
    assert main(["search", "VPN error ACN-204", "--user", "zed", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and hits[0]["doc_id"] == "initech:vpn.md" and hits[0]["version_id"] == first
