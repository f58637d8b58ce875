"""The ticket export connector: the four formats, rendering, ACL mapping, removals, bad exports."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag_pipeline.lib.catalog import SAMPLE_CORPUS_DIR, ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors.base import (
    DiscoveredDocument,
    RemovedDocument,
    ScannedItem,
    ScanState,
)
from rag_pipeline.lib.connectors.tickets import TicketExportConnector

CONNECTOR = TicketExportConnector()
MAPPING = {"Initech": ["group:acme-support"], "Acme Employees": ["group:acme-all"]}


def make_source(path: Path, **options: Any) -> SourceConfig:
    options.setdefault("acl_mapping", MAPPING)
    return SourceConfig(
        name="helpdesk",
        connector="tickets",
        path=path,
        tenants=("acme",),
        defaults={"tenant": "acme"},
        options=options,
    )


def scan(source: SourceConfig, state: ScanState | None = None) -> list[ScannedItem]:
    return list(CONNECTOR.scan(source, state or ScanState()))


def by_id(items: Iterable[ScannedItem]) -> dict[str, ScannedItem]:
    return {item.doc_id: item for item in items}


def document(items: Iterable[ScannedItem], doc_id: str) -> DiscoveredDocument:
    item = by_id(items)[doc_id]
    assert isinstance(item, DiscoveredDocument)
    return item


def text_of(doc: DiscoveredDocument) -> str:
    assert doc.content is not None, doc.quarantine
    return doc.content.decode("utf-8")


# --- export builders ---------------------------------------------------------------------


def jira_issue(
    key: str,
    summary: str | None = "VPN drops every 20 minutes",
    org: str | None = "Initech",
    comments: list[tuple[str, str, str]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    issue_fields: dict[str, Any] = {
        "summary": summary,
        "project": {"key": "HELP", "name": "Helpdesk"},
        "status": {"name": "Open"},
        "priority": {"name": "High"},
        "resolution": None,
        "created": "2026-03-02T09:00:00.000+0000",
        "updated": "2026-03-03T10:30:00.000+0000",
        "description": f"Description of {key}.",
        "customfield_10002": [{"id": "7", "name": org}] if org else [],
        "comment": {
            "comments": [
                {"author": {"displayName": author}, "created": created, "body": body}
                for author, created, body in comments or []
            ]
        },
    }
    issue_fields.update(fields)
    return {
        "id": "10001",
        "key": key,
        "self": "https://acme.atlassian.net/rest/api/2/issue/10001",
        "fields": issue_fields,
    }


def write_jira_json(path: Path, issues: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"startAt": 0, "total": len(issues), "issues": issues}, indent=1))
    return path


def zendesk_ticket(ticket_id: int, **fields: Any) -> dict[str, Any]:
    ticket: dict[str, Any] = {
        "url": f"https://acme.zendesk.com/api/v2/tickets/{ticket_id}.json",
        "id": ticket_id,
        "subject": f"Billing question {ticket_id}",
        "description": "We were charged twice.",
        "status": "open",
        "priority": "normal",
        "organization_id": 9001,
        "tags": ["billing"],
        "created_at": "2026-04-01T08:00:00Z",
        "updated_at": "2026-04-02T09:00:00Z",
        "comments": [
            {
                "author_id": 501,
                "created_at": "2026-04-01T08:00:00Z",
                "body": "We were charged twice.",
                "public": True,
            },
            {
                "author_id": 77,
                "created_at": "2026-04-01T09:00:00Z",
                "body": "Refund issued.",
                "public": True,
            },
        ],
    }
    ticket.update(fields)
    return ticket


def write_jsonl(path: Path, tickets: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(ticket) + "\n" for ticket in tickets))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return path


JIRA_CSV_HEADER = [
    "Summary",
    "Issue key",
    "Issue id",
    "Status",
    "Project key",
    "Priority",
    "Resolution",
    "Created",
    "Updated",
    "Description",
    "Comment",
    "Comment",
    "Comment",
]
ZENDESK_CSV_HEADER = [
    "Id",
    "Requester",
    "Subject",
    "Tags",
    "Status",
    "Priority",
    "Created at",
    "Updated at",
    "Organization",
    "Description",
]


# --- the four formats --------------------------------------------------------------------


def test_jira_json_ticket_is_rendered_with_comments_in_chronological_order(
    tmp_path: Path,
) -> None:
    comments = [
        ("Marco Silva", "2026-03-02T11:00:00.000+0000", "Second: keepalive pushed."),
        ("Priya Raman", "2026-03-02T09:30:00.000+0000", "First: reproduced in Lisbon."),
    ]
    export = write_jira_json(tmp_path / "jira.json", [jira_issue("HELP-1", comments=comments)])
    items = scan(make_source(export, acl_field="customfield_10002"))
    doc = document(items, "helpdesk:HELP-1")
    text = text_of(doc)
    assert text.startswith("# HELP-1: VPN drops every 20 minutes\n")
    assert "- **Status:** Open" in text and "- **Priority:** High" in text
    assert "- **Organisation:** Initech" in text
    assert "- **Updated:** 2026-03-03 10:30 UTC" in text
    assert "## Description\n\nDescription of HELP-1." in text
    first = text.index("### Priya Raman — 2026-03-02 09:30 UTC\n\nFirst: reproduced")
    second = text.index("### Marco Silva — 2026-03-02 11:00 UTC\n\nSecond: keepalive")
    assert text.index("## Comments") < first < second
    assert doc.title == "VPN drops every 20 minutes"
    assert doc.mime_type == "text/markdown"
    assert doc.relative_path == "HELP-1"
    assert doc.uri == "https://acme.atlassian.net/browse/HELP-1"
    assert doc.acl_principals == ("group:acme-support",)
    assert doc.tenant == "acme"
    assert doc.updated_at.isoformat() == "2026-03-03T10:30:00+00:00"
    assert doc.source_metadata["ticket_key"] == "HELP-1"
    assert doc.source_metadata["status"] == "Open"
    assert doc.source_metadata["organisation"] == ["Initech"]
    assert doc.source_metadata["export_file"] == "jira.json"
    assert doc.source_metadata["index"] == 0
    assert doc.source_metadata["comment_count"] == 2
    json.dumps(doc.source_metadata)  # lineage stores it as JSON


def test_jira_json_default_acl_field_is_the_project_and_adf_bodies_are_read(
    tmp_path: Path,
) -> None:
    adf = {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Line one."}]},
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "a step"}]}
                        ],
                    }
                ],
            },
        ],
    }
    issue = jira_issue("HELP-2", description=adf)
    issue["fields"]["comment"]["comments"] = [
        {"author": {"displayName": "Priya"}, "created": "2026-03-02T10:00:00.000+0000", "body": adf}
    ]
    # A top-level array of issues is accepted as well as search results.
    export = tmp_path / "issues.json"
    export.write_text(json.dumps([issue]))
    items = scan(make_source(export, acl_mapping={"HELP": ["group:acme-all"]}))
    doc = document(items, "helpdesk:HELP-2")
    text = text_of(doc)
    assert "- **Project:** HELP" in text
    assert "Line one.\n\n- a step" in text
    assert doc.acl_principals == ("group:acme-all",)


def test_jira_csv_repeated_comment_columns(tmp_path: Path) -> None:
    export = write_csv(
        tmp_path / "jira.csv",
        JIRA_CSV_HEADER,
        [
            [
                "Cannot reach the build cache",
                "HELP-7",
                "10007",
                "Resolved",
                "HELP",
                "Medium",
                "Fixed",
                "25/Oct/26 9:00 AM",
                "26/Oct/26 10:20 AM",
                "Builds fall back to full rebuilds.",
                "25/Oct/26 10:00 AM;marco;Added the cache range; to the split tunnel.",
                "25/Oct/26 9:30 AM;priya;Looking.",
                "",
            ]
        ],
    )
    items = scan(make_source(export, acl_mapping={"HELP": ["group:acme-engineering"]}))
    doc = document(items, "helpdesk:HELP-7")
    text = text_of(doc)
    assert text.startswith("# HELP-7: Cannot reach the build cache")
    assert "- **Resolution:** Fixed" in text
    assert text.index("### priya — 2026-10-25 09:30 UTC") < text.index(
        "### marco — 2026-10-25 10:00 UTC\n\nAdded the cache range; to the split tunnel."
    )
    assert doc.updated_at.isoformat() == "2026-10-26T10:20:00+00:00"
    assert doc.acl_principals == ("group:acme-engineering",)
    assert doc.source_metadata["row"] == 1
    assert doc.source_metadata["comment_count"] == 2


def test_zendesk_json_lines_private_comments_left_out_unless_asked(tmp_path: Path) -> None:
    ticket = zendesk_ticket(
        123,
        comments=[
            *zendesk_ticket(0)["comments"],
            {
                "author_id": 77,
                "created_at": "2026-04-01T10:00:00Z",
                "body": "Internal: customer is on the legacy plan.",
                "public": False,
            },
        ],
    )
    export = write_jsonl(tmp_path / "zendesk.json", [ticket])
    mapping = {"9001": ["group:acme-support"]}
    doc = document(scan(make_source(export, acl_mapping=mapping)), "helpdesk:123")
    text = text_of(doc)
    assert text.startswith("# #123: Billing question 123")
    # The first comment repeats the description: rendered once.
    assert text.count("We were charged twice.") == 1
    assert "### user 77 — 2026-04-01 09:00 UTC\n\nRefund issued." in text
    assert "legacy plan" not in text
    assert doc.source_metadata["comment_count"] == 1
    assert doc.source_metadata["line"] == 1
    assert doc.uri == "https://acme.zendesk.com/agent/tickets/123"
    assert doc.acl_principals == ("group:acme-support",)

    with_private = make_source(export, acl_mapping=mapping, private_comments=True)
    text = text_of(document(scan(with_private), "helpdesk:123"))
    assert "Internal: customer is on the legacy plan." in text
    assert "(internal note)" in text


def test_zendesk_csv_organization_column(tmp_path: Path) -> None:
    export = write_csv(
        tmp_path / "zendesk.csv",
        ZENDESK_CSV_HEADER,
        [
            [
                "41",
                "Peter",
                "Password reset email arrives late",
                "mail initech",
                "Pending",
                "Normal",
                "2026-10-12 13:20",
                "2026-10-13 09:45",
                "Initech",
                "Reset emails arrive 40 minutes late.",
            ]
        ],
    )
    doc = document(scan(make_source(export)), "helpdesk:41")
    text = text_of(doc)
    assert text.startswith("# #41: Password reset email arrives late")
    assert "Reset emails arrive 40 minutes late." in text
    assert "## Comments" not in text
    assert doc.acl_principals == ("group:acme-support",)
    assert doc.updated_at.isoformat() == "2026-10-13T09:45:00+00:00"


def test_format_is_inferred_per_file_and_a_folder_is_read_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    # Zendesk tickets carry a `fields` list too: not mistaken for a Jira issue.
    zendesk = {"fields": [{"id": 1, "value": None}], **zendesk_ticket(5, organization_id="Initech")}
    write_jsonl(folder / "b-zendesk.json", [zendesk])
    write_jira_json(folder / "a-jira.json", [jira_issue("HELP-1")])
    write_csv(
        folder / "c-jira.csv",
        JIRA_CSV_HEADER,
        [["S", "HELP-9", "9", "Open", "Initech", "", "", "", "", "", "", "", ""]],
    )
    (folder / "notes.txt").write_text("not an export")
    state = ScanState()
    items = scan(make_source(folder, acl_field="customfield_10002"), state)
    assert [item.doc_id for item in items] == ["helpdesk:HELP-1", "helpdesk:5", "helpdesk:HELP-9"]
    formats = [
        item.source_metadata["format"] for item in items if isinstance(item, DiscoveredDocument)
    ]
    assert formats == ["jira_json", "zendesk_json", "jira_csv"]
    assert any("notes.txt" in warning for warning in state.warnings)


def test_an_export_whose_format_cannot_be_told_raises(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"number": 1, "title": "neither Jira nor Zendesk"}]))
    with pytest.raises(ConfigurationError, match="set 'format'"):
        scan(make_source(export))
    csv_export = write_csv(tmp_path / "export.csv", ["Key", "Title"], [["1", "x"]])
    with pytest.raises(ConfigurationError, match="set 'format'"):
        scan(make_source(csv_export))


# --- access -------------------------------------------------------------------------------


def test_unmapped_or_missing_organisation_is_quarantined_without_acl(tmp_path: Path) -> None:
    export = write_jira_json(
        tmp_path / "jira.json",
        [
            jira_issue("HELP-1", org="Initech"),
            jira_issue("HELP-2", org="Umbrella Corp"),
            jira_issue("HELP-3", org=None),
        ],
    )
    items = by_id(scan(make_source(export, acl_field="customfield_10002")))
    assert isinstance(items["helpdesk:HELP-1"], DiscoveredDocument)
    assert items["helpdesk:HELP-1"].quarantine is None
    for doc_id, named in (("helpdesk:HELP-2", "Umbrella Corp"), ("helpdesk:HELP-3", "no")):
        doc = items[doc_id]
        assert isinstance(doc, DiscoveredDocument)
        assert doc.quarantine is not None and doc.quarantine.code == "no_access_control"
        assert named in doc.quarantine.message
        assert doc.acl_principals == () and doc.owner is None and doc.content is None


def test_a_catch_all_must_be_explicit(tmp_path: Path) -> None:
    export = write_jira_json(
        tmp_path / "jira.json",
        [jira_issue("HELP-1", org="Initech"), jira_issue("HELP-2", org="Umbrella Corp")],
    )
    mapping = {**MAPPING, "*": ["group:acme-support-leads"]}
    items = by_id(scan(make_source(export, acl_field="customfield_10002", acl_mapping=mapping)))
    assert items["helpdesk:HELP-1"].acl_principals == ("group:acme-support",)  # type: ignore[union-attr]
    assert items["helpdesk:HELP-2"].acl_principals == ("group:acme-support-leads",)  # type: ignore[union-attr]


def test_source_level_defaults_apply_to_unmapped_organisations_only(tmp_path: Path) -> None:
    """The source's `acl`/`owner` mean what a sidecar's defaults mean: a mapped organisation's
    principals replace them (owner included), an unmapped or missing one keeps them."""
    export = write_jira_json(
        tmp_path / "jira.json",
        [jira_issue("HELP-1", org="Initech"), jira_issue("HELP-2", org="Umbrella Corp")],
    )
    source = make_source(export, acl_field="customfield_10002")
    defaults = {"tenant": "acme", "acl": ["group:acme-all"], "owner": "user:henry"}
    items = by_id(scan(SourceConfig(**{**source.__dict__, "defaults": defaults})))
    mapped, unmapped = items["helpdesk:HELP-1"], items["helpdesk:HELP-2"]
    assert isinstance(mapped, DiscoveredDocument) and isinstance(unmapped, DiscoveredDocument)
    assert mapped.acl_principals == ("group:acme-support",) and mapped.owner is None
    assert mapped.source_metadata["acl_from"] == "acl_mapping"
    assert unmapped.quarantine is None
    assert unmapped.acl_principals == ("group:acme-all", "user:henry")
    assert unmapped.source_metadata["acl_from"] == "source defaults"


def test_options_are_validated(tmp_path: Path) -> None:
    export = write_jira_json(tmp_path / "jira.json", [jira_issue("HELP-1")])
    source = make_source(export)
    with pytest.raises(ConfigurationError, match="acl_mapping' is required"):
        CONNECTOR.validate(SourceConfig(**{**source.__dict__, "options": {}}))
    with pytest.raises(ConfigurationError, match="malformed principals"):
        CONNECTOR.validate(make_source(export, acl_mapping={"Initech": ["acme-support"]}))
    with pytest.raises(ConfigurationError, match="'format' must be one of"):
        CONNECTOR.validate(make_source(export, format="servicenow"))
    with pytest.raises(ConfigurationError, match="'private_comments'"):
        CONNECTOR.validate(make_source(export, private_comments="yes"))
    both_catch_alls = SourceConfig(
        **{
            **make_source(export, acl_mapping={**MAPPING, "*": ["group:acme-all"]}).__dict__,
            "defaults": {"tenant": "acme", "acl": ["group:acme-all"]},
        }
    )
    with pytest.raises(ConfigurationError, match="keep one of them"):
        CONNECTOR.validate(both_catch_alls)
    with pytest.raises(ConfigurationError, match="does not exist"):
        CONNECTOR.validate(make_source(tmp_path / "missing.json"))


# --- removals ----------------------------------------------------------------------------


def test_deleted_and_merged_tickets_are_removed_with_a_reason(tmp_path: Path) -> None:
    merge_comment = {
        "author_id": 77,
        "created_at": "2026-04-03T08:00:00Z",
        "body": 'This request was closed and merged into request #123 "Billing question".',
        "public": False,
    }
    export = write_jsonl(
        tmp_path / "zendesk.jsonl",
        [
            zendesk_ticket(123),
            zendesk_ticket(124, status="deleted"),
            zendesk_ticket(
                125,
                status="closed",
                tags=["billing", "closed_by_merge"],
                comments=[*zendesk_ticket(0)["comments"], merge_comment],
            ),
            zendesk_ticket(126, merged_into=123),
        ],
    )
    items = by_id(scan(make_source(export, acl_mapping={"9001": ["group:acme-support"]})))
    assert isinstance(items["helpdesk:123"], DiscoveredDocument)
    assert items["helpdesk:124"] == RemovedDocument("helpdesk:124", "deleted in the export")
    assert items["helpdesk:125"] == RemovedDocument("helpdesk:125", "merged into 123")
    assert items["helpdesk:126"] == RemovedDocument("helpdesk:126", "merged into 123")


def test_jira_duplicate_resolution_is_not_a_merge(tmp_path: Path) -> None:
    export = write_jira_json(
        tmp_path / "jira.json", [jira_issue("HELP-5", resolution={"name": "Duplicate"})]
    )
    doc = document(scan(make_source(export, acl_field="customfield_10002")), "helpdesk:HELP-5")
    assert doc.quarantine is None
    assert "- **Resolution:** Duplicate" in text_of(doc)


def test_zendesk_csv_deleted_status_is_a_removal(tmp_path: Path) -> None:
    row = ["8", "", "Old", "", "Deleted", "", "", "", "Initech", ""]
    export = write_csv(tmp_path / "zendesk.csv", ZENDESK_CSV_HEADER, [row])
    assert scan(make_source(export)) == [RemovedDocument("helpdesk:8", "deleted in the export")]


# --- malformed tickets and broken exports ------------------------------------------------


def test_a_malformed_ticket_is_quarantined_alone(tmp_path: Path) -> None:
    bad_comment = jira_issue("HELP-3")
    bad_comment["fields"]["comment"]["comments"] = [
        {"author": {"displayName": "x"}, "created": "last Tuesday", "body": "hi"}
    ]
    no_key = jira_issue("HELP-4")
    del no_key["key"]
    export = write_jira_json(
        tmp_path / "jira.json",
        [
            jira_issue("HELP-1"),
            jira_issue("HELP-2", summary=None),
            bad_comment,
            no_key,
            jira_issue("HELP-6", updated="not a date"),
            jira_issue("HELP-7"),
        ],
    )
    items = by_id(scan(make_source(export, acl_field="customfield_10002")))
    good = [
        doc for doc in items.values() if isinstance(doc, DiscoveredDocument) and not doc.quarantine
    ]
    assert sorted(doc.doc_id for doc in good) == ["helpdesk:HELP-1", "helpdesk:HELP-7"]
    reasons = {
        doc_id: item.quarantine
        for doc_id, item in items.items()
        if isinstance(item, DiscoveredDocument) and item.quarantine
    }
    assert set(reasons) == {
        "helpdesk:HELP-2",
        "helpdesk:HELP-3",
        "helpdesk:jira.json#index-3",
        "helpdesk:HELP-6",
    }
    assert all(reason.code == "invalid_ticket" for reason in reasons.values())
    assert "no subject" in reasons["helpdesk:HELP-2"].message
    assert "comment 1" in reasons["helpdesk:HELP-3"].message
    assert "without a 'key'" in reasons["helpdesk:jira.json#index-3"].message
    assert "'updated'" in reasons["helpdesk:HELP-6"].message
    assert all(items[doc_id].acl_principals == () for doc_id in reasons)  # type: ignore[union-attr]


def test_a_duplicate_ticket_id_quarantines_the_later_copy(tmp_path: Path) -> None:
    export = write_jsonl(
        tmp_path / "zendesk.jsonl",
        [
            zendesk_ticket(7),
            zendesk_ticket(8),
            zendesk_ticket(7, subject="Copy"),
            zendesk_ticket(8, updated_at="yesterday"),
        ],
    )
    items = scan(make_source(export, acl_mapping={"9001": ["group:acme-support"]}))
    doc_ids = [item.doc_id for item in items]
    assert len(doc_ids) == len(set(doc_ids)) == 4
    malformed_copy = document(items, "helpdesk:8#duplicate-zendesk.jsonl-line-4")
    assert malformed_copy.quarantine is not None
    assert malformed_copy.quarantine.code == "invalid_ticket"
    first = document(items, "helpdesk:7")
    assert first.quarantine is None and first.title == "Billing question 7"
    duplicate = document(items, "helpdesk:7#duplicate-zendesk.jsonl-line-3")
    assert duplicate.quarantine is not None
    assert duplicate.quarantine.code == "duplicate_ticket"
    assert "zendesk.jsonl line 3" in duplicate.quarantine.message


def test_a_truncated_json_export_raises_naming_the_file(tmp_path: Path) -> None:
    complete = json.dumps({"issues": [jira_issue("HELP-1"), jira_issue("HELP-2")]})
    export = tmp_path / "jira.json"
    export.write_text(complete[: len(complete) - 40])
    seen: list[str] = []
    with pytest.raises(ConfigurationError, match=r"jira\.json: not valid JSON after 1 complete"):
        for item in CONNECTOR.scan(make_source(export, format="jira_json"), ScanState()):
            seen.append(item.doc_id)
    assert seen == ["helpdesk:HELP-1"]


def test_a_truncated_json_lines_export_raises_naming_the_line(tmp_path: Path) -> None:
    export = tmp_path / "zendesk.jsonl"
    lines = json.dumps(zendesk_ticket(1)) + "\n" + json.dumps(zendesk_ticket(2))
    export.write_text(lines[:-30])
    with pytest.raises(ConfigurationError, match=r"zendesk\.jsonl: line 2 .*truncated"):
        scan(make_source(export, acl_mapping={"9001": ["group:acme-support"]}))


def test_a_json_export_without_issues_raises(tmp_path: Path) -> None:
    export = tmp_path / "jira.json"
    export.write_text(json.dumps({"startAt": 0, "errorMessages": ["session expired"]}))
    with pytest.raises(ConfigurationError, match="no 'issues' array"):
        scan(make_source(export, format="jira_json"))


def test_a_truncated_or_ragged_csv_export_raises(tmp_path: Path) -> None:
    export = tmp_path / "zendesk.csv"
    export.write_text('Id,Subject,Organization\n1,"Printer jam,Initech\n')
    with pytest.raises(ConfigurationError, match=r"zendesk\.csv: not valid CSV"):
        scan(make_source(export))
    export.write_text("Id,Subject,Organization\n1,Printer jam,Initech\n2,Scanner\n")
    with pytest.raises(ConfigurationError, match=r"row 2 .* 2 cells, the header 3"):
        scan(make_source(export))


# --- fingerprint, memory, sample data ----------------------------------------------------


def test_fingerprint_follows_the_export_files_and_never_raises(tmp_path: Path) -> None:
    export = write_jira_json(tmp_path / "jira.json", [jira_issue("HELP-1")])
    source = make_source(tmp_path)
    before = CONNECTOR.fingerprint(source)
    assert CONNECTOR.fingerprint(source) == before
    write_jira_json(export, [jira_issue("HELP-1"), jira_issue("HELP-2")])
    assert CONNECTOR.fingerprint(source) != before
    assert CONNECTOR.fingerprint(make_source(tmp_path / "missing"))


def _peak_scanning(source: SourceConfig) -> int:
    tracemalloc.start()
    try:
        count = sum(1 for _ in CONNECTOR.scan(source, ScanState()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count > 0
    return peak


@pytest.mark.parametrize("export_format", ["jira_json", "zendesk_json", "jira_csv"])
def test_scan_memory_does_not_grow_with_the_export(tmp_path: Path, export_format: str) -> None:
    body = "The VPN tunnel drops when the office firewall expires idle sessions. " * 60

    def export_of(count: int) -> Path:
        path = tmp_path / f"{export_format}-{count}"
        if export_format == "jira_json":
            issues = [jira_issue(f"HELP-{n}", description=body) for n in range(count)]
            return write_jira_json(path.with_suffix(".json"), issues)
        if export_format == "zendesk_json":
            tickets = [
                zendesk_ticket(n, description=body, organization_id="Initech") for n in range(count)
            ]
            return write_jsonl(path.with_suffix(".jsonl"), tickets)
        rows = [
            ["S", f"HELP-{n}", str(n), "Open", "Initech", "", "", "", "", body, "", "", ""]
            for n in range(count)
        ]
        return write_csv(path.with_suffix(".csv"), JIRA_CSV_HEADER, rows)

    small = _peak_scanning(make_source(export_of(200), acl_field="customfield_10002"))
    large_export = export_of(2000)
    large = _peak_scanning(make_source(large_export, acl_field="customfield_10002"))
    per_ticket_bytes = large_export.stat().st_size / 2000
    assert per_ticket_bytes > 4000
    # Only the set of ticket keys seen (for duplicate detection) grows: about 100 bytes per
    # ticket, where holding the tickets would cost their 4 kB each.
    growth_per_ticket = (large - small) / 1800
    assert growth_per_ticket < 256, (small, large)
    assert large < large_export.stat().st_size / 10, (small, large)


def test_the_sample_helpdesk_export_scans_cleanly() -> None:
    folder = SAMPLE_CORPUS_DIR / "acme_helpdesk"
    source = make_source(
        folder,
        acl_field="customfield_10002",
        acl_mapping={"Acme Employees": ["group:acme-all"], "Initech": ["group:acme-support"]},
    )
    items = scan(source)
    assert len(items) >= 6
    assert all(isinstance(item, DiscoveredDocument) and not item.quarantine for item in items)
    principals = {item.acl_principals for item in items}  # type: ignore[union-attr]
    assert principals == {("group:acme-all",), ("group:acme-support",)}
    yaml.safe_dump([item.source_metadata for item in items])  # type: ignore[union-attr]


def test_a_folder_without_export_files_raises_rather_than_removing_everything(
    tmp_path: Path,
) -> None:
    (tmp_path / "README.txt").write_text("exports go here")
    with pytest.raises(ConfigurationError, match="no export files"):
        scan(make_source(tmp_path))
    write_jsonl(tmp_path / "zendesk.jsonl", [zendesk_ticket(1)])
    with pytest.raises(ConfigurationError, match="no export files"):
        scan(make_source(tmp_path, format="jira_csv"))


def test_a_byte_order_mark_is_accepted_in_every_format(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    jira = write_jira_json(tmp_path / "jira.json", [jira_issue("HELP-1")])
    zendesk = write_jsonl(
        tmp_path / "zendesk.jsonl", [zendesk_ticket(2, organization_id="Initech")]
    )
    row = ["3", "", "Printer", "", "Open", "", "", "", "Initech", ""]
    zendesk_csv = write_csv(tmp_path / "zendesk.csv", ZENDESK_CSV_HEADER, [row])
    for export in (jira, zendesk, zendesk_csv):
        export.write_bytes(bom + export.read_bytes())
    # Each file uses its format's default field: Jira's project, Zendesk's organisation.
    mapping = {"HELP": ["group:acme-all"], "Initech": ["group:acme-support"]}
    items = scan(make_source(tmp_path, acl_mapping=mapping))
    assert [item.doc_id for item in items] == ["helpdesk:HELP-1", "helpdesk:3", "helpdesk:2"]
    assert all(isinstance(item, DiscoveredDocument) and not item.quarantine for item in items)
