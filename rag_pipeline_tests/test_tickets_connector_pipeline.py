"""A ticket export source through the real pipeline: ingestion, no-op re-runs, one changed
ticket, deleted and merged tickets, and organisations that only their own users may read."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import SAMPLE_CORPUS_DIR, load_user_access
from rag_pipeline.lib.retrieval import search
from rag_pipeline_tests.conftest import make_resources
from rag_pipeline_tests.fakes import hashed_embedder
from rag_pipeline_tests.pipeline_helpers import metadata_of, run_everything, total

DIRECTORY = SAMPLE_CORPUS_DIR / "directory.yaml"
JIRA_HEADER = [
    "Summary",
    "Issue key",
    "Issue id",
    "Status",
    "Project key",
    "Priority",
    "Created",
    "Updated",
    "Description",
    "Comment",
    "Comment",
]


def jira_rows(extra_comment: str = "") -> list[list[str]]:
    return [
        [
            "SSO login fails with SAML response expired after sleep",
            "HELP-1",
            "10001",
            "Resolved",
            "HELP",
            "High",
            "05/Oct/26 8:12 AM",
            "06/Oct/26 2:30 PM" if not extra_comment else "07/Oct/26 9:00 AM",
            "Engineers get 'SAML response expired' from the identity provider login page when "
            "they open the intranet right after their laptop wakes from sleep.",
            "05/Oct/26 9:01 AM;priya;The laptop clock is six minutes behind after sleep, so the "
            "SAML assertion looks expired to the identity provider.",
            extra_comment,
        ],
        [
            "VPN tunnel disconnects every twenty minutes from the Lisbon office",
            "HELP-2",
            "10002",
            "In Progress",
            "HELP",
            "Medium",
            "08/Oct/26 10:40 AM",
            "09/Oct/26 4:05 PM",
            "WireGuard tunnels to the European VPN gateway drop every twenty minutes for staff "
            "in the Lisbon office; home connections are stable.",
            "08/Oct/26 11:15 AM;marco;The office firewall expires idle UDP sessions after twenty "
            "minutes; a client keepalive of 25 seconds keeps the tunnel open.",
            "",
        ],
        [
            "Build cache unreachable over the VPN split tunnel",
            "HELP-3",
            "10003",
            "Resolved",
            "HELP",
            "Medium",
            "25/Oct/26 9:00 AM",
            "26/Oct/26 10:20 AM",
            "With split tunnelling enabled, builds cannot reach the remote build cache and fall "
            "back to full rebuilds that take forty minutes.",
            "25/Oct/26 10:00 AM;marco;The build cache address range was missing from the split "
            "tunnel routes; it is now part of the VPN profile.",
            "",
        ],
    ]


def zendesk_ticket(ticket_id: int, subject: str, description: str, org: int, **extra: Any) -> dict:
    ticket = {
        "url": f"https://initech-help.zendesk.com/api/v2/tickets/{ticket_id}.json",
        "id": ticket_id,
        "subject": subject,
        "description": description,
        "status": "open",
        "priority": "normal",
        "organization_id": org,
        "tags": [],
        "created_at": "2026-09-18T07:55:00Z",
        "updated_at": "2026-09-19T12:10:00Z",
        "comments": [
            {
                "author_id": 9,
                "created_at": "2026-09-18T07:55:00Z",
                "body": description,
                "public": True,
            }
        ],
    }
    ticket.update(extra)
    return ticket


INITECH = 9002
UMBRELLA = 9003


def zendesk_tickets(deleted_and_merged: bool = False) -> list[dict[str, Any]]:
    merge_comment = {
        "author_id": 77,
        "created_at": "2026-09-20T08:00:00Z",
        "body": "This request was closed and merged into request #201.",
        "public": False,
    }
    duplicate = zendesk_ticket(
        203,
        "Charged twice for the September invoice (second report)",
        "Our finance team sees two card payments for the September Enterprise subscription "
        "invoice INV-2026-0917 and asks for the duplicate payment to be refunded.",
        INITECH,
    )
    printer = zendesk_ticket(
        202,
        "Label printer in the Rotterdam warehouse prints blank pages",
        "The thermal label printer at dock 4 feeds blank labels since the driver update; the "
        "test page prints correctly.",
        INITECH,
    )
    if deleted_and_merged:
        printer["status"] = "deleted"
        duplicate["status"] = "closed"
        duplicate["tags"] = ["closed_by_merge"]
        duplicate["comments"] = [*duplicate["comments"], merge_comment]
    return [
        zendesk_ticket(
            201,
            "Invoice INV-2026-0917 charged twice",
            "Initech was charged twice for the September Enterprise subscription; a retried "
            "payment webhook created a second card payment that must be refunded.",
            INITECH,
        ),
        printer,
        duplicate,
        zendesk_ticket(
            204,
            "Refund status for the duplicate subscription payment",
            "Umbrella asks when the refund for the duplicate subscription payment arrives.",
            UMBRELLA,
        ),
        zendesk_ticket(
            205,
            "Password reset emails arrive after the link expired",
            "Password reset emails arrive forty minutes late, after the reset link expired.",
            INITECH,
        ),
    ]


def write_exports(folder: Path, extra_comment: str = "", deleted_and_merged: bool = False) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(JIRA_HEADER)
    writer.writerows(jira_rows(extra_comment))
    (folder / "jira-help.csv").write_text(buffer.getvalue())
    (folder / "zendesk-tickets.json").write_text(
        "".join(json.dumps(t) + "\n" for t in zendesk_tickets(deleted_and_merged))
    )


def write_sources(root: Path) -> Path:
    folder = root / "helpdesk"
    folder.mkdir()
    write_exports(folder)
    sources = {
        "sources": [
            {
                "name": "helpdesk",
                "connector": "tickets",
                "path": "helpdesk",
                "tenant": "acme",
                # Each file keeps its format's default field: Jira's `Project key`, Zendesk's
                # `organization_id`. Umbrella (9003) is deliberately left unmapped.
                "acl_mapping": {"HELP": ["group:acme-all"], str(INITECH): ["group:acme-support"]},
            }
        ]
    }
    sources_file = root / "sources.yaml"
    sources_file.write_text(yaml.safe_dump(sources))
    return sources_file


def hit_ids(database_url: str, query: str, user: str) -> list[str]:
    with database.connection(database_url) as conn:
        access = load_user_access(DIRECTORY, user)
        return [hit.doc_id for hit in search(conn, hashed_embedder(), query, access, limit=20)]


def test_ticket_exports_through_the_pipeline(
    instance: dg.DagsterInstance, database_url: str, tmp_path: Path
) -> None:
    sources_file = write_sources(tmp_path)
    # Two of the seven served tickets go away in the last run: above the default 25% gate.
    resources = make_resources(database_url, sources_file, max_removed_fraction=0.5)

    per_source, index = run_everything(instance, resources, sources_file)
    scanned = metadata_of(per_source["helpdesk"], "source_documents")
    assert scanned["documents_added"] == 8
    quarantined = {row["doc_id"]: row["reason_code"] for row in scanned["quarantine"]}
    assert quarantined == {"helpdesk:204": "no_access_control"}
    assert total(per_source, "parsed_documents", "documents_parsed") == 7
    assert metadata_of(index, "active_index")["switched"] is True

    assert "helpdesk:HELP-2" in hit_ids(database_url, "VPN disconnects Lisbon office", "henry")
    billing = "invoice charged twice duplicate payment refund"
    assert "helpdesk:201" in hit_ids(database_url, billing, "bob")
    # Initech's tickets are mapped to acme-support only; Umbrella's to nobody.
    henry_hits = hit_ids(database_url, billing, "henry")
    assert not {"helpdesk:201", "helpdesk:203", "helpdesk:204"} & set(henry_hits)
    assert "helpdesk:204" not in hit_ids(database_url, billing, "bob")

    # A re-run over the same exports does no work at all.
    per_source, index = run_everything(instance, resources, sources_file)
    scanned = metadata_of(per_source["helpdesk"], "source_documents")
    assert scanned["documents_unchanged"] == 8
    assert total(per_source, "parsed_documents", "documents_parsed") == 0
    assert total(per_source, "chunk_embeddings", "texts_embedded") == 0

    # A new comment on one ticket, one ticket deleted and one merged in the export.
    write_exports(
        tmp_path / "helpdesk",
        extra_comment="07/Oct/26 9:00 AM;priya;Root cause confirmed: the managed device "
        "profile disabled automatic time sync; profile v42 re-enables it.",
        deleted_and_merged=True,
    )
    per_source, index = run_everything(instance, resources, sources_file)
    scanned = metadata_of(per_source["helpdesk"], "source_documents")
    assert scanned["documents_changed"] == 1
    assert scanned["documents_deleted"] == 2
    assert scanned["documents_added"] == 0
    assert total(per_source, "parsed_documents", "documents_parsed") == 1
    assert metadata_of(index, "vector_index")["diff"]["documents"]["changed"]["ids"] == [
        "helpdesk:HELP-1"
    ]
    assert metadata_of(index, "active_index")["switched"] is True

    assert "helpdesk:HELP-1" in hit_ids(
        database_url, "managed device profile automatic time sync", "henry"
    )
    bob_hits = set(hit_ids(database_url, billing, "bob"))
    assert "helpdesk:201" in bob_hits and "helpdesk:203" not in bob_hits
    assert "helpdesk:202" not in hit_ids(database_url, "label printer blank pages", "bob")
    with database.connection(database_url) as conn:
        reasons = dict(
            conn.execute(
                "SELECT doc_id, detail->>'reason' FROM rag.document_events"
                " WHERE event = 'deleted' AND source = 'helpdesk'"
            ).fetchall()
        )
    assert reasons == {
        "helpdesk:202": "deleted in the export",
        "helpdesk:203": "merged into 201",
    }
