"""Quarantine across every source, as metadata an operator reads at a glance."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg

from rag_pipeline.defs.markdown import table
from rag_pipeline.lib.quarantine_summary import quarantined_documents, source_health

QUARANTINE_ROWS_SHOWN = 25


def quarantine_overview_metadata(conn: psycopg.Connection) -> dict[str, Any]:
    """The total across sources (plottable), per-source counts and one table of every refusal."""
    refused = quarantined_documents(conn)
    health = source_health(conn)
    summary = table(
        ("source", "documents", "quarantined", "rate", "served without ACL"),
        [
            (
                h.source,
                h.documents,
                h.quarantined,
                f"{h.quarantine_rate:.0%}",
                h.without_acl,
            )
            for h in health
        ],
        limit=len(health),
    )
    listing = (
        table(
            ("source", "document", "stage", "reason", "detail"),
            [(q.source, q.doc_id, q.stage, q.reason_code, q.reason) for q in refused],
            limit=QUARANTINE_ROWS_SHOWN,
        )
        if refused
        else "No document is quarantined in any source."
    )
    by_source: dict[str, int] = {}
    for q in refused:
        by_source[q.source] = by_source.get(q.source, 0) + 1
    return {
        "quarantined_all_sources": len(refused),
        "quarantined_by_source": dg.MetadataValue.json(by_source),
        "quarantine_all_sources": dg.MetadataValue.md(
            f"**{len(refused)} documents quarantined across {len(health)} sources**\n\n"
            f"{summary}\n\n{listing}"
        ),
    }
