"""Zendesk exports to tickets: the JSON export (`zendesk_json`) and the CSV export
(`zendesk_csv`), with Zendesk's marks of deleted and merged tickets.
"""

from __future__ import annotations

import re
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

MERGE_TAG = "closed_by_merge"
_MERGE_COMMENT = re.compile(r"merged into request #(\d+)", re.IGNORECASE)


def zendesk_ticket(record: Any, acl_field: str) -> Ticket:
    """A ticket from one line of Zendesk's JSON export."""
    if not isinstance(record, Mapping):
        raise MalformedTicketError(f"expected a ticket object, got {type(record).__name__}")
    key = ticket_key(record.get("id"))
    if key is None:
        raise MalformedTicketError(f"ticket without an 'id' (got {record.get('id')!r})")
    raw_comments = record.get("comments")
    if raw_comments is not None and not isinstance(raw_comments, list):
        raise MalformedTicketError(f"ticket {key}: 'comments' is not a list", key)
    comments: list[Comment] = []
    merge_comment_target = None
    for number, raw in enumerate(raw_comments or [], start=1):
        what = f"ticket {key}: comment {number}"
        if not isinstance(raw, Mapping):
            raise MalformedTicketError(f"{what} is not an object", key)
        created = parse_timestamp(raw.get("created_at"), f"{what}: 'created_at'", key)
        if created is None:
            raise MalformedTicketError(f"{what} has no 'created_at' timestamp", key)
        body = raw.get("plain_body") if raw.get("body") is None else raw.get("body")
        if not isinstance(body, str):
            raise MalformedTicketError(f"{what} has no text 'body'", key)
        found = _MERGE_COMMENT.search(body)
        if found:
            merge_comment_target = found.group(1)
        author_id = ticket_key(raw.get("author_id"))
        author = f"user {author_id}" if author_id else "unknown author"
        comments.append(Comment(author, created, body, raw.get("public") is not False))
    tags = record.get("tags") or []
    if not isinstance(tags, list):
        raise MalformedTicketError(f"ticket {key}: 'tags' is not a list", key)
    description = record.get("description") or ""
    if not isinstance(description, str):
        raise MalformedTicketError(f"ticket {key}: 'description' is not text", key)
    if comments and comments[0].body.strip() == description.strip():
        # Zendesk's description is the ticket's first comment; render it once.
        comments = comments[1:]
    status = name_of(record.get("status"))
    merged_into = merge_target(record.get("merged_into")) or (
        merge_comment_target if MERGE_TAG in tags else None
    )
    subject = record.get("subject") or record.get("raw_subject")
    return Ticket(
        key=key,
        display_key=f"#{key}",
        subject=ticket_subject(subject, key),
        description=description,
        status=status,
        priority=name_of(record.get("priority")),
        resolution=None,
        acl_values=field_values(record, acl_field),
        created=parse_timestamp(record.get("created_at"), f"ticket {key}: 'created_at'", key),
        updated=parse_timestamp(record.get("updated_at"), f"ticket {key}: 'updated_at'", key),
        comments=sorted_comments(comments),
        url=browse_url(record.get("url"), f"/agent/tickets/{key}"),
        ticket_id=key,
        deleted=(status or "").lower() == "deleted",
        merged=MERGE_TAG in tags or merged_into is not None,
        merged_into=merged_into,
    )


def zendesk_csv_row(record: Mapping[str, list[str]], acl_field: str) -> Ticket:
    """A ticket from one row of Zendesk's CSV export (which carries no comments)."""
    key = first_cell(record, "Id") or None
    if key is None:
        raise MalformedTicketError("row without an 'Id'")
    tags = first_cell(record, "Tags").split()
    status = first_cell(record, "Status") or None
    merged_into = merge_target(first_cell(record, "merged_into", "Merged into") or None)
    return Ticket(
        key=key,
        display_key=f"#{key}",
        subject=ticket_subject(first_cell(record, "Subject"), key),
        description=first_cell(record, "Description"),
        status=status,
        priority=first_cell(record, "Priority") or None,
        resolution=None,
        acl_values=cell_values(record, acl_field),
        created=parse_timestamp(
            first_cell(record, "Created at"), f"ticket {key}: 'Created at'", key
        ),
        updated=parse_timestamp(
            first_cell(record, "Updated at"), f"ticket {key}: 'Updated at'", key
        ),
        comments=(),
        ticket_id=key,
        deleted=(status or "").lower() == "deleted",
        merged=MERGE_TAG in tags or merged_into is not None,
        merged_into=merged_into,
    )
