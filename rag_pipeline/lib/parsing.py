"""Parse document bytes into typed elements with unstructured (fast strategy, fully offline).

The result keeps what citations need: element type, text, heading depth and page number, in
document order. A non-empty file that yields no text is an error, never an empty document:
unstructured returns zero elements for PDFs it cannot read instead of raising.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

import unstructured

from rag_pipeline.lib.offline import use_packaged_spacy_model

PARSER_KEY = f"unstructured-{unstructured.__version__.__version__}-fast-v1"
# Headings without a level (plain-text heuristics) sit below every real heading level.
LEAF_HEADING_DEPTH = 9


class ParseError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedElement:
    index: int
    element_type: str
    text: str
    depth: int | None
    page_number: int | None

    @property
    def is_heading(self) -> bool:
        return self.element_type == "Title"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParsedElement:
        return cls(**data)


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    elements: list[ParsedElement]
    duration_ms: int

    @property
    def text_chars(self) -> int:
        return sum(len(element.text) for element in self.elements)


def _partition(content: bytes, mime_type: str, encoding: str | None, filename: str) -> list[Any]:
    use_packaged_spacy_model()
    languages = ["eng"]  # skip language detection: it is slow and guesses badly on short text
    if mime_type == "application/pdf":
        from unstructured.partition.pdf import partition_pdf

        return partition_pdf(
            file=io.BytesIO(content),
            strategy="fast",
            languages=languages,
            metadata_filename=filename,
        )
    text = content.decode(encoding or "utf-8")
    if mime_type == "text/markdown":
        from unstructured.partition.md import partition_md

        return partition_md(text=text, languages=languages, metadata_filename=filename)
    if mime_type == "text/html":
        from unstructured.partition.html import partition_html

        return partition_html(text=text, languages=languages, metadata_filename=filename)
    if mime_type == "text/plain":
        from unstructured.partition.text import partition_text

        return partition_text(text=text, languages=languages, metadata_filename=filename)
    raise ParseError("unsupported_format", f"no parser for {mime_type}")


def _fallback_title(filename: str) -> str:
    return PurePosixPath(filename).stem.replace("-", " ").replace("_", " ").strip().capitalize()


def parse_document(
    content: bytes,
    mime_type: str,
    *,
    encoding: str | None = None,
    filename: str = "document",
    declared_title: str | None = None,
) -> ParsedDocument:
    """Partition one document; raises `ParseError` with a reason code on any failure."""
    started = time.perf_counter()
    try:
        raw_elements = _partition(content, mime_type, encoding, filename)
    except ParseError:
        raise
    except Exception as error:  # unstructured and pdfminer raise many unrelated types
        raise ParseError(
            "parser_error", f"{type(error).__name__} while parsing {mime_type}: {error}"[:500]
        ) from error
    elements: list[ParsedElement] = []
    for raw in raw_elements:
        text = (raw.text or "").strip()
        if not text:
            continue
        metadata = raw.metadata
        depth = getattr(metadata, "category_depth", None)
        element_type = type(raw).__name__
        elements.append(
            ParsedElement(
                index=len(elements),
                element_type=element_type,
                text=text,
                depth=depth if element_type != "Title" or depth is not None else LEAF_HEADING_DEPTH,
                page_number=getattr(metadata, "page_number", None),
            )
        )
    if not elements:
        raise ParseError(
            "no_text_extracted",
            f"{len(content):,}-byte {mime_type} file produced no text "
            "(scanned or image-only PDF, or markup without content)",
        )
    headings = [element for element in elements if element.is_heading]
    top_heading = min(headings, key=lambda e: (e.depth, e.index)).text if headings else None
    title = declared_title or top_heading or _fallback_title(filename)
    return ParsedDocument(
        title=title[:300],
        elements=elements,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )
