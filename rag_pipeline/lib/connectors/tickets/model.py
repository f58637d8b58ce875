"""A ticket as every export format reads it, before rendering and access mapping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class MalformedTicketError(Exception):
    """One ticket cannot be rendered; `key` is None when not even its key could be read."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Comment:
    author: str
    created: datetime
    body: str
    public: bool


@dataclass(frozen=True)
class Ticket:
    """One ticket, read from any of the formats, before rendering and access mapping."""

    key: str
    display_key: str
    subject: str
    description: str
    status: str | None
    priority: str | None
    resolution: str | None
    acl_values: tuple[str, ...]
    created: datetime | None
    updated: datetime | None
    comments: tuple[Comment, ...]
    url: str | None = None
    ticket_id: str | None = None
    deleted: bool = False
    merged: bool = False
    merged_into: str | None = None
