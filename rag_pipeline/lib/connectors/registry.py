"""The connectors `sources.yaml` may name, by their `connector:` value."""

from __future__ import annotations

from rag_pipeline.lib.connectors.base import Connector
from rag_pipeline.lib.connectors.confluence import ConfluenceExportConnector
from rag_pipeline.lib.connectors.filesystem import FilesystemConnector
from rag_pipeline.lib.connectors.git import GitConnector
from rag_pipeline.lib.connectors.tickets import TicketExportConnector

CONNECTORS: dict[str, Connector] = {
    connector.name: connector
    for connector in (
        FilesystemConnector(),
        GitConnector(),
        TicketExportConnector(),
        ConfluenceExportConnector(),
    )
}


def connector_names() -> tuple[str, ...]:
    return tuple(sorted(CONNECTORS))


def connector_for(name: str) -> Connector:
    """The connector called `name`; `KeyError` if there is none (the catalog refuses those)."""
    return CONNECTORS[name]
