"""One page file of a Confluence HTML export, parsed into what its document needs.

Each page file is a whole Confluence screen: `#breadcrumbs` (the space overview, then every
ancestor page), `#title-text` ("<Space name> : <Title>"), `.page-metadata` ("Created by A, last
modified by B on Mar 01, 2024"), `#main-content` (the page body), then the attachments and
comments sections and the footer. What the page's document takes from it:

- Content: a normalised HTML document, `<h1>title</h1>` followed by `#main-content` (table of
  contents macros, styles and scripts dropped; when the body uses `h1` itself, its headings move
  one level down), so every heading path starts with the page title. Navigation, metadata,
  attachment list, comments and footer are left out. Mime type text/html.
- Title from `#title-text` without the space name prefix, never from the file name;
  `updated_at` from `.page-metadata` (the file's mtime when it names no date).
- `source_metadata`: space key, page id, export file name, breadcrumbs (ancestor titles and page
  ids), internal links (page ids of the export the body links to), attachments (each with
  whether it is indexed), and the pages whose restrictions shaped its ACL. No author or editor
  names: they are not part of the document text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from lxml import etree, html

from rag_pipeline.lib.connectors.base import QuarantineReason
from rag_pipeline.lib.connectors.confluence.export import (
    _PAGE_FILE,
    _PAGE_ID,
    INDEX_FILE,
    _PageListing,
    _text,
)
from rag_pipeline.lib.connectors.filesystem import classify_content

PAGE_MIME_TYPE = "text/html"
_ATTACHMENT_HREF = re.compile(r"^attachments/(?P<page_id>\d{1,18})/(?P<file>[^/?#]+)")
# "... last modified by B on Mar 01, 2024": the last date named is the last modification.
_METADATA_DATE = re.compile(r"\bon ([A-Z][a-z]{2,8}\.? \d{1,2}, \d{4})")
_DATE_FORMATS = ("%b %d, %Y", "%B %d, %Y")
# Inside `#main-content`: styling and the table of contents macro (the headings again).
_DROPPED_ELEMENTS = ".//style | .//script | .//noscript | .//*[contains(@class, 'toc-macro')]"
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


@dataclass
class ParsedPage:
    """What one page file says about itself; `problem` says why it cannot be a document."""

    page_id: str | None = None
    title: str | None = None
    # (page id or None, title) of each ancestor, top first; None: no breadcrumbs found.
    breadcrumbs: list[tuple[str | None, str]] | None = None
    updated_at: datetime | None = None
    links: list[str] = field(default_factory=list)
    # Attachment file name -> the name the page shows for it.
    attachment_names: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    problem: QuarantineReason | None = None


def _malformed(page: ParsedPage, message: str) -> ParsedPage:
    page.problem = QuarantineReason("malformed_page", message)
    return page


def _first(tree: html.HtmlElement, xpath: str) -> html.HtmlElement | None:
    found = tree.xpath(xpath)
    return found[0] if found else None


def _page_id_in_markup(tree: html.HtmlElement) -> str | None:
    for name in ("ajs-page-id", "confluence-page-id"):
        meta = _first(tree, f"//meta[@name='{name}']")
        if meta is not None and _PAGE_ID.match(meta.get("content", "").strip()):
            return meta.get("content").strip()
    return None


def _page_id_of_href(href: str, page_files: _PageListing | None = None) -> str | None:
    """The page id an `<a href>` of the export points to; with `page_files`, only if that page
    file is in the export."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or parts.path.startswith("/"):
        return None  # outside the export (the export rewrites links between its pages)
    name = unquote(parts.path).rsplit("/", 1)[-1]
    match = _PAGE_FILE.match(name)
    if match is None or (page_files is not None and not page_files.has_file(name)):
        return None
    return match["page_id"]


def _strip_space_prefix(title: str, space_name: str | None) -> str:
    if space_name and title.startswith(f"{space_name} : "):
        return title[len(space_name) + 3 :].strip()
    if space_name is None and " : " in title:
        return title.split(" : ", 1)[1].strip()
    return title


def _updated_at(tree: html.HtmlElement) -> datetime | None:
    metadata = _first(tree, "//*[contains(concat(' ', @class, ' '), ' page-metadata ')]")
    if metadata is None:
        return None
    dates = _METADATA_DATE.findall(_text(metadata.text_content()))
    for value in reversed(dates):
        for pattern in _DATE_FORMATS:
            try:
                return datetime.strptime(value.replace(".", ""), pattern).replace(tzinfo=UTC)
            except ValueError:
                continue
    return None


def _normalised_document(title: str, main: html.HtmlElement) -> bytes:
    """`<h1>title</h1>` and the page body, its headings below the title's level."""
    levels = [int(heading.tag[1]) for heading in main.iter(*_HEADINGS)]
    if levels and min(levels) < 2:
        for heading in main.iter(*_HEADINGS):
            heading.tag = f"h{min(int(heading.tag[1]) + 1, 6)}"
    document = html.document_fromstring(
        "<html><head><meta charset='utf-8'><title></title></head><body><h1></h1></body></html>"
    )
    document.find("head/title").text = title
    body = document.find("body")
    body.find("h1").text = title
    main.attrib.clear()
    main.tag = "div"
    main.tail = None
    body.append(main)
    return html.tostring(document, encoding="utf-8", doctype="<!DOCTYPE html>")


def parse_page(
    data: bytes, file_name: str, space_name: str | None, page_files: _PageListing
) -> ParsedPage:
    """Read one page file of the export; never raises (a bad page gets a `problem`)."""
    page = ParsedPage()
    match = _PAGE_FILE.match(file_name)
    name_id = match["page_id"] if match else None
    page.page_id = name_id
    problem = classify_content(data, PAGE_MIME_TYPE, "utf-8")
    if problem is not None and problem.code == "undecodable_text":
        # Confluence writes its exports in UTF-8: there is no other encoding to declare.
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            problem = QuarantineReason(
                problem.code,
                f"page is not valid UTF-8, as Confluence exports are: byte 0x"
                f"{data[error.start]:02x} at offset {error.start}",
            )
    if problem is not None:
        page.problem = problem
        return page
    try:
        tree = html.document_fromstring(data, parser=html.HTMLParser(encoding="utf-8"))
    except (etree.LxmlError, ValueError) as error:
        return _malformed(page, f"not an HTML page: {error}")
    markup_id = _page_id_in_markup(tree)
    if markup_id and name_id and markup_id != name_id:
        return _malformed(page, f"the file name says page {name_id} but the page says {markup_id}")
    if markup_id is None and name_id is None:
        owners = {
            found["page_id"]
            for link in tree.xpath(
                "//*[contains(concat(' ', @class, ' '), ' pageSection ')]//a[@href]"
            )
            if (found := _ATTACHMENT_HREF.match(link.get("href", ""))) is not None
        }
        markup_id = owners.pop() if len(owners) == 1 else None
    page.page_id = markup_id or name_id
    if page.page_id is None:
        return _malformed(page, "no page id: neither the file name nor the page names one")
    for link in tree.xpath("//a[@href]"):
        found = _ATTACHMENT_HREF.match(link.get("href", ""))
        if found is None or found["page_id"] != page.page_id:
            continue
        shown = link.get("data-linked-resource-default-alias") or _text(link.text_content())
        if shown:
            page.attachment_names.setdefault(unquote(found["file"]), shown)

    crumbs = _first(tree, "//*[@id='breadcrumbs']")
    if crumbs is not None:
        page.breadcrumbs = []
        # Each item, linked or not: an ancestor shown without a link still stands above the
        # page, and skipping it would skip its restriction.
        for item in crumbs.xpath(".//li") or crumbs.xpath(".//a"):
            link = item if item.tag == "a" else _first(item, ".//a[@href]")
            href = link.get("href", "") if link is not None else ""
            shown = _text(item.text_content())
            if href == INDEX_FILE:
                space_name = shown or space_name
                continue
            # The id in the link is the ancestor's even when its page was not exported.
            page.breadcrumbs.append((_page_id_of_href(href) if href else None, shown))
    # Not `a or b`: an lxml element without children is falsy.
    title_element = _first(tree, "//*[@id='title-text']")
    if title_element is None:
        title_element = _first(tree, "//head/title")
    if title_element is not None:
        page.title = _strip_space_prefix(_text(title_element.text_content()), space_name) or None
    page.updated_at = _updated_at(tree)

    main = _first(tree, "//*[@id='main-content']")
    if main is None:
        return _malformed(page, "no #main-content element: not a page body")
    if page.title is None:
        return _malformed(page, "no page title (#title-text)")
    for dropped in main.xpath(_DROPPED_ELEMENTS):
        dropped.drop_tree()
    if not _text(main.text_content()):
        page.problem = QuarantineReason(
            "empty_page", "the page body has no text (a page that only holds child pages?)"
        )
        return page
    links: set[str] = set()
    for link in main.xpath(".//a[@href]"):
        target = _page_id_of_href(link.get("href", ""), page_files)
        if target is not None and target != page.page_id:
            links.add(target)
    page.links = sorted(links, key=int)
    page.content = _normalised_document(page.title, main)
    return page
