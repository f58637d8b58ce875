"""Jira exports to tickets: REST search results (`jira_json`, wiki text or Atlassian Document
Format) and the CSV export (`jira_csv`, with its repeated `Comment` columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rag_pipeline.lib.connectors.tickets.fields import (
    browse_url,
    cell_values,
    field_values,
    first_cell,
    merge_target,
    name_of,
    parse_timestamp,
    sorted_comments,
    ticket_key,
    ticket_subject,
)
from rag_pipeline.lib.connectors.tickets.model import Comment, MalformedTicketError, Ticket


def _text(value: Any) -> str:
    """Plain text of a wiki-text string or an Atlassian Document Format node."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _adf_text(value).strip()
    raise TypeError(f"expected text, got {type(value).__name__}")


_ADF_BLOCKS = frozenset(
    {"paragraph", "heading", "blockquote", "codeBlock", "panel", "rule", "mediaSingle"}
)


def _adf_text(node: Mapping[str, Any]) -> str:
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji"):
        attrs = node.get("attrs") or {}
        return str(attrs.get("text") or attrs.get("shortName") or "")
    children = node.get("content") or []
    if not isinstance(children, list):
        raise TypeError("ADF 'content' must be a list")
    inner = "".join(_adf_text(child) for child in children if isinstance(child, Mapping))
    if kind == "listItem":
        return "- " + inner.strip() + "\n"
    if kind in ("bulletList", "orderedList"):
        return inner + "\n"
    if kind == "heading":
        level = int((node.get("attrs") or {}).get("level", 3))
        return "#" * min(max(level + 2, 3), 6) + " " + inner.strip() + "\n\n"
    if kind in _ADF_BLOCKS:
        return inner.strip() + "\n\n"
    return inner


def jira_issue(record: Any, acl_field: str) -> Ticket:
    """A ticket from one issue of Jira's REST search results."""
    if not isinstance(record, Mapping):
        raise MalformedTicketError(f"expected an issue object, got {type(record).__name__}")
    key = ticket_key(record.get("key"))
    if key is None:
        raise MalformedTicketError(f"issue without a 'key' (got {record.get('key')!r})")
    fields = record.get("fields")
    if not isinstance(fields, Mapping):
        raise MalformedTicketError(f"issue {key} has no 'fields' object", key)
    comments: list[Comment] = []
    raw_comments = fields.get("comment")
    if isinstance(raw_comments, Mapping):
        raw_comments = raw_comments.get("comments")
    if raw_comments is not None and not isinstance(raw_comments, list):
        raise MalformedTicketError(f"issue {key}: 'comment.comments' is not a list", key)
    for number, raw in enumerate(raw_comments or [], start=1):
        what = f"issue {key}: comment {number}"
        if not isinstance(raw, Mapping):
            raise MalformedTicketError(f"{what} is not an object", key)
        created = parse_timestamp(raw.get("created"), f"{what}: 'created'", key)
        if created is None:
            raise MalformedTicketError(f"{what} has no 'created' timestamp", key)
        try:
            body = _text(raw.get("body"))
        except TypeError as error:
            raise MalformedTicketError(f"{what}: unreadable body ({error})", key) from error
        # Jira Service Management's internal notes (`jsdPublic: false`) and comments
        # restricted to a role or group are private: their readers are not the ticket's.
        public = raw.get("jsdPublic") is not False and not raw.get("visibility")
        author = raw.get("author")
        author_name = author.get("displayName") if isinstance(author, Mapping) else None
        comments.append(Comment(name_of(author_name) or "unknown author", created, body, public))
    try:
        description = _text(fields.get("description"))
    except TypeError as error:
        raise MalformedTicketError(f"issue {key}: unreadable description ({error})", key) from error
    merged_into = merge_target(record.get("merged_into") or fields.get("merged_into"))
    return Ticket(
        key=key,
        display_key=key,
        subject=ticket_subject(fields.get("summary"), key),
        description=description,
        status=name_of(fields.get("status")),
        priority=name_of(fields.get("priority")),
        resolution=name_of(fields.get("resolution")),
        acl_values=field_values(fields, acl_field),
        created=parse_timestamp(fields.get("created"), f"issue {key}: 'created'", key),
        updated=parse_timestamp(fields.get("updated"), f"issue {key}: 'updated'", key),
        comments=sorted_comments(comments),
        url=browse_url(record.get("self"), f"/browse/{key}"),
        ticket_id=ticket_key(record.get("id")),
        merged=merged_into is not None,
        merged_into=merged_into,
    )


def jira_csv_row(record: Mapping[str, list[str]], acl_field: str) -> Ticket:
    """A ticket from one row of Jira's CSV export."""
    key = first_cell(record, "Issue key") or None
    if key is None:
        raise MalformedTicketError("row without an 'Issue key'")
    comments: list[Comment] = []
    for number, cell in enumerate((c for c in record.get("Comment", []) if c.strip()), start=1):
        what = f"issue {key}: comment {number}"
        parts = cell.split(";", 2)
        if len(parts) != 3:
            raise MalformedTicketError(f"{what} is not 'date;author;body' (got {cell[:60]!r})", key)
        created = parse_timestamp(parts[0], f"{what}: date", key)
        if created is None:
            raise MalformedTicketError(f"{what} has no date", key)
        comments.append(Comment(parts[1].strip() or "unknown author", created, parts[2], True))
    merged_into = merge_target(first_cell(record, "merged_into", "Merged into") or None)
    return Ticket(
        key=key,
        display_key=key,
        subject=ticket_subject(first_cell(record, "Summary"), key),
        description=first_cell(record, "Description"),
        status=first_cell(record, "Status") or None,
        priority=first_cell(record, "Priority") or None,
        resolution=first_cell(record, "Resolution") or None,
        acl_values=cell_values(record, acl_field),
        created=parse_timestamp(first_cell(record, "Created"), f"issue {key}: 'Created'", key),
        updated=parse_timestamp(first_cell(record, "Updated"), f"issue {key}: 'Updated'", key),
        comments=sorted_comments(comments),
        ticket_id=first_cell(record, "Issue id") or None,
        merged=merged_into is not None,
        merged_into=merged_into,
    )
