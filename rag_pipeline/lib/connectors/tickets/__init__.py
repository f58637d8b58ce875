"""The ticket export connector: Jira and Zendesk exports (JSON or CSV), one document per ticket.

`connector: tickets` reads an export file, or every export file of a folder in name order, and
renders each ticket as one Markdown document: a title line, a short field list, the description
and the comments in chronological order. The formats (`format`, inferred when not given):

- `jira_json`: Jira REST search results, `{"issues": [{"key", "fields": {...}}]}`, or a
  top-level array of such issues. Descriptions and comments may be wiki text (API v2) or
  Atlassian Document Format (API v3).
- `jira_csv`: Jira's CSV export, with its repeated `Comment` columns (`date;author;body`).
- `zendesk_json`: Zendesk's JSON export, one ticket per line (or a top-level array).
- `zendesk_csv`: Zendesk's CSV export (no comments; a `Description` column is used if present).

The package, one concern a module, in the order a scan uses them:

- `options`: the source's options, validated, and the formats they may name;
- `exports`: which files of the source are exports, and each one's format when not given;
- `readers`: streaming JSON, JSON-lines and CSV readers yielding raw records and positions;
- `model`, `fields`: the `Ticket` every format is read into, and the field helpers they share;
- `jira`, `zendesk`: one export record to a `Ticket`, for each vendor's JSON and CSV;
- `render`: a ticket as Markdown;
- `connector`: the scan (access, refusals, removals), the fingerprint and the connector class.
"""

from __future__ import annotations

from rag_pipeline.lib.connectors.tickets.connector import (
    MARKDOWN,
    TICKET_READERS,
    TicketExportConnector,
    fingerprint_exports,
    scan_tickets,
)
from rag_pipeline.lib.connectors.tickets.exports import (
    CSV_SUFFIXES,
    JSON_SUFFIXES,
    export_files,
    infer_format,
)
from rag_pipeline.lib.connectors.tickets.fields import parse_timestamp
from rag_pipeline.lib.connectors.tickets.jira import jira_csv_row, jira_issue
from rag_pipeline.lib.connectors.tickets.model import Comment, Ticket
from rag_pipeline.lib.connectors.tickets.options import (
    CATCH_ALL,
    DEFAULT_ACL_FIELDS,
    FORMATS,
    TicketOptions,
    parse_options,
)
from rag_pipeline.lib.connectors.tickets.readers import read_export
from rag_pipeline.lib.connectors.tickets.render import render_ticket
from rag_pipeline.lib.connectors.tickets.zendesk import MERGE_TAG, zendesk_csv_row, zendesk_ticket

__all__ = [
    "CATCH_ALL",
    "CSV_SUFFIXES",
    "DEFAULT_ACL_FIELDS",
    "FORMATS",
    "JSON_SUFFIXES",
    "MARKDOWN",
    "MERGE_TAG",
    "TICKET_READERS",
    "Comment",
    "Ticket",
    "TicketExportConnector",
    "TicketOptions",
    "export_files",
    "fingerprint_exports",
    "infer_format",
    "jira_csv_row",
    "jira_issue",
    "parse_options",
    "parse_timestamp",
    "read_export",
    "render_ticket",
    "scan_tickets",
    "zendesk_csv_row",
    "zendesk_ticket",
]
