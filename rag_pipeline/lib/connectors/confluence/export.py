"""The files of a Confluence HTML space export: the space details of `index.html`, the sorted
page files at the export root, the attachment folders, and reading one file within the size
limit without ever raising.

Such an export holds `index.html` (the space overview: its details table and page tree), one
`<Title>_<page id>.html` per page (older exports: `<page id>.html`), the page attachments under
`attachments/<page id>/<attachment id or name>`, and `styles/` and `images/`.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree, html

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors.base import (
    EPOCH,
    UNREAD_CONTENT_HASH,
    QuarantineReason,
    content_hash,
)

INDEX_FILE = "index.html"
ATTACHMENTS_DIR = "attachments"
# `Fleet-Telematics_65539.html` (current exports) or `65539.html` (older ones).
_PAGE_FILE = re.compile(r"^(?:.*_)?(?P<page_id>\d{1,18})\.html$")
# Confluence page ids are 64-bit integers (the scan keeps the ids it saw in an unsigned array).
_PAGE_ID = re.compile(r"^\d{1,18}$")
_INDEX_HEAD_BYTES = 64 * 1024


def _text(value: str | None) -> str:
    return " ".join((value or "").split())


@dataclass(frozen=True)
class SpaceDetails:
    key: str
    name: str | None


def _index_details(index: Path) -> dict[str, str]:
    """The rows of the space details table of `index.html` ("Key:", "Name:"), lower-cased.

    Only the head of the file is read: the details table comes first, and the page tree after
    it lists every page of the space (the HTML parser closes the cut-off markup).
    """
    try:
        with index.open("rb") as handle:
            head = handle.read(_INDEX_HEAD_BYTES)
        tree = html.document_fromstring(head, parser=html.HTMLParser(encoding="utf-8"))
    except (OSError, etree.LxmlError, ValueError):
        return {}
    details: dict[str, str] = {}
    for row in tree.iter("tr"):
        header, value = row.find("th"), row.find("td")
        if header is not None and value is not None:
            label = _text(header.text_content()).rstrip(":").lower()
            details.setdefault(label, _text(value.text_content()))
    return details


def space_details(source: SourceConfig) -> SpaceDetails:
    """The space key (the `space` option, checked against the export) and the space name.

    Raises `ConfigurationError` if `index.html` names another space than the option: pages of
    the wrong space must not be published under this source's access rules.
    """
    assert source.path is not None
    details = _index_details(source.path / INDEX_FILE)
    declared = source.options.get("space")
    exported = details.get("key") or None
    if declared is not None and exported is not None and declared != exported:
        raise ConfigurationError(
            f"{source.where}: 'space' is {declared!r} but {source.path / INDEX_FILE} is the "
            f"export of space {exported!r}"
        )
    key = declared or exported or source.path.name
    return SpaceDetails(key=key, name=details.get("name") or None)


def _page_files(root: Path) -> list[str]:
    """The sorted names of the page files at the export root (every `.html` but `index.html`)."""
    try:
        with os.scandir(root) as listing:
            names = [
                entry.name
                for entry in listing
                if entry.name.lower().endswith(".html")
                and entry.name != INDEX_FILE
                and not entry.name.startswith(".")
                # Never followed: a link could publish a file from outside the export.
                and entry.is_file(follow_symlinks=False)
            ]
    except OSError as error:
        raise ConfigurationError(f"{root}: cannot list the export folder: {error}") from error
    return sorted(names)


def _attachment_files(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as listing:
            return sorted(entry.name for entry in listing if entry.is_file(follow_symlinks=False))
    except OSError:
        return []


@dataclass(frozen=True)
class _FileRead:
    content: bytes | None
    digest: str
    size: int
    mtime: datetime
    problem: QuarantineReason | None = None


def _read(path: Path, max_bytes: int) -> _FileRead:
    """A file's bytes, or its hash and size only above `max_bytes`; never raises."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            mtime = datetime.fromtimestamp(info.st_mtime, tz=UTC)
            if not stat.S_ISREG(info.st_mode):
                return _FileRead(
                    None,
                    UNREAD_CONTENT_HASH,
                    0,
                    mtime,
                    QuarantineReason("unreadable_file", "not a regular file"),
                )
            if info.st_size > max_bytes:
                digest = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                return _FileRead(
                    None,
                    digest.hexdigest(),
                    info.st_size,
                    mtime,
                    QuarantineReason(
                        "too_large",
                        f"file is {info.st_size:,} bytes, above the limit of {max_bytes:,} "
                        "(RAG_MAX_DOCUMENT_BYTES)",
                    ),
                )
            data = handle.read()
    except OSError as error:
        return _FileRead(
            None,
            UNREAD_CONTENT_HASH,
            0,
            EPOCH,
            QuarantineReason("unreadable_file", f"cannot read: {error.strerror}"),
        )
    return _FileRead(data, content_hash(data), len(data), mtime)


class _PageListing:
    """The sorted page file names of the export, for link and breadcrumb lookups."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def has_file(self, name: str) -> bool:
        position = bisect.bisect_left(self.names, name)
        return position < len(self.names) and self.names[position] == name
