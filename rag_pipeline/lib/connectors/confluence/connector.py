"""`ConfluenceExportConnector`: the scan of a Confluence HTML export into documents, one page
(and its attachments) at a time, and the fingerprint that tells the sensor the export changed.

Per page, one document `<source>:pages/<page id>` (see the package docstring). Attachments
(option `attachments`, default true) in a format `formats.py` supports become documents
`<source>:pages/<page id>/attachments/<file>` right after their page, with the page's access and
`source_metadata.page_id` / `attachment_of`; the others are only listed in the page's metadata.
Attachments of a page that is not in the export are quarantined: who may read them cannot be
known.

A page that cannot be used (too large, not UTF-8, no page id, no `#main-content`, no title, no
text) is quarantined alone. A missing export folder, one without pages, two files claiming one
page id, or an unusable permissions file fails the whole source (`ConfigurationError`), so that
a broken export never tombstones the pages it lost. Pages are read one at a time: memory holds
the sorted list of page file names and the page ids seen (8 bytes each), never two pages'
contents.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors.base import (
    DiscoveredDocument,
    QuarantineReason,
    ScanState,
    content_hash,
)
from rag_pipeline.lib.connectors.confluence.export import (
    _PAGE_FILE,
    _PAGE_ID,
    ATTACHMENTS_DIR,
    SpaceDetails,
    _attachment_files,
    _FileRead,
    _page_files,
    _PageListing,
    _read,
    space_details,
)
from rag_pipeline.lib.connectors.confluence.page import PAGE_MIME_TYPE, ParsedPage, parse_page
from rag_pipeline.lib.connectors.confluence.permissions import (
    PageAccess,
    SpacePermissions,
    load_permissions,
    page_access,
    permissions_path,
)
from rag_pipeline.lib.connectors.filesystem import classify_content, source_fingerprint
from rag_pipeline.lib.connectors.formats import mime_type_for


def _printable(name: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 written as `\\xNN`."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class _ExportScan:
    source: SourceConfig
    state: ScanState
    root: Path
    space: SpaceDetails
    permissions: SpacePermissions
    listing: _PageListing
    index_attachments: bool
    # The ids of the pages scanned, 8 bytes each: a set of strings would cost ten times that.
    page_ids: array[int] = field(default_factory=lambda: array("Q"))

    def doc_id(self, relative: str) -> str:
        return f"{self.source.name}:{relative}"

    @property
    def space_tenant(self) -> str:
        """The tenant a refused item is recorded under: the space's, else the source's."""
        return str(self.permissions.space.get("tenant") or self.source.defaults.get("tenant") or "")

    def seen(self, page_id: str) -> bool:
        position = bisect.bisect_left(self.page_ids, int(page_id))
        return position < len(self.page_ids) and self.page_ids[position] == int(page_id)

    def pages(self) -> Iterator[DiscoveredDocument]:
        for file_name in self.listing.names:
            yield from self.page(file_name)
        yield from self.orphan_attachments()

    def page(self, file_name: str) -> Iterator[DiscoveredDocument]:
        path = self.root / file_name
        read = _read(path, self.state.max_document_bytes)
        if read.content is not None:
            parsed = parse_page(read.content, file_name, self.space.name, self.listing)
        else:
            match = _PAGE_FILE.match(file_name)
            parsed = ParsedPage(page_id=match["page_id"] if match else None, problem=read.problem)
        page_id = parsed.page_id
        shown_name = _printable(file_name)
        if page_id is None:
            # No page id, so no stable document id: the file name stands in, and with no
            # breadcrumbs or id nobody can be granted it.
            yield self.unidentified(shown_name, path, read, parsed)
            return
        if self.seen(page_id):
            raise ConfigurationError(
                f"{self.source.where}: {shown_name} is a second file for page {page_id} in "
                f"{self.root}; an export holds one file per page (two exports merged?)"
            )
        bisect.insort(self.page_ids, int(page_id))
        ancestors = None if parsed.breadcrumbs is None else [pid for pid, _ in parsed.breadcrumbs]
        access = page_access(
            self.source,
            self.permissions,
            page_id,
            ancestors,
            {"title": parsed.title, "updated_at": parsed.updated_at},
        )
        attachment_files = _attachment_files(self.root / ATTACHMENTS_DIR / page_id)
        attachments = self.attachment_listing(page_id, attachment_files, parsed.attachment_names)
        content = parsed.content
        document = DiscoveredDocument(
            doc_id=self.doc_id(f"pages/{page_id}"),
            source=self.source.name,
            uri=path.as_uri(),
            relative_path=f"pages/{page_id}",
            content_hash=content_hash(content) if content is not None else read.digest,
            byte_size=len(content) if content is not None else read.size,
            mime_type=PAGE_MIME_TYPE,
            encoding=None,
            owner=access.metadata.owner,
            tenant=access.metadata.tenant,
            acl_principals=access.metadata.acl,
            title=parsed.title,
            updated_at=parsed.updated_at or read.mtime,
            content=content,
            source_metadata={
                "space": self.space.key,
                "page_id": page_id,
                "file": shown_name,
                "breadcrumbs": [
                    {"page_id": pid, "title": title} for pid, title in parsed.breadcrumbs or []
                ],
                "links": parsed.links,
                "attachments": attachments,
                "restricted_by": list(access.restricted_by),
            },
        )
        yield _refused(document, read.problem or parsed.problem, access.problem)
        if not self.index_attachments:
            return
        for entry in attachments:
            if entry["indexed"]:
                yield self.attachment(page_id, entry, access, parsed.title)

    def attachment_listing(
        self, page_id: str, files: list[str], names: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Every attachment of a page (on disk or only listed by it), and whether it is indexed."""
        listing = []
        for file_name in sorted(set(files) | set(names)):
            shown = names.get(file_name)
            mime_type = mime_type_for(file_name) or (mime_type_for(shown) if shown else None)
            in_export = file_name in files
            listing.append(
                {
                    "file": _printable(file_name),
                    "name": shown,
                    "mime_type": mime_type,
                    "in_export": in_export,
                    "indexed": bool(self.index_attachments and in_export and mime_type),
                    "doc_id": self.doc_id(f"pages/{page_id}/attachments/{_printable(file_name)}")
                    if self.index_attachments and in_export and mime_type
                    else None,
                }
            )
        return listing

    def attachment(
        self,
        page_id: str,
        entry: Mapping[str, Any],
        access: PageAccess,
        page_title: str | None,
    ) -> DiscoveredDocument:
        file_name = entry["file"]
        path = self.root / ATTACHMENTS_DIR / page_id / file_name
        read = _read(path, self.state.max_document_bytes)
        relative = f"pages/{page_id}/attachments/{file_name}"
        meta = access.metadata
        document = DiscoveredDocument(
            doc_id=self.doc_id(relative),
            source=self.source.name,
            uri=path.as_uri(),
            relative_path=relative,
            content_hash=read.digest,
            byte_size=read.size,
            mime_type=entry["mime_type"],
            encoding=None,
            owner=meta.owner,
            tenant=meta.tenant,
            acl_principals=meta.acl,
            title=entry["name"],
            updated_at=read.mtime,
            content=read.content,
            source_metadata={
                "space": self.space.key,
                "page_id": page_id,
                "attachment_of": self.doc_id(f"pages/{page_id}"),
                "page_title": page_title,
                "file": file_name,
                "name": entry["name"],
                "restricted_by": list(access.restricted_by),
            },
        )
        content_problem = read.problem
        if content_problem is None and read.content is not None:
            content_problem = classify_content(read.content, entry["mime_type"], None)
        return _refused(document, content_problem, access.problem)

    def orphan_attachments(self) -> Iterator[DiscoveredDocument]:
        """Attachments of pages absent from the export: refused, their access is unknowable."""
        if not self.index_attachments:
            return
        folder = self.root / ATTACHMENTS_DIR
        try:
            with os.scandir(folder) as listing:
                orphans = sorted(
                    entry.name
                    for entry in listing
                    if _PAGE_ID.match(entry.name) and not self.seen(entry.name) and entry.is_dir()
                )
        except OSError:
            return
        tenant = self.space_tenant
        for page_id in orphans:
            for file_name in _attachment_files(folder / page_id):
                if mime_type_for(file_name) is None:
                    continue
                relative = f"pages/{page_id}/attachments/{_printable(file_name)}"
                path = folder / page_id / file_name
                read = _read(path, self.state.max_document_bytes)
                yield DiscoveredDocument(
                    doc_id=self.doc_id(relative),
                    source=self.source.name,
                    uri=path.as_uri(),
                    relative_path=relative,
                    content_hash=read.digest,
                    byte_size=read.size,
                    mime_type=mime_type_for(file_name),
                    encoding=None,
                    owner=None,
                    tenant=tenant,
                    acl_principals=(),
                    title=None,
                    updated_at=read.mtime,
                    source_metadata={"space": self.space.key, "page_id": page_id},
                    quarantine=QuarantineReason(
                        "no_access_control",
                        f"attachment of page {page_id}, which is not in the export: the page's "
                        "restrictions, and so who may read it, cannot be known",
                    ),
                )

    def unidentified(
        self, shown_name: str, path: Path, read: _FileRead, parsed: ParsedPage
    ) -> DiscoveredDocument:
        relative = f"files/{shown_name}"
        return DiscoveredDocument(
            doc_id=self.doc_id(relative),
            source=self.source.name,
            uri=path.as_uri(),
            relative_path=relative,
            content_hash=read.digest,
            byte_size=read.size,
            mime_type=PAGE_MIME_TYPE,
            encoding=None,
            owner=None,
            tenant=self.space_tenant,
            acl_principals=(),
            title=parsed.title,
            updated_at=read.mtime,
            source_metadata={"space": self.space.key, "file": shown_name},
            quarantine=parsed.problem
            or read.problem
            or QuarantineReason("malformed_page", "no page id"),
        )


def _refused(
    document: DiscoveredDocument,
    content_problem: QuarantineReason | None,
    access_problem_found: QuarantineReason | None,
) -> DiscoveredDocument:
    """The document, refused for the first reason found; a doubt about access empties its ACL
    even when another reason is the one reported."""
    reason = content_problem or access_problem_found
    if reason is None:
        return document
    refused = document.quarantined(reason)
    if access_problem_found is not None:
        refused = replace(refused, acl_principals=(), owner=None)
    return refused


class ConfluenceExportConnector:
    """`connector: confluence`: the pages (and attachments) of a Confluence HTML space export."""

    name: ClassVar[str] = "confluence"
    option_keys: ClassVar[frozenset[str]] = frozenset(
        {"path", "space", "attachments", "permissions"}
    )

    def validate(self, source: SourceConfig) -> None:
        self._checked_permissions(source)

    def _checked_permissions(self, source: SourceConfig) -> SpacePermissions:
        """The source's permissions, once every option was checked; `ConfigurationError` names
        the option that is unusable."""
        if source.path is None:
            raise ConfigurationError(
                f"{source.where}: 'path' (the folder of the HTML space export) is required"
            )
        if not source.path.is_dir():
            raise ConfigurationError(f"{source.where}: export folder {source.path} does not exist")
        space = source.options.get("space")
        if space is not None and not (
            isinstance(space, str) and space.strip() and space == space.strip()
        ):
            raise ConfigurationError(
                f"{source.where}: 'space' must be a space key such as 'GLOPS' (got {space!r})"
            )
        attachments = source.options.get("attachments", True)
        if not isinstance(attachments, bool):
            raise ConfigurationError(
                f"{source.where}: 'attachments' must be true or false (got {attachments!r})"
            )
        permissions = source.options.get("permissions")
        if permissions is not None and not (isinstance(permissions, str) and permissions):
            raise ConfigurationError(
                f"{source.where}: 'permissions' must be the path of a YAML or JSON file, "
                f"relative to the sources file (got {permissions!r})"
            )
        return load_permissions(source)

    def scan(self, source: SourceConfig, state: ScanState) -> Iterator[DiscoveredDocument]:
        permissions = self._checked_permissions(source)
        assert source.path is not None
        space = space_details(source)
        if permissions.key is not None and permissions.key != space.key:
            raise ConfigurationError(
                f"{source.where}: {permissions.where} was exported for space "
                f"{permissions.key!r}, not {space.key!r}"
            )
        if permissions_path(source) is None:
            state.warnings.append(
                f"{source.name}: no permissions file (option 'permissions', or permissions.json "
                "/ permissions.yaml in the export): every page gets the source's ACL, including "
                "pages restricted in Confluence"
            )
        names = _page_files(source.path)
        if not names:
            raise ConfigurationError(
                f"{source.where}: {source.path} holds no pages ('<Title>_<page id>.html' files "
                "next to index.html): not a Confluence HTML space export, or an empty one"
            )
        yield from _ExportScan(
            source=source,
            state=state,
            root=source.path,
            space=space,
            permissions=permissions,
            listing=_PageListing(names),
            index_attachments=source.options.get("attachments", True),
        ).pages()

    def fingerprint(self, source: SourceConfig) -> str:
        """A digest of the export's listing (names, sizes, mtimes) and of the permissions file."""
        try:
            digest = hashlib.sha256()
            if source.path is not None:
                digest.update(source_fingerprint(source).encode())
            try:
                permissions = permissions_path(source)
            except ConfigurationError as error:
                digest.update(f"permissions:{error}".encode())
            else:
                if permissions is not None:
                    info = permissions.stat()
                    digest.update(
                        f"permissions:{permissions}:{info.st_size}:{info.st_mtime_ns}".encode()
                    )
            return digest.hexdigest()
        except Exception as error:  # the sensor must get a value whatever happened
            return f"unavailable:{type(error).__name__}:{error}"
