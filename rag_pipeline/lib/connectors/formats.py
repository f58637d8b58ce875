"""The document formats the pipeline can parse, by file name suffix and mime type.

One table: connectors name an item's format from it (`mime_type_for`), and the parser
(`rag_pipeline.lib.parsing`) registers one partitioner per mime type listed here, so a format
is added in one place and an unknown one is quarantined `unsupported_format` by every connector.
"""

from __future__ import annotations

from pathlib import PurePosixPath

MIME_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".pdf": "application/pdf",
}
TEXT_MIME_TYPES = frozenset({"text/markdown", "text/html", "text/plain"})


def mime_type_for(name: str) -> str | None:
    """The mime type of a file name by its suffix (case-insensitive), or None if unsupported."""
    return MIME_TYPES.get(PurePosixPath(name).suffix.lower())


def supported_suffixes() -> list[str]:
    return sorted(MIME_TYPES)
