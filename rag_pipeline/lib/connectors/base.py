"""What every connector hands the pipeline, and the interface a connector implements.

A connector turns one configured source into a stream of items, in a stable order:

- `DiscoveredDocument`: one document with its bytes (or why it is refused, `quarantine`), its
  access metadata, and the connector's own metadata (`source_metadata`: a commit id, a page's
  breadcrumbs, a ticket's status) that lineage shows;
- `UnchangedDocument`: a document the connector knows is unchanged since the last scan (same
  change token, same access metadata), so its bytes are not even read;
- `RemovedDocument`: a document the source says is gone, with the reason (deleted in a commit,
  merged into another ticket). Documents a scan does not mention at all are removed too, so a
  connector that lists everything needs no removals of its own.

Change detection, tombstoning, quarantine and the audit trail (`stores.sources.sync_source`)
work on these items the same way whatever the connector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from rag_pipeline.lib.catalog import SourceConfig

DEFAULT_MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
# Reasons that mean the pipeline cannot trust who may read a document: such a document is
# recorded with an empty ACL and no owner, so that no index version, old or new, serves it.
ACCESS_UNCERTAIN_CODES = frozenset(
    {
        "invalid_file_name",
        "sidecar_mismatch",
        "invalid_metadata",
        "invalid_acl",
        "unknown_encoding",
        "no_tenant",
        "tenant_not_allowed",
    }
)
# Stands in for the SHA-256 of a document whose bytes could not be read. Not a hex digest, so
# it can never equal a real content hash (rename detection compares them).
UNREAD_CONTENT_HASH = "unread"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class QuarantineReason:
    code: str
    message: str


@dataclass
class DiscoveredDocument:
    doc_id: str
    source: str
    uri: str
    relative_path: str
    content_hash: str
    byte_size: int
    mime_type: str | None
    encoding: str | None
    owner: str | None
    tenant: str
    acl_principals: tuple[str, ...]
    title: str | None
    updated_at: datetime
    content: bytes | None = field(repr=False, default=None)
    quarantine: QuarantineReason | None = None
    # Whether `_metadata.yaml` has an entry for exactly this path (rename detection needs it).
    has_sidecar_entry: bool = False
    # What the connector knows about the item (commit and path, page id and breadcrumbs, ticket
    # id and status). Recorded with the document and shown in lineage; not part of
    # `metadata_hash`, so a new commit that leaves a file alone does not re-process it.
    source_metadata: Mapping[str, Any] = field(default_factory=dict)
    # A cheap token that changes when the item's bytes change (a git blob id); the next scan
    # compares it to skip reading unchanged items. None: the connector always reads.
    change_token: str | None = None

    @property
    def metadata_hash(self) -> str:
        """Hash of everything but the bytes, so ACL or title changes are detected on their own."""
        fields = [self.title, self.owner, self.tenant, sorted(self.acl_principals), self.encoding]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def quarantined(self, reason: QuarantineReason) -> DiscoveredDocument:
        """This document refused for `reason`; access-uncertain reasons also drop its ACL."""
        closed = reason.code in ACCESS_UNCERTAIN_CODES
        return replace(
            self,
            owner=None if closed else self.owner,
            acl_principals=() if closed else self.acl_principals,
            content=None,
            quarantine=reason,
        )


@dataclass(frozen=True)
class UnchangedDocument:
    """A document whose change token and access metadata equal the last scan's: nothing read."""

    doc_id: str


@dataclass(frozen=True)
class RemovedDocument:
    """A document the source reports gone, and why (shown in its `deleted` event)."""

    doc_id: str
    reason: str


ScannedItem = DiscoveredDocument | UnchangedDocument | RemovedDocument


@dataclass(frozen=True)
class KnownDocument:
    """What the last scan recorded of a document, for connectors that skip unchanged items."""

    change_token: str | None
    metadata_hash: str
    deleted: bool


@dataclass
class ScanState:
    """What a connector may know from earlier scans, and what it leaves for the next one.

    `cursor` is the connector's own position saved after the last successful scan (a commit
    id); the connector sets `next_cursor` while scanning, and it is saved in the same
    transaction as the documents, so a failed scan never moves it. `warnings` are shown in the
    run's log; `stale_sidecar_entries` enables the filesystem's rename detection.
    """

    known: Mapping[str, KnownDocument] = field(default_factory=dict)
    cursor: Mapping[str, Any] | None = None
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    next_cursor: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    stale_sidecar_entries: list[str] = field(default_factory=list)

    def unchanged(self, doc_id: str, change_token: str | None, metadata_hash: str) -> bool:
        """Whether a live, recorded document has this very token and access metadata."""
        known = self.known.get(doc_id)
        return (
            known is not None
            and not known.deleted
            and change_token is not None
            and known.change_token == change_token
            and known.metadata_hash == metadata_hash
        )


class Connector(Protocol):
    """A kind of source (`connector:` in `sources.yaml`)."""

    name: ClassVar[str]
    # The `sources.yaml` keys of this connector besides the common ones (name, tenants, ...).
    option_keys: ClassVar[frozenset[str]]

    def validate(self, source: SourceConfig) -> None:
        """Raise `ConfigurationError` (naming the field) if the source's options are unusable."""

    def scan(self, source: SourceConfig, state: ScanState) -> Iterator[ScannedItem]:
        """Every item of the source in a stable order, in constant memory.

        A bad item is yielded quarantined; only a problem of the whole source raises
        `ConfigurationError` (when iterated), which fails that source alone.
        """

    def fingerprint(self, source: SourceConfig) -> str:
        """A cheap digest that changes when the source may have new content; never raises."""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
