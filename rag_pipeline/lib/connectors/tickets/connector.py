"""The scan: export items to documents, with their access, refusals and removals.

Access comes from `acl_mapping` only: the value of the ticket's organisation/group field
(`acl_field`) is looked up in it, and a ticket whose value is missing or unmapped is quarantined
`no_access_control` with an empty ACL; the source's default ACL never applies. A ticket the
export marks deleted (Zendesk `status: deleted`) or merged (Zendesk tag `closed_by_merge`, or a
`merged_into` field) becomes a `RemovedDocument`; a ticket absent from the export is tombstoned
by `sync_source`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors.access import item_metadata
from rag_pipeline.lib.connectors.base import (
    EPOCH,
    DiscoveredDocument,
    QuarantineReason,
    RemovedDocument,
    ScannedItem,
    ScanState,
    content_hash,
)
from rag_pipeline.lib.connectors.tickets.exports import (
    export_files,
    infer_format,
    is_export_candidate,
)
from rag_pipeline.lib.connectors.tickets.jira import jira_csv_row, jira_issue
from rag_pipeline.lib.connectors.tickets.model import MalformedTicketError, Ticket
from rag_pipeline.lib.connectors.tickets.options import CATCH_ALL, TicketOptions, parse_options
from rag_pipeline.lib.connectors.tickets.readers import RawItem, read_export
from rag_pipeline.lib.connectors.tickets.render import render_ticket
from rag_pipeline.lib.connectors.tickets.zendesk import zendesk_csv_row, zendesk_ticket

MARKDOWN = "text/markdown"


TICKET_READERS: dict[str, Callable[[Any, str], Ticket]] = {
    "jira_json": jira_issue,
    "jira_csv": jira_csv_row,
    "zendesk_json": zendesk_ticket,
    "zendesk_csv": zendesk_csv_row,
}


@dataclass
class _ScanContext:
    source: SourceConfig
    options: TicketOptions
    state: ScanState
    # Keys of the tickets read so far: the one structure that grows with the export.
    seen: set[str] = field(default_factory=set)


def _principals(
    ticket: Ticket, mapping: Mapping[str, tuple[str, ...]], acl_field: str
) -> tuple[tuple[str, ...], str | None]:
    """The union of the principals of the ticket's values, or why there are none."""
    catch_all = mapping.get(CATCH_ALL)
    if not ticket.acl_values:
        if catch_all:
            return catch_all, None
        return (), f"ticket {ticket.display_key} has no {acl_field!r} value"
    unmapped = [value for value in ticket.acl_values if value not in mapping]
    if unmapped and not catch_all:
        return (
            (),
            f"ticket {ticket.display_key}: {acl_field!r} value(s) {unmapped} not in acl_mapping",
        )
    granted = {p for value in ticket.acl_values for p in mapping.get(value, catch_all or ())}
    return tuple(sorted(granted)), None


def _doc_uri(path: Path, ticket_key: str) -> str:
    return f"{path.as_uri()}#{ticket_key}"


def _refused(
    context: _ScanContext,
    doc_id: str,
    relative: str,
    uri: str,
    reason: QuarantineReason,
    evidence: bytes,
    title: str | None,
    updated_at: datetime,
    metadata: Mapping[str, Any],
) -> DiscoveredDocument:
    """A quarantined ticket: no ACL, no owner, whatever its fields said."""
    return DiscoveredDocument(
        doc_id=doc_id,
        source=context.source.name,
        uri=uri,
        relative_path=relative,
        content_hash=content_hash(evidence),
        byte_size=len(evidence),
        mime_type=MARKDOWN,
        encoding=None,
        owner=None,
        tenant=str(context.source.defaults.get("tenant") or ""),
        acl_principals=(),
        title=title,
        updated_at=updated_at,
        source_metadata=dict(metadata),
    ).quarantined(reason)


def _raw_evidence(record: Any) -> bytes:
    # What a refused ticket looked like, so that fixing it in the export counts as a change.
    return json.dumps(record, sort_keys=True, default=str, ensure_ascii=False).encode()


def _scan_item(
    context: _ScanContext,
    path: Path,
    file_label: str,
    export_format: str,
    raw: RawItem,
    file_mtime: datetime,
) -> ScannedItem:
    source = context.source
    options = context.options
    acl_field = options.acl_field_for(export_format)
    where = {"export_file": file_label, raw.position_kind: raw.position, "format": export_format}
    position_label = f"{file_label} {raw.position_kind} {raw.position}"
    try:
        ticket = TICKET_READERS[export_format](raw.record, acl_field)
    except MalformedTicketError as error:
        key = error.key or f"{file_label}#{raw.position_kind}-{raw.position}"
        if error.key in context.seen:
            # Its key is already a document of this scan: one id must not be reported twice.
            key = f"{error.key}#duplicate-{file_label}-{raw.position_kind}-{raw.position}"
        elif error.key:
            context.seen.add(error.key)
        return _refused(
            context,
            f"{source.name}:{key}",
            key,
            _doc_uri(path, key),
            QuarantineReason("invalid_ticket", f"{position_label}: {error}"),
            _raw_evidence(raw.record),
            None,
            file_mtime,
            {**where, "ticket_key": error.key},
        )
    doc_id = f"{source.name}:{ticket.key}"
    if ticket.key in context.seen:
        duplicate = f"{ticket.key}#duplicate-{file_label}-{raw.position_kind}-{raw.position}"
        return _refused(
            context,
            f"{source.name}:{duplicate}",
            duplicate,
            _doc_uri(path, ticket.key),
            QuarantineReason(
                "duplicate_ticket",
                f"ticket {ticket.display_key} appears again at {position_label}, after an "
                "earlier copy in this scan; the later copy is ignored",
            ),
            _raw_evidence(raw.record),
            ticket.subject,
            ticket.updated or ticket.created or file_mtime,
            {**where, "ticket_key": ticket.key},
        )
    context.seen.add(ticket.key)
    if ticket.deleted:
        return RemovedDocument(doc_id, "deleted in the export")
    if ticket.merged:
        target = ticket.merged_into
        return RemovedDocument(
            doc_id,
            f"merged into {target}" if target else "merged into a ticket the export does not name",
        )
    text = render_ticket(ticket, options.private_comments, acl_field).encode("utf-8")
    metadata = {
        **where,
        "ticket_key": ticket.key,
        "ticket_id": ticket.ticket_id,
        "status": ticket.status,
        "organisation": list(ticket.acl_values),
        "comment_count": sum(1 for c in ticket.comments if c.public or options.private_comments),
    }
    updated_at = ticket.updated or ticket.created or file_mtime
    principals, unmapped = _principals(ticket, options.acl_mapping, acl_field)
    # The source's own `acl`/`owner` are its documents' defaults, as in a sidecar: a ticket
    # whose organisation is mapped gets the mapping's principals instead (like a document's
    # own `acl`); one that is unmapped keeps the defaults when the source declares any.
    by_defaults = unmapped is not None and ("acl" in source.defaults or "owner" in source.defaults)
    metadata["acl_from"] = "source defaults" if by_defaults else "acl_mapping"
    if unmapped is not None and not by_defaults:
        return _refused(
            context,
            doc_id,
            ticket.key,
            ticket.url or _doc_uri(path, ticket.key),
            QuarantineReason(
                "no_access_control",
                f"{unmapped} ({source.where}); map it in acl_mapping, or grant a catch-all "
                f"explicitly: a '{CATCH_ALL}' entry or a source-level 'acl'",
            ),
            text,
            ticket.subject,
            updated_at,
            metadata,
        )
    entry: dict[str, Any] = {"title": ticket.subject, "updated_at": updated_at}
    if not by_defaults:
        entry["acl"] = list(principals)
    meta, problem = item_metadata(source, entry, ticket.key, f"{source.where}: acl_mapping")
    document = DiscoveredDocument(
        doc_id=doc_id,
        source=source.name,
        uri=ticket.url or _doc_uri(path, ticket.key),
        relative_path=ticket.key,
        content_hash=content_hash(text),
        byte_size=len(text),
        mime_type=MARKDOWN,
        encoding=None,
        owner=meta.owner,
        tenant=meta.tenant,
        acl_principals=meta.acl,
        title=meta.title,
        updated_at=meta.updated_at or updated_at,
        content=text,
        source_metadata=metadata,
        # Changes when the rendering or the ticket's place in the export does, so lineage
        # stays current for a ticket that merely moved (its bytes, and so its chunks, did not).
        change_token=hashlib.sha256(
            (content_hash(text) + json.dumps(metadata, sort_keys=True)).encode()
        ).hexdigest(),
    )
    if problem is not None:
        return document.quarantined(problem)
    if len(text) > context.state.max_document_bytes:
        return document.quarantined(
            QuarantineReason(
                "too_large",
                f"ticket renders to {len(text):,} bytes, above the limit of "
                f"{context.state.max_document_bytes:,} (RAG_MAX_DOCUMENT_BYTES)",
            )
        )
    return document


def scan_tickets(source: SourceConfig, state: ScanState) -> Iterator[ScannedItem]:
    """Every ticket of every export file of the source, in file then export order."""
    options = parse_options(source)
    context = _ScanContext(source, options, state)
    root = options.path if options.path.is_dir() else options.path.parent
    files = export_files(options.path)
    if options.path.is_dir():
        files = [path for path in files if is_export_candidate(path, options.format, state)]
    if not files:
        # Reading nothing would tombstone every ticket: a missing export is an error.
        raise ConfigurationError(f"{source.where}: no export files in {options.path}")
    for path in files:
        export_format = options.format or infer_format(path)
        file_label = path.relative_to(root).as_posix()
        try:
            file_mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        except OSError:
            file_mtime = EPOCH
        for raw in read_export(path, export_format, state.max_document_bytes):
            yield _scan_item(context, path, file_label, export_format, raw, file_mtime)


def fingerprint_exports(source: SourceConfig) -> str:
    """A digest of the export files' names, sizes and mtimes; never raises."""
    digest = hashlib.sha256()
    try:
        if source.path is None:
            return "no-path"
        for path in export_files(source.path):
            info = path.stat()
            digest.update(f"{path.name}\x1f{info.st_size}\x1f{info.st_mtime_ns}\n".encode())
    except (OSError, ConfigurationError) as error:
        digest.update(f"unavailable\x1f{type(error).__name__}\x1f{error}".encode())
    return digest.hexdigest()


class TicketExportConnector:
    """`connector: tickets`: Jira/Zendesk exports, one Markdown document per ticket."""

    name: ClassVar[str] = "tickets"
    option_keys: ClassVar[frozenset[str]] = frozenset(
        {"path", "format", "acl_mapping", "acl_field", "private_comments"}
    )

    def validate(self, source: SourceConfig) -> None:
        parse_options(source)

    def scan(self, source: SourceConfig, state: ScanState) -> Iterator[ScannedItem]:
        return scan_tickets(source, state)

    def fingerprint(self, source: SourceConfig) -> str:
        return fingerprint_exports(source)
