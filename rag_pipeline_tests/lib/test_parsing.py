"""Parsing bytes into typed elements: headings, depths, pages, and errors instead of nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.lib.catalog import SAMPLE_CORPUS_DIR
from rag_pipeline.lib.parsing import (
    LEAF_HEADING_DEPTH,
    ParsedDocument,
    ParsedElement,
    ParseError,
    parse_document,
)

SAMPLE_PDFS = sorted((SAMPLE_CORPUS_DIR / "acme_policies").glob("*.pdf"))

MARKDOWN = b"""# Guide

Intro paragraph of the guide.

## Install

Run the installer.

### Linux

Use the package manager.

# Appendix

Closing words.
"""


def outline(document: ParsedDocument) -> list[tuple[str, int | None, str]]:
    return [(e.element_type, e.depth, e.text) for e in document.elements if e.is_heading]


@pytest.fixture(scope="module")
def parsed_pdfs() -> dict[str, ParsedDocument]:
    return {
        path.name: parse_document(path.read_bytes(), "application/pdf", filename=path.name)
        for path in SAMPLE_PDFS
    }


def test_markdown_headings_get_depths_from_their_level() -> None:
    document = parse_document(MARKDOWN, "text/markdown", filename="guide.md")
    assert outline(document) == [
        ("Title", 0, "Guide"),
        ("Title", 1, "Install"),
        ("Title", 2, "Linux"),
        ("Title", 0, "Appendix"),
    ]
    body = [e for e in document.elements if not e.is_heading]
    assert [e.text for e in body] == [
        "Intro paragraph of the guide.",
        "Run the installer.",
        "Use the package manager.",
        "Closing words.",
    ]
    assert [e.index for e in document.elements] == list(range(len(document.elements)))
    assert all(e.page_number is None for e in document.elements)
    assert document.title == "Guide"


def test_html_headings_and_paragraphs() -> None:
    html = (
        b"<html><head><title>ignored</title></head><body><h1>Deploys</h1>"
        b"<p>Every merge deploys to staging.</p><h2>Rollback</h2>"
        b"<p>Revert the merge commit.</p></body></html>"
    )
    document = parse_document(html, "text/html", filename="deploy.html")
    assert outline(document) == [("Title", 0, "Deploys"), ("Title", 1, "Rollback")]
    assert "Revert the merge commit." in [e.text for e in document.elements]
    assert document.title == "Deploys"


def test_plain_text_heading_without_level_sits_below_real_levels() -> None:
    text = (
        b"Login loop after SSO\n\n"
        b"The customer reports that the login loops forever after the SSO redirect.\n\n"
        b"We asked them to clear their cookies and try again.\n"
    )
    document = parse_document(text, "text/plain", filename="TCK-1001-sso-login-loop.txt")
    assert document.elements[0].is_heading
    assert document.elements[0].depth == LEAF_HEADING_DEPTH
    assert document.title == "Login loop after SSO"
    assert "We asked them to clear their cookies and try again." in [
        e.text for e in document.elements
    ]


def test_declared_encoding_is_used_for_text() -> None:
    data = "Caf\u00e9 prices rose by \u20ac5 this quarter, the team reported.".encode("cp1252")
    document = parse_document(data, "text/plain", encoding="cp1252", filename="menu.txt")
    assert "\u20ac5" in document.elements[0].text


def test_declared_title_wins_over_headings() -> None:
    document = parse_document(MARKDOWN, "text/markdown", declared_title="Official Guide")
    assert document.title == "Official Guide"


def test_title_falls_back_to_the_file_name_without_headings() -> None:
    document = parse_document(
        b"<html><body><p>Only a paragraph of body text here.</p></body></html>",
        "text/html",
        filename="wiki/feature-flags_v2.html",
    )
    assert not any(e.is_heading for e in document.elements)
    assert document.title == "Feature flags v2"


def test_text_chars_counts_element_text() -> None:
    document = parse_document(MARKDOWN, "text/markdown")
    assert document.text_chars == sum(len(e.text) for e in document.elements)


def test_elements_round_trip_through_json() -> None:
    element = parse_document(MARKDOWN, "text/markdown").elements[2]
    assert ParsedElement.from_json(element.to_json()) == element


@pytest.mark.parametrize("name", [path.name for path in SAMPLE_PDFS])
def test_sample_pdfs_give_elements_with_page_numbers_one_to_n(
    parsed_pdfs: dict[str, ParsedDocument], name: str
) -> None:
    document = parsed_pdfs[name]
    pages = sorted({e.page_number for e in document.elements if e.page_number is not None})
    assert len(pages) >= 2
    assert pages == list(range(1, len(pages) + 1))
    assert all(e.page_number is not None for e in document.elements)
    page_order = [e.page_number or 0 for e in document.elements]
    assert page_order == sorted(page_order)
    assert document.text_chars > 500
    assert any(e.is_heading for e in document.elements)


def test_sample_pdf_titles_come_from_their_top_heading(
    parsed_pdfs: dict[str, ParsedDocument],
) -> None:
    assert SAMPLE_PDFS
    for document in parsed_pdfs.values():
        assert document.title.startswith("Acme")


@pytest.mark.parametrize(
    "body",
    [
        b"%PDF-1.4\n garbage garbage \x00\x01\x02",
        b"%PDF-1.7\n" + bytes(range(256)) * 20,
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    ],
)
def test_pdf_with_valid_header_but_garbage_body_raises_instead_of_returning_nothing(
    body: bytes,
) -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(body, "application/pdf", filename="broken.pdf")
    assert raised.value.code in {"parser_error", "no_text_extracted"}


@pytest.mark.parametrize(
    ("content", "mime_type"),
    [
        (b"<html><body></body></html>", "text/html"),
        (b"<html><body><div>  </div><p></p></body></html>", "text/html"),
        (b"\n\n   \n", "text/markdown"),
    ],
)
def test_markup_without_text_raises_no_text_extracted(content: bytes, mime_type: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(content, mime_type, filename="blank")
    assert raised.value.code == "no_text_extracted"
    assert f"{len(content):,}-byte {mime_type}" in raised.value.message
    # Only a PDF can be a scan: empty markup must not send anyone looking for one.
    assert "scan" not in raised.value.message
    assert "PDF" not in raised.value.message


def test_whitespace_only_text_raises_no_text_extracted_without_blaming_a_scan() -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(b" \n\t\n", "text/plain", filename="blank.txt")
    assert raised.value.code == "no_text_extracted"
    assert "only whitespace" in raised.value.message
    assert "scan" not in raised.value.message


def test_pdf_without_a_text_layer_is_reported_as_possibly_scanned() -> None:
    # A valid one-page PDF whose page has no content stream: what a scan without OCR looks like.
    blank_page = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    with pytest.raises(ParseError) as raised:
        parse_document(blank_page, "application/pdf", filename="scan.pdf")
    assert raised.value.code == "no_text_extracted"
    assert "scanned or image-only PDF" in raised.value.message


def nested_html(depth: int, tag: str = "div", before: str = "", after: str = "") -> bytes:
    return (
        f"<html><body>{before}{f'<{tag}>' * depth}<p>Text at the bottom of the nesting.</p>"
        f"{f'</{tag}>' * depth}{after}</body></html>"
    ).encode()


@pytest.mark.parametrize("tag", ["div", "span", "blockquote"])
def test_html_nested_beyond_the_parser_limit_is_markup_too_deep(tag: str) -> None:
    # libxml2 stops at 256 levels; it used to come out as a scanned PDF (`no_text_extracted`).
    with pytest.raises(ParseError) as raised:
        parse_document(nested_html(300, tag), "text/html", filename="deep.html")
    assert raised.value.code == "markup_too_deep"
    assert "text/html nesting is deeper than the HTML parser's limit" in raised.value.message
    assert "Excessive depth" in raised.value.message
    assert "PDF" not in raised.value.message


def test_html_with_text_before_a_too_deep_part_is_not_silently_cut() -> None:
    # The parser keeps what precedes the limit and drops the rest without raising.
    content = nested_html(
        300, before="<p>Visible introduction before the nesting.</p>", after="<p>Lost end.</p>"
    )
    with pytest.raises(ParseError) as raised:
        parse_document(content, "text/html", filename="deep.html")
    assert raised.value.code == "markup_too_deep"


def test_html_nested_within_the_parser_limit_parses() -> None:
    document = parse_document(nested_html(200), "text/html", filename="nested.html")
    assert [e.text for e in document.elements] == ["Text at the bottom of the nesting."]


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        # 1,000 nested quotes render to HTML deeper than libxml2's limit.
        (b"> " * 1000 + b"Quoted at the bottom.", "HTML parser's limit"),
        # 500 nested list levels exceed Python-Markdown's recursion.
        (
            "".join("  " * level + "- item\n" for level in range(500)).encode(),
            "RecursionError",
        ),
    ],
    ids=["nested-quotes", "nested-lists"],
)
def test_markdown_nested_too_deep_is_markup_too_deep(content: bytes, cause: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(content, "text/markdown", filename="deep.md")
    assert raised.value.code == "markup_too_deep"
    assert raised.value.message.startswith("text/markdown nesting is deeper than")
    assert cause in raised.value.message


def test_a_too_deep_document_does_not_taint_the_next_one() -> None:
    # The depth error is read from a parser shared by all documents; whitespace-only Markdown
    # never reaches that parser, so it would see the previous document's error if not reset.
    with pytest.raises(ParseError):
        parse_document(nested_html(300), "text/html", filename="deep.html")
    with pytest.raises(ParseError) as raised:
        parse_document(b"\n  \n", "text/markdown", filename="blank.md")
    assert raised.value.code == "no_text_extracted"
    assert parse_document(MARKDOWN, "text/markdown").title == "Guide"


def test_undecodable_text_raises_parser_error() -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(b"caf\xe9", "text/plain")
    assert raised.value.code == "parser_error"
    assert "UnicodeDecodeError" in raised.value.message


def test_unknown_mime_type_raises_unsupported_format() -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(b"PK\x03\x04", "application/vnd.visio")
    assert raised.value.code == "unsupported_format"


def test_sample_corpus_pdfs_exist() -> None:
    assert [path.name for path in SAMPLE_PDFS] == [
        "information-security-policy.pdf",
        "travel-expense-policy.pdf",
    ]
    assert all(Path(path).read_bytes().startswith(b"%PDF-") for path in SAMPLE_PDFS)


def test_every_supported_format_has_a_partitioner() -> None:
    from rag_pipeline.lib.connectors.formats import MIME_TYPES
    from rag_pipeline.lib.parsing import PARTITIONERS

    assert set(MIME_TYPES.values()) == set(PARTITIONERS)
