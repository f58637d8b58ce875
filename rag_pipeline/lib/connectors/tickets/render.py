"""A ticket as the Markdown document that is parsed, chunked and embedded."""

from __future__ import annotations

from datetime import UTC, datetime

from rag_pipeline.lib.connectors.tickets.model import Ticket

# How the field list names the default access fields; any other is an organisation or group.
_ACL_FIELD_LABELS = {"project": "Project", "Project key": "Project", "group_id": "Group"}


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_ticket(ticket: Ticket, private_comments: bool, acl_field: str = "") -> str:
    """The ticket as Markdown: title, field list, description, comments oldest first."""
    lines = [f"# {ticket.display_key}: {ticket.subject}", ""]
    fields = (
        ("Status", ticket.status),
        ("Priority", ticket.priority),
        ("Resolution", ticket.resolution),
        (_ACL_FIELD_LABELS.get(acl_field, "Organisation"), ", ".join(ticket.acl_values) or None),
        ("Created", _when(ticket.created) if ticket.created else None),
        ("Updated", _when(ticket.updated) if ticket.updated else None),
    )
    lines += [f"- **{label}:** {value}" for label, value in fields if value]
    lines.append("")
    # Sections are left out rather than filled with a placeholder: the same "(no comments)"
    # chunk in hundreds of tickets would crowd search results (and fail the duplicate gate).
    if ticket.description.strip():
        lines += ["## Description", "", ticket.description.strip(), ""]
    shown = [c for c in ticket.comments if c.public or private_comments]
    if shown:
        lines += ["## Comments", ""]
    for comment in shown:
        marker = "" if comment.public else " (internal note)"
        lines += [f"### {comment.author} — {_when(comment.created)}{marker}", ""]
        lines += [comment.body.strip() or "(empty comment)", ""]
    return "\n".join(lines)
