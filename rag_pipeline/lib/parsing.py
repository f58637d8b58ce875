"""Parse document bytes into typed elements with unstructured (fast strategy, fully offline).

The result keeps what citations need: element type, text, heading depth and page number, in
document order. A non-empty file that yields no text is an error, never an empty document:
unstructured returns zero elements for PDFs it cannot read instead of raising. Markup nested
deeper than the parser can follow is an error too (`markup_too_deep`), never a silently cut
document.

`parse_document` runs in the calling process with no time limit; the pipeline parses through
`rag_pipeline.lib.parse_worker`, which runs it in a child process it can kill.
"""

from __future__ import annotations

import importlib
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

import unstructured

from rag_pipeline.lib.offline import use_packaged_spacy_model

PARSER_KEY = f"unstructured-{unstructured.__version__.__version__}-fast-v1"
# Headings without a level (plain-text heuristics) sit below every real heading level.
LEAF_HEADING_DEPTH = 9
# Both go through unstructured's lxml HTML parser (Markdown is rendered to HTML first).
MARKUP_TYPES = frozenset({"text/html", "text/markdown"})


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


def _partition_pdf(content: bytes, languages: list[str], filename: str) -> list[Any]:
    from unstructured.partition.pdf import partition_pdf

    return partition_pdf(
        file=io.BytesIO(content), strategy="fast", languages=languages, metadata_filename=filename
    )


def _text_partitioner(module: str, function: str) -> Partitioner:
    """A partitioner for a text format: decodes with the document's encoding first."""

    def partition(
        content: bytes, languages: list[str], filename: str, encoding: str | None = None
    ) -> list[Any]:
        partition_text = getattr(importlib.import_module(module), function)
        return partition_text(
            text=content.decode(encoding or "utf-8"),
            languages=languages,
            metadata_filename=filename,
        )

    return partition


class Partitioner(Protocol):
    def __call__(
        self, content: bytes, languages: list[str], filename: str, encoding: str | None = ...
    ) -> list[Any]: ...


def _binary(partition: Callable[[bytes, list[str], str], list[Any]]) -> Partitioner:
    def call(
        content: bytes, languages: list[str], filename: str, encoding: str | None = None
    ) -> list[Any]:
        return partition(content, languages, filename)

    return call


# One unstructured partitioner per mime type of `connectors.formats.MIME_TYPES`
# (`test_parsing.py` checks that every listed type has one).
PARTITIONERS: dict[str, Partitioner] = {
    "application/pdf": _binary(_partition_pdf),
    "text/markdown": _text_partitioner("unstructured.partition.md", "partition_md"),
    "text/html": _text_partitioner("unstructured.partition.html", "partition_html"),
    "text/plain": _text_partitioner("unstructured.partition.text", "partition_text"),
}


def _partition(content: bytes, mime_type: str, encoding: str | None, filename: str) -> list[Any]:
    use_packaged_spacy_model()
    languages = ["eng"]  # skip language detection: it is slow and guesses badly on short text
    partitioner = PARTITIONERS.get(mime_type)
    if partitioner is None:
        raise ParseError("unsupported_format", f"no parser for {mime_type}")
    return partitioner(content, languages, filename, encoding)


def _fallback_title(filename: str) -> str:
    return PurePosixPath(filename).stem.replace("-", " ").replace("_", " ").strip().capitalize()


def _markup_parser_limit_error() -> str | None:
    """libxml2's message if the last HTML parse stopped at a resource limit, else None.

    libxml2 stops at 256 levels of nesting (without XML_PARSE_HUGE) and lxml's recovering HTML
    parser then returns the tree built so far without raising: the rest of the document is
    silently lost, or all of it when the text sits below the limit. The only trace is the
    parser's error log. unstructured parses every HTML (and rendered Markdown) document with
    this one module-level parser; `test_parsing.py` fails if that stops being true.
    """
    from lxml import etree
    from unstructured.partition.html.parser import html_parser

    for entry in html_parser.error_log:
        if entry.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
            return str(entry.message).strip()
    return None


def _reset_markup_parser_log() -> None:
    """Empty the shared parser's error log: a document that never reaches the parser (empty
    Markdown returns before it) must not inherit the previous document's errors."""
    from lxml import etree
    from unstructured.partition.html.parser import html_parser

    etree.fromstring("<html></html>", html_parser)


def _no_text_reason(size: int, mime_type: str) -> str:
    # Only a PDF can be a scan; blaming scanning for empty markup misleads whoever reads it.
    if mime_type == "application/pdf":
        detail = "a scanned or image-only PDF has no text layer, and OCR is not enabled"
    elif mime_type in MARKUP_TYPES:
        detail = "the markup contains no text content"
    else:
        detail = "the file contains only whitespace"
    return f"{size:,}-byte {mime_type} file produced no text ({detail})"


def parse_document(
    content: bytes,
    mime_type: str,
    *,
    encoding: str | None = None,
    filename: str = "document",
    declared_title: str | None = None,
) -> ParsedDocument:
    """Partition one document; raises `ParseError` with a reason code on any failure.

    Runs in the calling process without a time limit; see `parse_worker.ParseWorker` for one.
    """
    started = time.perf_counter()
    is_markup = mime_type in MARKUP_TYPES
    try:
        if is_markup:
            _reset_markup_parser_log()
        raw_elements = _partition(content, mime_type, encoding, filename)
    except ParseError:
        raise
    except RecursionError as error:
        # Python-Markdown recurses for each level of nested lists (500 levels exceed it).
        if is_markup:
            raise ParseError(
                "markup_too_deep",
                f"{mime_type} nesting is deeper than the parser can follow "
                f"(RecursionError: {error})",
            ) from error
        raise ParseError(
            "parser_error", f"RecursionError while parsing {mime_type}: {error}"[:500]
        ) from error
    except Exception as error:  # unstructured and pdfminer raise many unrelated types
        raise ParseError(
            "parser_error", f"{type(error).__name__} while parsing {mime_type}: {error}"[:500]
        ) from error
    if is_markup and (limit_error := _markup_parser_limit_error()) is not None:
        raise ParseError(
            "markup_too_deep",
            f"{mime_type} nesting is deeper than the HTML parser's limit: it stops there and "
            f"the rest of the document would be lost (libxml2: {limit_error})"[:500],
        )
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
        raise ParseError("no_text_extracted", _no_text_reason(len(content), mime_type))
    headings = [element for element in elements if element.is_heading]
    top_heading = min(headings, key=lambda e: (e.depth, e.index)).text if headings else None
    title = declared_title or top_heading or _fallback_title(filename)
    return ParsedDocument(
        title=title[:300],
        elements=elements,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )
