"""What the Dagster catalog shows about every asset: owner, group, tags and its Postgres table.

Applied in one place (`rag_pipeline.definitions`) as global policy, so every asset is described
the same way and a new asset without a table entry fails the definitions test.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg

from rag_pipeline.lib.table_schemas import ASSET_TABLES, row_count

# One group: the whole lineage opens expanded, source bytes to serving pointer.
LINEAGE_GROUP = "rag_pipeline"
OWNERS = ["team:rag-platform"]
PER_SOURCE_ASSETS = (
    "source_documents",
    "parsed_documents",
    "redacted_documents",
    "chunks",
    "chunk_embeddings",
)
STAGE_TAGS: dict[str, str] = {
    "source_documents": "connectors",
    "parsed_documents": "parsing",
    "redacted_documents": "redaction",
    "chunks": "chunking",
    "chunk_embeddings": "embeddings",
    "vector_index": "indexes",
    "evaluation_report": "evaluation",
    "active_index": "serving",
}


def table_schema(asset: str) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.type,
                description=column.description,
                constraints=dg.TableColumnConstraints(nullable=column.nullable),
            )
            for column in ASSET_TABLES[asset].columns
        ]
    )


def definition_metadata(asset: str) -> dict[str, Any]:
    """The asset's table, its columns and the other tables it writes."""
    tables = ASSET_TABLES[asset]
    return {
        "dagster/table_name": tables.qualified_name,
        "dagster/column_schema": table_schema(asset),
        "postgres_tables": dg.MetadataValue.json(
            [tables.qualified_name, *(f"rag.{name}" for name in tables.also_writes)]
        ),
    }


def definition_tags(asset: str) -> dict[str, str]:
    return {
        "stage": STAGE_TAGS[asset],
        "scope": "per_source" if asset in PER_SOURCE_ASSETS else "all_sources",
    }


def describe_spec(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The spec with the catalog policy applied (owners, tags, table metadata)."""
    name = spec.key.to_user_string()
    return spec.merge_attributes(
        owners=OWNERS, tags=definition_tags(name), metadata=definition_metadata(name)
    )


def row_count_metadata(
    conn: psycopg.Connection, asset: str, source: str | None = None
) -> dict[str, int]:
    """`dagster/row_count` for a materialization: the source's rows, or the whole table's."""
    return {"dagster/row_count": row_count(conn, asset, source)}
