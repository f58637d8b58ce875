"""Connectors: where documents come from, behind one interface (`base.Connector`).

`registry.CONNECTORS` maps each `connector:` value of `sources.yaml` to its implementation;
`scan_source` and `source_fingerprint` dispatch through it, so the assets and the sensor never
know which kind of source they handle.
"""

from __future__ import annotations

from collections.abc import Iterator

from rag_pipeline.lib.catalog import SourceConfig, check_source
from rag_pipeline.lib.connectors.base import (
    ACCESS_UNCERTAIN_CODES,
    DEFAULT_MAX_DOCUMENT_BYTES,
    UNREAD_CONTENT_HASH,
    DiscoveredDocument,
    QuarantineReason,
    RemovedDocument,
    ScannedItem,
    ScanState,
    UnchangedDocument,
)
from rag_pipeline.lib.connectors.filesystem import (
    SIDECAR_FILE,
    scan_filesystem_source,
    stale_sidecar_entries,
)
from rag_pipeline.lib.connectors.registry import connector_for

__all__ = [
    "ACCESS_UNCERTAIN_CODES",
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "SIDECAR_FILE",
    "UNREAD_CONTENT_HASH",
    "DiscoveredDocument",
    "QuarantineReason",
    "RemovedDocument",
    "ScanState",
    "ScannedItem",
    "UnchangedDocument",
    "scan_filesystem_source",
    "scan_source",
    "source_fingerprint",
    "stale_sidecar_entries",
]


def scan_source(source: SourceConfig, state: ScanState) -> Iterator[ScannedItem]:
    """The items of one source, by its connector; see `base.Connector.scan`."""
    check_source(source)
    yield from connector_for(source.connector).scan(source, state)


def source_fingerprint(source: SourceConfig) -> str:
    """A cheap digest that changes when the source may have new content; never raises."""
    try:
        return connector_for(source.connector).fingerprint(source)
    except Exception as error:
        return f"unavailable:{type(error).__name__}:{error}"
