"""The document version a stage (parse, redaction, chunking) still has to process.

Its own module so that the quarantine store and every stage store can share it without
importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PendingDocument:
    doc_id: str
    source: str
    uri: str
    relative_path: str
    content_hash: str
    mime_type: str
    encoding: str | None
    title: str | None
