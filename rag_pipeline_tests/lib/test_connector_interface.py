"""The connector interface as `sync_source` consumes it, with a connector written in the test.

Whatever the connector: an unchanged item is never read and keeps its quarantine, a removal
records its reason, source metadata is kept per version, and the cursor moves only with a scan
that committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
import yaml

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig, load_sources
from rag_pipeline.lib.connectors import (
    DiscoveredDocument,
    QuarantineReason,
    RemovedDocument,
    ScannedItem,
    ScanState,
    UnchangedDocument,
    registry,
    scan_source,
)
from rag_pipeline.lib.connectors.access import item_metadata
from rag_pipeline.lib.connectors.base import content_hash
from rag_pipeline.lib.stores.quarantine import current_quarantine
from rag_pipeline.lib.stores.sources import sync_source
from rag_pipeline_tests.conftest import create_database


class ToyConnector:
    """Items from `source.options["items"]` ({id: text | None for an unreadable one}), read
    only when their token (the text itself) changed; `removed` items come with a reason."""

    name: ClassVar[str] = "toy"
    option_keys: ClassVar[frozenset[str]] = frozenset({"items", "removed", "fail_after", "export"})

    def __init__(self) -> None:
        self.reads: list[str] = []

    def validate(self, source: SourceConfig) -> None:
        if not isinstance(source.options.get("items"), dict):
            raise ConfigurationError(f"{source.where}: 'items' must be a mapping")

    def scan(self, source: SourceConfig, state: ScanState) -> Iterator[ScannedItem]:
        for position, (item, text) in enumerate(sorted(source.options["items"].items())):
            if position == source.options.get("fail_after"):
                raise ConfigurationError("export truncated")
            meta, problem = item_metadata(source, None, item, "toy export")
            doc = DiscoveredDocument(
                doc_id=f"{source.name}:{item}",
                source=source.name,
                uri=f"toy://{item}",
                relative_path=item,
                content_hash="",
                byte_size=0,
                mime_type="text/plain",
                encoding=None,
                owner=meta.owner,
                tenant=meta.tenant,
                acl_principals=meta.acl,
                title=item,
                updated_at=datetime(2026, 1, 1, tzinfo=UTC),
                source_metadata={"item": item, "export": source.options.get("export", 1)},
                change_token=text,
            )
            if state.unchanged(doc.doc_id, doc.change_token, doc.metadata_hash):
                yield UnchangedDocument(doc.doc_id)
                continue
            self.reads.append(item)
            if text is None:
                doc.content_hash = "unread"
                yield doc.quarantined(QuarantineReason("unreadable_file", "cannot read"))
                continue
            data = text.encode()
            doc.content, doc.content_hash, doc.byte_size = data, content_hash(data), len(data)
            yield doc if problem is None else doc.quarantined(problem)
        for item, reason in sorted(source.options.get("removed", {}).items()):
            yield RemovedDocument(f"{source.name}:{item}", reason)
        state.next_cursor = {"export": len(source.options["items"])}

    def fingerprint(self, source: SourceConfig) -> str:
        return str(sorted(source.options["items"].items()))


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyConnector:
    connector = ToyConnector()
    monkeypatch.setitem(registry.CONNECTORS, "toy", connector)
    return connector


@pytest.fixture()
def conn(pg_data_dir: Path) -> Iterator[psycopg.Connection]:
    with database.connection(create_database(pg_data_dir)) as connection:
        yield connection


def toy_source(tmp_path: Path, items: dict[str, str | None], **options: Any) -> SourceConfig:
    entry = {"name": "toy", "connector": "toy", "tenant": "acme", "acl": ["group:acme-all"]}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [{**entry, "items": items, **options}]}))
    [source] = load_sources(path)
    return source


def sync(conn: psycopg.Connection, source: SourceConfig) -> tuple[Any, ScanState]:
    state = ScanState()
    report = sync_source(
        conn, source.name, scan_source(source, state), "run", state=state, connector="toy"
    )
    return report, state


def events(conn: psycopg.Connection, doc_id: str) -> list[tuple[str, Any]]:
    return conn.execute(
        "SELECT event, detail FROM rag.document_events WHERE doc_id = %s ORDER BY event_id",
        (doc_id,),
    ).fetchall()


def test_unchanged_items_are_not_read_and_keep_their_quarantine(
    conn: psycopg.Connection, toy: ToyConnector, tmp_path: Path
) -> None:
    items = {"a": "alpha text", "b": "beta text", "broken": None}
    first, _ = sync(conn, toy_source(tmp_path, items))
    assert sorted(first.added) == ["toy:a", "toy:b", "toy:broken"]
    assert [q.doc_id for q in current_quarantine(conn, "toy")] == ["toy:broken"]

    toy.reads.clear()
    second, _ = sync(conn, toy_source(tmp_path, {**items, "b": "beta, edited"}))
    assert toy.reads == ["b", "broken"], "a's token is unchanged: never read"
    assert second.changed == ["toy:b"] and second.unchanged == 2
    # Unreadable items have no token: read again, still refused.
    assert [q.doc_id for q in current_quarantine(conn, "toy")] == ["toy:broken"]


def test_removals_carry_their_reason_and_versions_their_source_metadata(
    conn: psycopg.Connection, toy: ToyConnector, tmp_path: Path
) -> None:
    sync(conn, toy_source(tmp_path, {"a": "one", "b": "two", "c": "three"}))
    report, state = sync(
        conn,
        toy_source(tmp_path, {"a": "one, edited"}, removed={"b": "merged into a"}, export=2),
    )
    assert report.deleted == ["toy:b", "toy:c"]
    assert events(conn, "toy:b")[-1] == ("deleted", {"reason": "merged into a"})
    assert events(conn, "toy:c")[-1] == ("deleted", {"reason": "no longer found at the source"})
    # Each version's event keeps what the connector said of it, for lineage.
    assert [detail["source_metadata"]["export"] for _, detail in events(conn, "toy:a")] == [1, 2]
    saved = conn.execute("SELECT cursor FROM rag.source_cursors WHERE source = 'toy'").fetchone()
    assert saved == ({"export": 1},) and state.next_cursor == {"export": 1}


def test_a_failed_scan_changes_nothing_not_even_the_cursor(
    conn: psycopg.Connection, toy: ToyConnector, tmp_path: Path
) -> None:
    sync(conn, toy_source(tmp_path, {"a": "one", "b": "two"}))
    before = conn.execute("SELECT doc_id, content_hash, deleted_at FROM rag.documents").fetchall()
    with pytest.raises(ConfigurationError, match="truncated"):
        sync(conn, toy_source(tmp_path, {"a": "one!", "b": "two", "c": "x"}, fail_after=1))
    after = conn.execute("SELECT doc_id, content_hash, deleted_at FROM rag.documents").fetchall()
    assert after == before, "a truncated export must not tombstone what came after the break"
    cursor = conn.execute("SELECT cursor FROM rag.source_cursors").fetchall()
    assert cursor == [({"export": 2},)]


def test_source_level_access_defaults_fail_closed(
    conn: psycopg.Connection, toy: ToyConnector, tmp_path: Path
) -> None:
    """A connector item gets the source's tenant and ACL; without an ACL it is refused."""
    path = tmp_path / "sources.yaml"
    entry = {"name": "toy", "connector": "toy", "tenant": "acme", "items": {"a": "x"}}
    path.write_text(yaml.safe_dump({"sources": [entry]}))
    [source] = load_sources(path)
    sync(conn, source)
    [record] = current_quarantine(conn, "toy")
    assert record.reason_code == "no_access_control"
    row = conn.execute("SELECT acl_principals FROM rag.documents").fetchone()
    assert row == ([],)
