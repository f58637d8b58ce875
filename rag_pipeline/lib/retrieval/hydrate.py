"""Turn a final ranking of chunk ids into `SearchHit`s: text, title, uri, offsets, pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from rag_pipeline.lib.retrieval.hits import SearchHit


@dataclass(frozen=True)
class RankedChunk:
    """A chunk in a ranking: its score there, and every stage's score and rank so far."""

    chunk_id: str
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)
    ranks: Mapping[str, int] = field(default_factory=dict)


def load_hits(
    conn: psycopg.Connection, version_id: int, ranking: Sequence[RankedChunk]
) -> list[SearchHit]:
    """The hits of `ranking`, in its order. Reads only chunks the legs already selected through
    `rag.readable_chunks`, in the same transaction, so it cannot add any."""
    if not ranking:
        return []
    rows = conn.execute(
        """
        SELECT c.chunk_id, c.doc_id,
               -- A redacted document's title is redacted too (sql/013).
               CASE WHEN c.redaction_key = '' THEN p.title
                    ELSE rag.chunk_redacted_title(c.chunk_id) END,
               d.uri, c.heading_path, c.text, c.element_start,
               c.element_end, c.char_start, c.char_end, c.page_numbers, c.injection
        FROM rag.chunks c
        JOIN rag.documents d ON d.doc_id = c.doc_id
        LEFT JOIN rag.parsed_documents p ON p.doc_id = c.doc_id
            AND p.content_hash = c.content_hash AND p.parser_key = c.parser_key
        WHERE c.chunk_id = ANY(%s)
        """,
        ([item.chunk_id for item in ranking],),
    ).fetchall()
    details = {row[0]: row for row in rows}
    hits = []
    for item in ranking:
        row = details[item.chunk_id]
        hits.append(
            SearchHit(
                chunk_id=row[0],
                doc_id=row[1],
                title=row[2],
                uri=row[3],
                heading_path=tuple(row[4]),
                text=row[5],
                score=item.score,
                element_start=row[6],
                element_end=row[7],
                char_start=row[8],
                char_end=row[9],
                page_numbers=tuple(row[10]),
                version_id=version_id,
                scores=dict(item.scores),
                ranks=dict(item.ranks),
                injection=row[11],
            )
        )
    return hits
