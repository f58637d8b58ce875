"""Lexical leg: Okapi BM25 computed inside Postgres, exactly, among the chunks a reader may read.

Postings (`rag.chunk_terms`: lexeme -> chunk, tf, chunk length) are extracted once per chunk from
its `tsv` column (to_tsvector('english', ...): Snowball stemmer and stopwords), and each index
version stores its statistics per tenant (N, total length, df per lexeme; sql/007). A query is
turned into lexemes by the same `to_tsvector('english', ...)` and matched with OR semantics
(natural-language questions almost never match with AND: nDCG@10 0.07 on SciFact). Every
readable chunk holding at least one query lexeme is scored, from the postings of the query's
lexemes joined with `rag.readable_chunks`: no candidate cut-off, no post-filtering.

    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(q, c) = sum over t in q of qtf(t) * idf(t) * tf(t, c) * (k1 + 1)
                  / (tf(t, c) + k1 * (1 - b + b * len(c) / avglen))

N, df and avglen are those of the reader's tenant in the version being read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg

from rag_pipeline.lib.catalog import UserAccess

# The text search configuration of `rag.chunks.tsv` (sql/002); a query must use the same one.
TEXT_SEARCH_CONFIG = "english"
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75

# (chunk id, BM25 score), best first.
LexicalCandidates = list[tuple[str, float]]


@dataclass(frozen=True)
class BM25Params:
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B

    def __post_init__(self) -> None:
        if self.k1 < 0:
            raise ValueError(f"BM25 k1 must be >= 0 (got {self.k1})")
        if not 0 <= self.b <= 1:
            raise ValueError(f"BM25 b must be between 0 and 1 (got {self.b})")


def idf(chunk_count: int, document_frequency: int) -> float:
    """BM25 inverse document frequency, never negative (the Lucene variant)."""
    return math.log(1 + (chunk_count - document_frequency + 0.5) / (document_frequency + 0.5))


def bm25_score(
    query_terms: Mapping[str, int],
    term_frequencies: Mapping[str, int],
    length: int,
    average_length: float,
    chunk_count: int,
    document_frequencies: Mapping[str, int],
    params: BM25Params = BM25Params(),
) -> float:
    """The formula above for one chunk, in Python: the reference the SQL is tested against."""
    score = 0.0
    norm = params.k1 * (1 - params.b + params.b * length / average_length)
    for term, query_tf in query_terms.items():
        tf = term_frequencies.get(term, 0)
        if tf == 0 or term not in document_frequencies:
            continue
        weight = idf(chunk_count, document_frequencies[term])
        score += query_tf * weight * tf * (params.k1 + 1) / (tf + norm)
    return score


def query_lexemes(conn: psycopg.Connection, query: str) -> dict[str, int]:
    """The query's lexemes with how often each occurs, as the chunks' `tsv` would hold them."""
    rows = conn.execute(
        "SELECT u.lexeme, cardinality(u.positions) FROM unnest(to_tsvector(%s::regconfig, %s)) u",
        (TEXT_SEARCH_CONFIG, query),
    ).fetchall()
    return {str(lexeme): int(count) for lexeme, count in rows}


def lexical_candidates(
    conn: psycopg.Connection,
    version_id: int,
    access: UserAccess,
    lexemes: Mapping[str, int],
    limit: int,
    params: BM25Params = BM25Params(),
) -> LexicalCandidates:
    """The `limit` best readable chunks of `version_id` by BM25; ties broken by chunk id."""
    if not lexemes:
        return []
    terms: Sequence[str] = list(lexemes)
    rows = conn.execute(
        """
        WITH stats AS MATERIALIZED (
            SELECT s.chunk_count::float8 AS n,
                   s.total_length::float8 / s.chunk_count AS avg_length
            FROM rag.index_version_lexical s
            WHERE s.version_id = %(version)s AND s.tenant = %(tenant)s
        ),
        -- Materialized: one weight per query lexeme, computed once, not once per posting.
        weights AS MATERIALIZED (
            SELECT q.lexeme,
                   q.qtf * ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) AS weight,
                   s.avg_length
            FROM unnest(%(terms)s::text[], %(qtfs)s::int[]) AS q (lexeme, qtf)
            JOIN rag.index_version_terms d
              ON d.version_id = %(version)s AND d.tenant = %(tenant)s AND d.lexeme = q.lexeme
            CROSS JOIN stats s
        ),
        -- Postings are summed per chunk first, so the permission rule is checked once per
        -- distinct chunk rather than once per matching (chunk, lexeme): a third fewer probes on
        -- SciFact queries. Chunks of other versions or tenants are scored and dropped by the
        -- join; only readable ones can reach the result.
        scored AS (
            SELECT t.chunk_id,
                   sum(w.weight * t.tf * (%(k1)s + 1)
                       / (t.tf + %(k1)s * (1 - %(b)s + %(b)s * t.length / w.avg_length))) AS score
            FROM weights w
            JOIN rag.chunk_terms t ON t.lexeme = w.lexeme
            GROUP BY t.chunk_id
        )
        SELECT s.chunk_id, s.score
        FROM scored s
        JOIN rag.readable_chunks(%(version)s, %(tenant)s, %(principals)s::text[]) r
          ON r.chunk_id = s.chunk_id
        ORDER BY s.score DESC, s.chunk_id
        LIMIT %(limit)s
        """,
        {
            "version": version_id,
            "tenant": access.tenant,
            "principals": list(access.principals),
            "terms": list(terms),
            "qtfs": [lexemes[term] for term in terms],
            "k1": float(params.k1),
            "b": float(params.b),
            "limit": limit,
        },
        # Like the vector leg: a generic plan cannot see the version, tenant or lexemes.
        prepare=False,
    ).fetchall()
    return [(str(chunk_id), float(score)) for chunk_id, score in rows]
