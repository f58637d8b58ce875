"""The connectors `sources.yaml` may name, by their `connector:` value."""

from __future__ import annotations

from rag_pipeline.lib.connectors.base import Connector
from rag_pipeline.lib.connectors.filesystem import FilesystemConnector

CONNECTORS: dict[str, Connector] = {
    connector.name: connector for connector in (FilesystemConnector(),)
}


def connector_names() -> tuple[str, ...]:
    return tuple(sorted(CONNECTORS))


def connector_for(name: str) -> Connector:
    """The connector called `name`; `KeyError` if there is none (the catalog refuses those)."""
    return CONNECTORS[name]
