"""Reading a ticket's fields from an export record: the helpers every format shares."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from rag_pipeline.lib.connectors.tickets.model import Comment, MalformedTicketError

# Formats Jira and Zendesk CSV exports write their timestamps in (Jira's follows the
# exporting user's settings; these are its defaults). Naive timestamps are read as UTC.
_CSV_TIME_FORMATS = (
    "%d/%b/%y %I:%M %p",
    "%d/%b/%Y %I:%M %p",
    "%d/%b/%y %H:%M",
    "%d/%m/%Y %H:%M",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
)


def parse_timestamp(value: Any, what: str, key: str | None) -> datetime | None:
    """An export's timestamp as an aware datetime (naive ones read as UTC); None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        parsed: datetime | None = None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            for time_format in _CSV_TIME_FORMATS:
                try:
                    parsed = datetime.strptime(text, time_format)
                    break
                except ValueError:
                    continue
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise MalformedTicketError(f"{what} is not a timestamp (got {value!r})", key)


def name_of(value: Any) -> str | None:
    """The text of a field that Jira writes as an object (`{"name": ...}`) or plain text."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        for key in ("key", "name", "value", "displayName", "id"):
            if value.get(key) not in (None, ""):
                return str(value[key])
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        return text.strip() or None
    return None


def field_values(record: Mapping[str, Any], dotted: str) -> tuple[str, ...]:
    """The values of a (dotted) field: one, several for a list field, none if absent."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return ()
        value = value.get(part)
    items = value if isinstance(value, list) else [value]
    names = [name_of(item) for item in items]
    return tuple(sorted({name for name in names if name}))


def ticket_key(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def ticket_subject(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MalformedTicketError(f"ticket {key} has no subject (got {value!r})", key)
    return " ".join(value.split())


def sorted_comments(comments: list[Comment]) -> tuple[Comment, ...]:
    # Exports list comments oldest first, but not every export promises it; a stable sort
    # keeps the export's order among comments of the same minute.
    return tuple(sorted(comments, key=lambda comment: comment.created))


def browse_url(api_url: Any, path: str) -> str | None:
    if not isinstance(api_url, str):
        return None
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}{path}"


def merge_target(value: Any) -> str | None:
    target = ticket_key(value)
    return target.lstrip("#") if target else None


def first_cell(record: Mapping[str, list[str]], *columns: str) -> str:
    for column in columns:
        for value in record.get(column, []):
            if value.strip():
                return value.strip()
    return ""


def cell_values(record: Mapping[str, list[str]], column: str) -> tuple[str, ...]:
    return tuple(sorted({value.strip() for value in record.get(column, []) if value.strip()}))
