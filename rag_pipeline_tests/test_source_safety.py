"""Sources fail closed (issue 10, classes 5-8), on the real embedded Postgres.

Ambiguous sidecar intent, a tenant a source may not publish into, malformed metadata and bad
files are quarantined one file at a time and served to nobody; a missing folder or missing
`tenants` fails only its own partition; a source removed from `sources.yaml` is tombstoned and
leaves the next version; a quarantine is lifted as soon as its cause is fixed.

The pipeline tests go through `run_pipeline`, what `rag-pipeline run` calls, and read back
`rag.documents`, `rag.quarantine`, `rag.document_events`, the serving version's memberships and
search results. Corpora are a handful of one-chunk files: the real model embeds ~30 chunks/s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from rag_pipeline.definitions import build_defs
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import SourceConfig, load_sources, load_user_access
from rag_pipeline.lib.connectors import scan_filesystem_source, stale_sidecar_entries
from rag_pipeline.lib.retrieval import search
from rag_pipeline.lib.stores.chunks import documents_to_chunk
from rag_pipeline.lib.stores.parsed import documents_to_parse, load_blob
from rag_pipeline.lib.stores.quarantine import quarantine_document
from rag_pipeline.lib.stores.sources import (
    SourceSyncReport,
    sync_source,
    tombstone_removed_sources,
)
from rag_pipeline.runner import PipelineRun, run_pipeline
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.fakes import hashed_embedder

DIRECTORY = {
    "users": {
        "alice": {"tenant": "acme", "groups": ["acme-all", "acme-hr"]},
        "bob": {"tenant": "acme", "groups": ["acme-all"]},
        "gina": {"tenant": "globex", "groups": ["globex-all"]},
    }
}


def write_folder(folder: Path, files: dict[str, bytes], sidecar: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    write_sidecar(folder, sidecar)


def write_sidecar(folder: Path, sidecar: dict[str, Any]) -> None:
    (folder / "_metadata.yaml").write_text(yaml.safe_dump(sidecar), encoding="utf-8")


def write_sources(root: Path, entries: list[dict[str, Any]]) -> Path:
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": entries}), encoding="utf-8")
    (root / "directory.yaml").write_text(yaml.safe_dump(DIRECTORY), encoding="utf-8")
    return path


def doc(title: str, body: str) -> bytes:
    return f"# {title}\n\n{body}\n".encode()


def run(
    instance: dg.DagsterInstance, database_url: str, sources_file: Path, **policy: Any
) -> PipelineRun:
    defs = build_defs(make_resources(database_url, sources_file, **policy))
    return run_pipeline(instance, defs=defs)


def serving_doc_ids(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT m.doc_id FROM rag.index_version_chunks m"
        " JOIN rag.active_index a ON a.version_id = m.version_id"
    ).fetchall()
    return {row[0] for row in rows}


def source_quarantine(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT q.doc_id, q.reason_code FROM rag.quarantine q"
        " JOIN rag.documents d ON d.doc_id = q.doc_id AND d.content_hash = q.content_hash"
        " WHERE q.stage = 'source' AND d.deleted_at IS NULL"
    ).fetchall()
    return dict(rows)


def found(conn: psycopg.Connection, root: Path, user: str, query: str) -> set[str]:
    access = load_user_access(root / "directory.yaml", user)
    return {hit.doc_id for hit in search(conn, hashed_embedder(), query, access, limit=10)}


def failure_message(instance: dg.DagsterInstance, partition: str) -> str:
    [record] = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": partition}))
    failures = instance.all_logs(
        record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    )
    return " ".join(str(event.dagster_event.event_specific_data.error) for event in failures)


def test_bad_files_and_ambiguous_sidecars_fail_closed_one_file_at_a_time(
    database_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Classes 5, 7 and 8 through `run_pipeline`: every bad file is quarantined with its own
    reason and served to nobody, the good files of the same source are served, a bad source
    fails only its partition, and fixing a sidecar lifts the quarantine on the next run."""
    hr = tmp_path / "hr"
    files = {
        "handbook.md": doc("Employee handbook", "The office opens at nine and coffee is free."),
        "holidays.md": doc("Public holidays", "The office is closed on the first of May."),
        "security.md": doc("Badge rules", "Wear your badge visibly inside the building."),
        "bonus.md": doc("Bonus plan", "The annual bonus pool is twelve percent of salary."),
        "salaries.md": doc("Salary bands", "Salary band four pays ninety thousand euros."),
        "pricing.md": doc("Globex pricing", "Globex charges four euros per pallet mile."),
        "menu.md": doc("Cafeteria menu", "Lentil soup is served every Thursday."),
        "parking.md": doc("Parking rules", "Visitors park on level minus two."),
        "travel.md": doc("Travel policy", "Train travel is first class above four hours."),
    }
    sidecar: dict[str, Any] = {
        "defaults": {"tenant": "acme", "owner": "user:bob", "acl": ["group:acme-all"]},
        "documents": {
            "bonus.md": {"acl": ["group:acme-hr"]},
            "Salaries.md": {"acl": ["group:acme-hr"]},  # case differs from the file
            "pricing.md": {"tenant": "globex", "acl": ["group:globex-all"]},
            "menu.md": {"encoding": 123},
            "parking.md": {"title": {"a": 1}},
            "travel.md": {"acl": ["acme-hr"]},  # malformed principal
        },
    }
    write_folder(hr, files, sidecar)
    with open(os.path.join(os.fsencode(hr), b"caf\xe9.md"), "wb") as handle:
        handle.write(doc("Espresso machine", "Descale the espresso machine every Friday."))
    (hr / "loop-a.md").symlink_to(hr / "loop-b.md")
    (hr / "loop-b.md").symlink_to(hr / "loop-a.md")
    write_folder(
        tmp_path / "globex",
        {"routes.md": doc("Delivery routes", "Route seven serves the harbour depot.")},
        {"defaults": {"tenant": "globex", "acl": ["group:globex-all"]}},
    )
    (tmp_path / "untenanted").mkdir()
    sources_file = write_sources(
        tmp_path,
        [
            {"name": "hr", "path": "hr", "tenants": ["acme"]},
            {"name": "missing", "path": "nowhere", "tenants": ["acme"]},
            {"name": "untenanted", "path": "untenanted"},
            {"name": "globex", "path": "globex", "tenants": ["globex"]},
        ],
    )

    first = run(instance, database_url, sources_file)

    # A missing folder and a source without `tenants` fail their own partitions only.
    assert first.failed_sources == ["missing", "untenanted"]
    assert "nowhere does not exist" in failure_message(instance, "missing")
    message = failure_message(instance, "untenanted")
    assert "sources.yaml" in message and "'tenants' is required" in message
    assert first.index_succeeded
    listed = first.metadata["source_documents[hr]"]["quarantine"]
    assert {(row["doc_id"], row["reason_code"]) for row in listed} >= {
        ("hr:salaries.md", "sidecar_mismatch"),
        ("hr:pricing.md", "tenant_not_allowed"),
    }
    with database.connection(database_url) as conn:
        assert source_quarantine(conn) == {
            "hr:salaries.md": "sidecar_mismatch",
            "hr:pricing.md": "tenant_not_allowed",
            "hr:menu.md": "invalid_metadata",
            "hr:parking.md": "invalid_metadata",
            "hr:travel.md": "invalid_acl",
            "hr:caf\\xe9.md": "invalid_file_name",
            "hr:loop-a.md": "symlink_loop",
            "hr:loop-b.md": "symlink_loop",
        }
        refused_acls = conn.execute(
            "SELECT doc_id, acl_principals FROM rag.documents"
            " WHERE doc_id IN ('hr:salaries.md', 'hr:pricing.md', 'hr:menu.md')"
        ).fetchall()
        assert refused_acls and all(acl == [] for _, acl in refused_acls)
        assert serving_doc_ids(conn) == {
            "hr:handbook.md",
            "hr:holidays.md",
            "hr:security.md",
            "hr:bonus.md",
            "globex:routes.md",
        }
        # The owner rule: bonus.md's own acl drops the defaults' owner (bob).
        [bonus_acl] = conn.execute(
            "SELECT acl_principals FROM rag.documents WHERE doc_id = 'hr:bonus.md'"
        ).fetchone()
        assert bonus_acl == ["group:acme-hr"]
        assert "hr:bonus.md" in found(conn, tmp_path, "alice", "annual bonus pool")
        assert "hr:bonus.md" not in found(conn, tmp_path, "bob", "annual bonus pool")
        assert "hr:salaries.md" not in found(conn, tmp_path, "alice", "salary band four")
        assert found(conn, tmp_path, "gina", "Globex pallet pricing") == {"globex:routes.md"}

    # Fix travel.md's ACL; rename bonus.md without touching the sidecar (its entry is now stale).
    sidecar["documents"]["travel.md"] = {"acl": ["group:acme-hr"]}
    write_sidecar(hr, sidecar)
    (hr / "bonus.md").rename(hr / "bonus-2026.md")

    second = run(instance, database_url, sources_file)

    assert second.index_succeeded
    hr_metadata = second.metadata["source_documents[hr]"]
    assert hr_metadata["stale_sidecar_entries"] == ["Salaries.md", "bonus.md"]
    with database.connection(database_url) as conn:
        quarantine = source_quarantine(conn)
        assert "hr:travel.md" not in quarantine
        assert quarantine["hr:bonus-2026.md"] == "sidecar_mismatch"
        served = serving_doc_ids(conn)
        assert "hr:travel.md" in served
        assert not {"hr:bonus.md", "hr:bonus-2026.md"} & served
        assert "hr:travel.md" in found(conn, tmp_path, "alice", "first class train travel")
        assert "hr:travel.md" not in found(conn, tmp_path, "bob", "first class train travel")
        assert not {"hr:bonus.md", "hr:bonus-2026.md"} & found(conn, tmp_path, "bob", "bonus pool")
        # The audit trail says who could read travel.md when.
        events = conn.execute(
            "SELECT event, acl_principals, detail FROM rag.document_events"
            " WHERE doc_id = 'hr:travel.md' ORDER BY event_id"
        ).fetchall()
        assert [(event, acl) for event, acl, _ in events] == [
            ("added", []),
            ("metadata_changed", ["group:acme-hr"]),
        ]
        assert events[0][2]["quarantine"]["code"] == "invalid_acl"


def test_a_removed_source_is_tombstoned_and_leaves_the_next_version_through_the_gate(
    database_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Class 6: remove a source from `sources.yaml` and its documents are tombstoned (audited,
    with the run id), hidden from search at once, and absent from the next candidate, which the
    removal gate judges like any mass deletion. A broken sources file tombstones nothing."""
    for name, topic in (("keep", "kayak"), ("drop", "dromedary")):
        write_folder(
            tmp_path / name,
            {
                f"{topic}-{n}.md": doc(f"{topic} guide {n}", f"All about the {topic}, part {n}.")
                for n in (1, 2)
            },
            {"defaults": {"tenant": "acme", "acl": ["group:acme-all"]}},
        )
    both = [
        {"name": "keep", "path": "keep", "tenants": ["acme"]},
        {"name": "drop", "path": "drop", "tenants": ["acme"]},
    ]
    sources_file = write_sources(tmp_path, both)
    assert run(instance, database_url, sources_file).succeeded
    dropped = {"drop:dromedary-1.md", "drop:dromedary-2.md"}
    with database.connection(database_url) as conn:
        first_version = conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0]
        assert dropped <= found(conn, tmp_path, "bob", "dromedary guide")

    # An unreadable sources file says nothing about removals.
    sources_file.write_text("sources: [oops\n", encoding="utf-8")
    broken = run_pipeline(
        instance,
        sources=["keep"],
        defs=build_defs(make_resources(database_url, sources_file)),
    )
    assert "sources.yaml: not valid YAML" in str(
        broken.metadata["vector_index"]["sources_file_error"]
    )
    assert broken.metadata["vector_index"]["documents_of_removed_sources_tombstoned"] == 0
    with database.connection(database_url) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM rag.documents WHERE deleted_at IS NOT NULL"
            ).fetchone()[0]
            == 0
        )

    write_sources(tmp_path, both[:1])
    removed = run(instance, database_url, sources_file)

    index = removed.metadata["vector_index"]
    assert index["documents_of_removed_sources_tombstoned"] == 2
    assert not removed.index_succeeded  # half the corpus gone: the removal gate says no
    with database.connection(database_url) as conn:
        assert conn.execute("SELECT version_id FROM rag.active_index").fetchone()[0] == (
            first_version
        )
        events = conn.execute(
            "SELECT doc_id, run_id, acl_principals FROM rag.document_events"
            " WHERE event = 'source_removed' ORDER BY doc_id"
        ).fetchall()
        assert {doc_id for doc_id, _, _ in events} == dropped
        assert all(run_id and acl == ["group:acme-all"] for _, run_id, acl in events)
        candidate = conn.execute(
            "SELECT DISTINCT doc_id FROM rag.index_version_chunks WHERE version_id = %s",
            (index["version_id"],),
        ).fetchall()
        assert {row[0] for row in candidate} == {"keep:kayak-1.md", "keep:kayak-2.md"}
        [gate] = conn.execute(
            "SELECT passed FROM rag.index_version_checks"
            " WHERE version_id = %s AND check_name = 'no_unexpected_document_loss'",
            (index["version_id"],),
        ).fetchone()
        assert gate is False
        # Serving hides tombstoned documents at once, whatever version serves.
        assert not dropped & found(conn, tmp_path, "bob", "dromedary guide")

    # The operator meant it: the raised limit lets the smaller version serve.
    assert run(instance, database_url, sources_file, max_removed_fraction=0.9).succeeded
    with database.connection(database_url) as conn:
        assert serving_doc_ids(conn) == {"keep:kayak-1.md", "keep:kayak-2.md"}

    # The source comes back: its documents are restored, nothing is re-embedded.
    write_sources(tmp_path, both)
    back = run(instance, database_url, sources_file, max_removed_fraction=0.9)
    assert back.succeeded
    assert back.metadata["source_documents[drop]"]["documents_restored"] == 2
    with database.connection(database_url) as conn:
        assert dropped <= serving_doc_ids(conn)


# --- Library entry points on the real database (no model needed) ------------------------------


def hr_source(root: Path, files: dict[str, bytes], sidecar: dict[str, Any]) -> SourceConfig:
    write_folder(root / "hr", files, sidecar)
    sources_file = write_sources(root, [{"name": "hr", "path": "hr", "tenants": ["acme"]}])
    [source] = load_sources(sources_file)
    return source


def sync(
    conn: psycopg.Connection, source: SourceConfig, run_id: str, **scan: Any
) -> SourceSyncReport:
    return sync_source(
        conn,
        source.name,
        scan_filesystem_source(source, **scan),
        run_id,
        stale_sidecar_entries=stale_sidecar_entries(source),
    )


def live(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT doc_id FROM rag.live_documents").fetchall()}


def test_a_fixed_sidecar_lifts_the_quarantine_without_any_byte_changing(
    database_url: str, tmp_path: Path
) -> None:
    """Class 8: `invalid_acl` fixed in the sidecar -> released at the next scan, with events."""
    sidecar: dict[str, Any] = {
        "defaults": {"tenant": "acme"},
        "documents": {"a.md": {"acl": ["acme-hr"]}, "b.md": {"acl": ["group:acme-all"]}},
    }
    source = hr_source(tmp_path, {"a.md": doc("A", "text a"), "b.md": doc("B", "text b")}, sidecar)
    with database.connection(database_url) as conn:
        sync(conn, source, "run-1")
        assert live(conn) == {"hr:b.md"}
        sidecar["documents"]["a.md"] = {"acl": ["group:acme-hr"]}
        write_sidecar(source.path, sidecar)
        report = sync(conn, source, "run-2")
        assert report.metadata_changed == ["hr:a.md"]
        assert live(conn) == {"hr:a.md", "hr:b.md"}
        assert conn.execute("SELECT count(*) FROM rag.quarantine").fetchone()[0] == 0
        # Its bytes were never stored while refused; the parse stage needs them now.
        [pending] = [d for d in documents_to_parse(conn, "hr", "p1") if d.doc_id == "hr:a.md"]
        assert load_blob(conn, pending.content_hash).startswith(b"# A")
        rows = conn.execute(
            "SELECT event, run_id, tenant, acl_principals, detail FROM rag.document_events"
            " WHERE doc_id = 'hr:a.md' ORDER BY event_id"
        ).fetchall()
        assert [row[:4] for row in rows] == [
            ("added", "run-1", "", []),
            ("metadata_changed", "run-2", "acme", ["group:acme-hr"]),
        ]
        assert rows[1][4]["previous_acl_principals"] == []


def test_a_raised_size_limit_releases_a_too_large_document(
    database_url: str, tmp_path: Path
) -> None:
    """A source refusal whose cause is outside the file (the size limit) is lifted too, with a
    `released` event, and the bytes are stored for the next stage."""
    source = hr_source(
        tmp_path,
        {"big.md": doc("Big", "word " * 50)},
        {"defaults": {"tenant": "acme", "acl": ["group:acme-all"]}},
    )
    with database.connection(database_url) as conn:
        report = sync(conn, source, "run-1", max_document_bytes=100)
        assert [code for _, code, _ in report.quarantined] == ["too_large"]
        assert live(conn) == set()
        report = sync(conn, source, "run-2")
        assert report.released == ["hr:big.md"]
        assert live(conn) == {"hr:big.md"}
        [pending] = documents_to_parse(conn, "hr", "p1")
        assert load_blob(conn, pending.content_hash).startswith(b"# Big")
        report = sync(conn, source, "run-3", max_document_bytes=100)
        assert report.newly_quarantined == ["hr:big.md"]
        assert live(conn) == set()


def test_a_metadata_change_lets_parse_and_chunk_retry_a_refused_version(
    database_url: str, tmp_path: Path
) -> None:
    from rag_pipeline.lib.parsing import parse_document
    from rag_pipeline.lib.stores.parsed import save_parsed

    sidecar: dict[str, Any] = {"defaults": {"tenant": "acme", "acl": ["group:acme-all"]}}
    source = hr_source(tmp_path, {"a.md": doc("A", "text a"), "b.md": doc("B", "text b")}, sidecar)
    with database.connection(database_url) as conn:
        sync(conn, source, "run-1")
        pending = {d.doc_id: d for d in documents_to_parse(conn, "hr", "p1")}
        quarantine_document(conn, pending["hr:a.md"], "parse", "p1", "parser_error", "x", None)
        save_parsed(
            conn, pending["hr:b.md"], "p1", parse_document(doc("B", "text b"), "text/markdown")
        )
        [to_chunk] = documents_to_chunk(conn, "hr", "p1", "c1")
        quarantine_document(conn, to_chunk, "chunk", "c1", "chunker_error", "x", None)
        assert documents_to_parse(conn, "hr", "p1") == []
        assert documents_to_chunk(conn, "hr", "p1", "c1") == []

        # Only the title changes; the same parser and chunker get another try at both.
        sidecar["documents"] = {"a.md": {"title": "A, retitled"}, "b.md": {"title": "B"}}
        write_sidecar(source.path, sidecar)
        report = sync(conn, source, "run-2")
        assert sorted(report.metadata_changed) == ["hr:a.md", "hr:b.md"]
        assert [d.doc_id for d in documents_to_parse(conn, "hr", "p1")] == ["hr:a.md"]
        assert [d.doc_id for d in documents_to_chunk(conn, "hr", "p1", "c1")] == ["hr:b.md"]


def test_a_renamed_file_whose_entry_went_stale_is_quarantined_by_content(
    database_url: str, tmp_path: Path
) -> None:
    """Class 5, the case only the database can see: same bytes as a recorded document whose
    sidecar entry names no file any more."""
    sidecar = {
        "defaults": {"tenant": "acme", "acl": ["group:acme-all"]},
        "documents": {"secret.md": {"acl": ["group:acme-hr"]}},
    }
    body = doc("Secret", "the merger closes in March")
    source = hr_source(tmp_path, {"secret.md": body, "public.md": doc("Public", "hi")}, sidecar)
    with database.connection(database_url) as conn:
        sync(conn, source, "run-1")
        (source.path / "secret.md").rename(source.path / "renamed.md")
        (source.path / "copy-of-public.md").write_bytes(doc("Public", "hi"))
        report = sync(conn, source, "run-2")
        assert report.deleted == ["hr:secret.md"]
        codes = {doc_id: code for doc_id, code, _ in report.quarantined}
        assert codes == {"hr:renamed.md": "sidecar_mismatch"}
        assert live(conn) == {"hr:public.md", "hr:copy-of-public.md"}
        [acl] = conn.execute(
            "SELECT acl_principals FROM rag.documents WHERE doc_id = 'hr:renamed.md'"
        ).fetchone()
        assert acl == []

        # Moving the entry to the new name resolves it.
        write_sidecar(
            source.path,
            {**sidecar, "documents": {"renamed.md": {"acl": ["group:acme-hr"]}}},
        )
        sync(conn, source, "run-3")
        assert "hr:renamed.md" in live(conn)
        [acl] = conn.execute(
            "SELECT acl_principals FROM rag.documents WHERE doc_id = 'hr:renamed.md'"
        ).fetchone()
        assert acl == ["group:acme-hr"]


def test_tombstone_removed_sources_is_audited_and_idempotent(
    database_url: str, tmp_path: Path
) -> None:
    source = hr_source(
        tmp_path,
        {"a.md": doc("A", "text")},
        {"defaults": {"tenant": "acme", "acl": ["group:acme-all"]}},
    )
    with database.connection(database_url) as conn:
        sync(conn, source, "run-1")
        assert tombstone_removed_sources(conn, ["hr"], "run-2") == []
        assert tombstone_removed_sources(conn, ["other"], "run-3") == ["hr:a.md"]
        assert tombstone_removed_sources(conn, ["other"], "run-4") == []
        assert live(conn) == set()
        [(event, run_id, detail)] = conn.execute(
            "SELECT event, run_id, detail FROM rag.document_events WHERE event <> 'added'"
        ).fetchall()
        assert (event, run_id) == ("source_removed", "run-3")
        assert "sources file" in detail["reason"]
        with pytest.raises(ValueError):
            tombstone_removed_sources(conn, [], "run-5")
        report = sync(conn, source, "run-6")
        assert report.restored == ["hr:a.md"]


def test_the_source_sensor_survives_bad_files_and_a_missing_folder(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    from rag_pipeline.defs.connectors.sensors import source_catalog_sensor

    write_folder(tmp_path / "hr", {"a.md": doc("A", "text")}, {"defaults": {"tenant": "acme"}})
    (tmp_path / "hr" / "loop.md").symlink_to("loop.md")
    with open(os.path.join(os.fsencode(tmp_path / "hr"), b"caf\xe9.md"), "wb") as handle:
        handle.write(b"x")
    os.mkfifo(tmp_path / "hr" / "pipe.txt")
    sources_file = write_sources(
        tmp_path,
        [
            {"name": "hr", "path": "hr", "tenants": ["acme"]},
            {"name": "missing", "path": "nowhere", "tenants": ["acme"]},
        ],
    )
    catalog = make_resources("postgresql://unused", sources_file)["catalog"]
    result = source_catalog_sensor(
        dg.build_sensor_context(instance=instance, resources={"catalog": catalog})
    )
    assert isinstance(result, dg.SensorResult)
    # Both get a run: the missing folder's run is what reports it, on its own partition.
    assert sorted(request.partition_key for request in result.run_requests) == ["hr", "missing"]
