"""Lexical leg: Okapi BM25 computed inside Postgres, exactly, among the chunks a reader may read.

Postings (`rag.chunk_terms`: lexeme -> chunk, tf, chunk length) are extracted once per chunk from
its `tsv` column (to_tsvector('english', ...): Snowball stemmer and stopwords), and each index
version stores its statistics per tenant (N, total length, df per lexeme; sql/007). A query is
turned into lexemes by the same `to_tsvector('english', ...)` and matched with OR semantics
(natural-language questions almost never match with AND: nDCG@10 0.07 on SciFact). Every
chunk the version's snapshot admits for the reader (tenant, ACL) and holding at least one query
lexeme is scored from the postings of the query's lexemes; `rag.readable_chunks` is then checked
in SQL on the best of them, widening to all of them when too few pass: the result is exactly
the best readable chunks, with no candidate cut-off and no post-filtering.

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
    # One weight per query lexeme the reader's tenant holds in this version (a lexeme it never
    # holds cannot score), and the tenant's average chunk length.
    weighted = conn.execute(
        """
        SELECT q.lexeme,
               q.qtf * ln(1 + (s.chunk_count - d.df + 0.5) / (d.df + 0.5)) AS weight,
               s.total_length::float8 / s.chunk_count AS avg_length
        FROM unnest(%(terms)s::text[], %(qtfs)s::int[]) AS q (lexeme, qtf)
        JOIN rag.index_version_terms d
          ON d.version_id = %(version)s AND d.tenant = %(tenant)s AND d.lexeme = q.lexeme
        JOIN rag.index_version_lexical s
          ON s.version_id = %(version)s AND s.tenant = %(tenant)s
        ORDER BY q.lexeme
        """,
        {
            "version": version_id,
            "tenant": access.tenant,
            "terms": list(terms),
            "qtfs": [lexemes[term] for term in terms],
        },
        prepare=False,
    ).fetchall()
    if not weighted:
        return []
    # Readable chunks are a subset of admitted ones, and both lists are in the same total order
    # (score, then chunk id): if `limit` of the `bound` best admitted chunks are readable,
    # they are the `limit` best readable ones, and if fewer than `bound` chunks were admitted
    # at all, every readable one was seen. Otherwise (chunks of revoked or deleted documents
    # filled the pool, or none passed) the query runs again on every admitted chunk.
    rows = _score_admitted(conn, version_id, access, weighted, limit, 2 * limit, params)
    if len(rows) < limit and (not rows or rows[0][2] >= 2 * limit):
        rows = _score_admitted(conn, version_id, access, weighted, limit, None, params)
    return [(str(chunk_id), float(score)) for chunk_id, score, _ in rows]


def _score_admitted(
    conn: psycopg.Connection,
    version_id: int,
    access: UserAccess,
    weighted: Sequence[tuple],
    limit: int,
    bound: int | None,
    params: BM25Params,
) -> list[tuple]:
    return conn.execute(
        """
        -- Only chunks the version's snapshot admits for this reader: a necessary condition of
        -- `rag.readable_chunks` (its first three tests), taken as one set, so the postings of
        -- other tenants, groups and versions are never scored.
        WITH admitted AS (
            SELECT m.chunk_id
            FROM rag.index_version_chunks m
            WHERE m.version_id = %(version)s AND m.tenant = %(tenant)s
              AND m.acl_principals && %(principals)s::text[]
        ),
        -- The lexemes are a constant here (their weights are looked up by position), so the
        -- planner estimates the postings from the column statistics. Joined to a table of
        -- weights instead, it guessed a few postings per lexeme where there are thousands at
        -- 100,000 chunks, and probed `rag.index_version_chunks` once per posting: 0.3-0.6 s.
        scored AS (
            SELECT t.chunk_id,
                   sum((%(weights)s::float8[])[array_position(%(terms)s::text[], t.lexeme)]
                       * t.tf * (%(k1)s + 1)
                       / (t.tf + %(k1)s * (1 - %(b)s + %(b)s * t.length / %(avg_length)s)))
                       AS score
            FROM rag.chunk_terms t
            JOIN admitted a ON a.chunk_id = t.chunk_id
            WHERE t.lexeme = ANY(%(terms)s::text[])
            GROUP BY t.chunk_id
        )
        -- The serving rule itself, `rag.readable_chunks` (sql/006), checked on the `bound`
        -- best admitted chunks (a top-N sort, not a sort of every match), and `pool` says how
        -- many there were. The snapshot test leaves almost only chunks that pass; the caller
        -- widens the pool when too few did. A scalar subquery keeps the check a per-row
        -- filter, not a join over every readable chunk.
        SELECT r.chunk_id, r.score, r.pool
        FROM (SELECT b.chunk_id, b.score, count(*) OVER () AS pool
              FROM (SELECT s.chunk_id, s.score FROM scored s
                    ORDER BY s.score DESC, s.chunk_id LIMIT %(bound)s) b) r
        WHERE (SELECT x.chunk_id
               FROM rag.readable_chunks(%(version)s, %(tenant)s, %(principals)s::text[]) x
               WHERE x.chunk_id = r.chunk_id) IS NOT NULL
        ORDER BY r.score DESC, r.chunk_id
        LIMIT %(limit)s
        """,
        {
            "version": version_id,
            "tenant": access.tenant,
            "principals": list(access.principals),
            "terms": [row[0] for row in weighted],
            "weights": [float(row[1]) for row in weighted],
            "avg_length": float(weighted[0][2]),
            "k1": float(params.k1),
            "b": float(params.b),
            "limit": limit,
            "bound": bound,
        },
        # Like the vector leg: a generic plan cannot see the version, tenant or lexemes.
        prepare=False,
    ).fetchall()
