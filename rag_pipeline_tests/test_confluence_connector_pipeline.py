"""A Confluence HTML space export through the real pipeline: ingest, re-run, edit, delete, ACLs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.retrieval import search
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.lib.test_connector_confluence import (
    FINANCE,
    FLEET,
    FUEL,
    HOME,
    RESTRICTED,
    RUNBOOK,
    Page,
    write_export,
)
from rag_pipeline_tests.pipeline_helpers import metadata_of, run_everything, total

WMS = Page(
    65541,
    "Warehouse WMS Outage Process",
    "<h2>Paper picking</h2><p>After 20 minutes without the warehouse management system the "
    "shift lead switches the site to paper picking and prints the open wave.</p>",
    parents=(65537,),
)
PAGES = [HOME, FLEET, RUNBOOK, WMS, FINANCE, FUEL]
DIRECTORY = {
    "users": {
        "erin": {"tenant": "globex", "groups": ["globex-all", "globex-ops"]},
        "frank": {"tenant": "globex", "groups": ["globex-all", "globex-finance"]},
    }
}


def write_sources(root: Path) -> Path:
    write_export(root / "glops", PAGES, RESTRICTED)
    (root / "directory.yaml").write_text(yaml.safe_dump(DIRECTORY))
    sources_file = root / "sources.yaml"
    source = {
        "name": "glops",
        "connector": "confluence",
        "path": "glops",
        "tenant": "globex",
        "acl": ["group:globex-all"],
        "description": "Globex operations space",
    }
    sources_file.write_text(yaml.safe_dump({"sources": [source]}))
    return sources_file


def test_a_confluence_export_through_the_pipeline(
    instance: dg.DagsterInstance, database_url: str, tmp_path: Path
) -> None:
    sources_file = write_sources(tmp_path)
    resources = make_resources(database_url, sources_file)
    directory = tmp_path / "directory.yaml"
    erin = load_user_access(directory, "erin")
    frank = load_user_access(directory, "frank")
    embedder = resources["embedder"].embedder()

    per_source, _ = run_everything(instance, resources, sources_file)
    source = metadata_of(per_source["glops"], "source_documents")
    # Six pages and the runbook's text attachment; the PNG attachment is only listed.
    assert source["documents_added"] == 7
    assert source["documents_quarantined"] == 0
    assert total(per_source, "parsed_documents", "documents_parsed") == 7
    with database.connection(database_url) as conn:
        hits = search(conn, embedder, "telematics gateway restart after outage", erin, limit=10)
        runbook = [hit for hit in hits if hit.doc_id == "glops:pages/65540"]
        assert runbook, [hit.doc_id for hit in hits]
        assert runbook[0].title == "Telematics Gateway Outage Runbook"
        assert all(hit.heading_path[0] == "Telematics Gateway Outage Runbook" for hit in runbook)
        # The finance page's child inherits the restriction: erin is not in globex-finance.
        fuel_query = "fuel purchases matched against telematics positions"
        erin_fuel = {hit.doc_id for hit in search(conn, embedder, fuel_query, erin, limit=20)}
        frank_fuel = {hit.doc_id for hit in search(conn, embedder, fuel_query, frank, limit=20)}
    assert "glops:pages/65543" not in erin_fuel
    assert "glops:pages/65542" not in erin_fuel
    assert "glops:pages/65543" in frank_fuel

    per_source, _ = run_everything(instance, resources, sources_file)
    assert total(per_source, "parsed_documents", "documents_parsed") == 0
    assert total(per_source, "chunk_embeddings", "texts_embedded") == 0
    assert metadata_of(per_source["glops"], "source_documents")["documents_unchanged"] == 7

    fleet_file = tmp_path / "glops" / FLEET.name()
    fleet_file.write_text(
        fleet_file.read_text().replace(
            "every 30 seconds.", "every 30 seconds, and every 5 seconds while a reefer alarm is on."
        )
    )
    (tmp_path / "glops" / WMS.name()).unlink()
    per_source, index = run_everything(instance, resources, sources_file)
    source = metadata_of(per_source["glops"], "source_documents")
    assert (source["documents_changed"], source["documents_deleted"]) == (1, 1)
    assert source["documents_added"] == 0
    assert total(per_source, "parsed_documents", "documents_parsed") == 1
    diff = metadata_of(index, "vector_index")["diff"]
    assert diff["documents"]["changed"]["ids"] == ["glops:pages/65539"]
    assert diff["documents"]["removed"]["ids"] == ["glops:pages/65541"]
    with database.connection(database_url) as conn:
        hits = search(conn, embedder, "paper picking when the WMS is down", erin, limit=20)
        edited = search(conn, embedder, "reefer alarm reporting interval", erin, limit=3)
    assert "glops:pages/65541" not in {hit.doc_id for hit in hits}
    assert edited[0].doc_id == "glops:pages/65539"
