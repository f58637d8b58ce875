"""Canary leak probes against a candidate index version, through the real serving code.

Inside ONE transaction that is always rolled back, the probe plants a canary per tenant into
the candidate (document, chunk, embedding, membership, postings and the version's lexical
statistics), then reads as every probing reader of `rag_pipeline.lib.canaries` through:

- `retrieve` in lexical mode, the canary's token as the query (the real entry point);
- `retrieve` in vector mode, with an embedder that returns the canary's own vector (no model
  is loaded; the vector is the canary's nearest neighbour by construction);
- `trace_chunk` (lineage) on the canary's chunk id;
- unfiltered `SELECT`s on the serving tables in a serving transaction, i.e. under row-level
  security only (sql/015): no tenant, no ACL condition in the query.

Nothing planted is ever committed: no canary reaches the corpus, counts, diffs, golden sets or
the serving version, and the candidate's memberships and statistics are as before afterwards.
Each read runs in a rolled-back savepoint as `rag_serving` (`retrieval.session`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg.pq import TransactionStatus

from rag_pipeline.lib import canaries as canary_logic
from rag_pipeline.lib.canaries import Canary, Observation, ProbeReader
from rag_pipeline.lib.lineage import UnknownChunkError, trace_chunk
from rag_pipeline.lib.quality_gates import EXPECTED_DIMENSION, GateResult
from rag_pipeline.lib.retrieval.pipeline import LEXICAL, VECTOR, RetrievalOptions, retrieve
from rag_pipeline.lib.retrieval.session import serving_transaction

# Enough to hold every canary of every tenant, so a leak is never cut off by the limit.
_MIN_LIMIT = 10
# At most this many of a tenant's real principals go into its same-tenant probe reader.
MAX_PRINCIPALS_PER_TENANT = 500


class CanaryProbeError(RuntimeError):
    """The probe could not be run (unknown version, planting failed)."""


@dataclass(frozen=True)
class _FixedVectorEmbedder:
    """An `Embedder` whose every query is the given vector: probes the vector leg offline."""

    model_key: str
    vector: np.ndarray
    dimension: int = EXPECTED_DIMENSION
    max_tokens: int = 256

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.repeat(self.vector[np.newaxis, :], len(texts), axis=0)


def _version_keys(conn: psycopg.Connection, version_id: int) -> tuple[str, str, str]:
    row = conn.execute(
        "SELECT model_key, parser_key, chunker_key FROM rag.index_versions WHERE version_id = %s",
        (version_id,),
    ).fetchone()
    if row is None:
        raise CanaryProbeError(f"index version {version_id} does not exist")
    return str(row[0]), str(row[1]), str(row[2])


def _tenant_principals(conn: psycopg.Connection, version_id: int) -> dict[str, list[str]]:
    rows = conn.execute(
        """
        SELECT tenant, (array_agg(DISTINCT p ORDER BY p))[1:%(cap)s]
        FROM rag.index_version_chunks m, unnest(m.acl_principals) p
        WHERE m.version_id = %(version)s
        GROUP BY tenant
        """,
        {"version": version_id, "cap": MAX_PRINCIPALS_PER_TENANT},
    ).fetchall()
    return {str(tenant): list(principals) for tenant, principals in rows}


def _plant(
    conn: psycopg.Connection,
    version_id: int,
    keys: tuple[str, str, str],
    planted: Sequence[Canary],
) -> None:
    """Write the canaries into the candidate (inside the caller's transaction)."""
    model_key, parser_key, chunker_key = keys
    for canary in planted:
        params = {
            "doc": canary.doc_id,
            "chunk": canary.chunk_id,
            "source": canary_logic.CANARY_SOURCE,
            "uri": f"canary://{canary.token}",
            "hash": canary.text_hash,
            "size": len(canary.text.encode()),
            "tenant": canary.tenant,
            "acl": [canary.principal],
            "text": canary.text,
            "parser": parser_key,
            "chunker": chunker_key,
            "model": model_key,
            "vector": canary_logic.canary_vector(canary, EXPECTED_DIMENSION),
            "version": version_id,
        }
        conn.execute(
            "INSERT INTO rag.documents (doc_id, source, uri, relative_path, content_hash,"
            " metadata_hash, byte_size, tenant, acl_principals, updated_at)"
            " VALUES (%(doc)s, %(source)s, %(uri)s, %(doc)s, %(hash)s, %(hash)s, %(size)s,"
            " %(tenant)s, %(acl)s, now())",
            params,
        )
        conn.execute(
            "INSERT INTO rag.chunks (chunk_id, doc_id, content_hash, parser_key, chunker_key,"
            " ordinal, text, search_text, text_hash, token_count, heading_path, element_start,"
            " element_end, char_start, char_end, page_numbers)"
            " VALUES (%(chunk)s, %(doc)s, %(hash)s, %(parser)s, %(chunker)s, 0, %(text)s,"
            " %(text)s, %(hash)s, 8, '{}', 0, 0, 0, length(%(text)s), '{}')",
            params,
        )
        conn.execute(
            "INSERT INTO rag.embeddings (model_key, text_hash, embedding)"
            " VALUES (%(model)s, %(hash)s, %(vector)s) ON CONFLICT DO NOTHING",
            params,
        )
        conn.execute(
            "INSERT INTO rag.index_version_chunks (version_id, chunk_id, doc_id, tenant,"
            " acl_principals) VALUES (%(version)s, %(chunk)s, %(doc)s, %(tenant)s, %(acl)s)",
            params,
        )
    # Postings of the new chunks only, then the version's per-tenant statistics incremented by
    # them (a full `rag.build_lexical_statistics` would recount the whole candidate).
    chunk_ids = [canary.chunk_id for canary in planted]
    conn.execute("SELECT rag.extract_chunk_terms(%s)", (version_id,))
    conn.execute(
        """
        INSERT INTO rag.index_version_lexical (version_id, tenant, chunk_count, total_length)
        SELECT m.version_id, m.tenant, count(*), sum(l.length)
        FROM rag.index_version_chunks m JOIN rag.chunk_lexical l ON l.chunk_id = m.chunk_id
        WHERE m.version_id = %(version)s AND m.chunk_id = ANY(%(chunks)s)
        GROUP BY m.version_id, m.tenant
        ON CONFLICT (version_id, tenant) DO UPDATE
        SET chunk_count = rag.index_version_lexical.chunk_count + EXCLUDED.chunk_count,
            total_length = rag.index_version_lexical.total_length + EXCLUDED.total_length
        """,
        {"version": version_id, "chunks": chunk_ids},
    )
    conn.execute(
        """
        INSERT INTO rag.index_version_terms (version_id, tenant, lexeme, df)
        SELECT m.version_id, m.tenant, t.lexeme, count(*)
        FROM rag.index_version_chunks m JOIN rag.chunk_terms t ON t.chunk_id = m.chunk_id
        WHERE m.version_id = %(version)s AND m.chunk_id = ANY(%(chunks)s)
        GROUP BY m.version_id, m.tenant, t.lexeme
        ON CONFLICT (version_id, tenant, lexeme) DO UPDATE
        SET df = rag.index_version_terms.df + EXCLUDED.df
        """,
        {"version": version_id, "chunks": chunk_ids},
    )


# The serving tables with a policy (sql/015), read with no condition but the canary ids:
# row-level security alone decides which rows come back. (`rag.chunk_terms` has no policy, on
# purpose, see sql/015; the lexical probe covers the postings.)
_UNFILTERED_READS = {
    "sql:index_version_chunks": "SELECT chunk_id FROM rag.index_version_chunks"
    " WHERE chunk_id = ANY(%(chunks)s)",
    "sql:documents": "SELECT doc_id || ':0' FROM rag.documents WHERE doc_id = ANY(%(docs)s)",
    "sql:chunks": "SELECT chunk_id FROM rag.chunks WHERE chunk_id = ANY(%(chunks)s)",
    "sql:embeddings": "SELECT c.chunk_id FROM rag.embeddings e, unnest(%(chunks)s::text[],"
    " %(hashes)s::text[]) AS c (chunk_id, text_hash) WHERE e.text_hash = c.text_hash",
}


def _observe(
    conn: psycopg.Connection,
    version_id: int,
    model_key: str,
    planted: Sequence[Canary],
    reader: ProbeReader,
) -> list[Observation]:
    canary_ids = {canary.chunk_id for canary in planted}
    limit = max(_MIN_LIMIT, len(planted) + 5)
    found: list[Observation] = []

    def observed(path: str, chunk_ids: Sequence[str]) -> None:
        found.append(Observation(reader, path, frozenset(set(chunk_ids) & canary_ids)))

    target = reader.target
    lexical = retrieve(
        conn,
        reader.access,
        target.token,
        RetrievalOptions(mode=LEXICAL, limit=limit, candidates=limit),
        None,
        version_id,
    )
    observed(canary_logic.LEXICAL_PATH, [hit.chunk_id for hit in lexical.hits])
    embedder = _FixedVectorEmbedder(
        model_key, canary_logic.canary_vector(target, EXPECTED_DIMENSION)
    )
    vector = retrieve(
        conn,
        reader.access,
        target.token,
        RetrievalOptions(mode=VECTOR, limit=limit, candidates=limit),
        embedder,
        version_id,
    )
    if vector.fell_back:
        raise CanaryProbeError(f"the vector probe fell back: {vector.fallback_reason}")
    observed(canary_logic.VECTOR_PATH, [hit.chunk_id for hit in vector.hits])
    try:
        trace_chunk(conn, target.chunk_id, reader.access)
        observed(canary_logic.LINEAGE_PATH, [target.chunk_id])
    except UnknownChunkError:
        observed(canary_logic.LINEAGE_PATH, [])
    params = {
        "chunks": [canary.chunk_id for canary in planted],
        "docs": [canary.doc_id for canary in planted],
        "hashes": [canary.text_hash for canary in planted],
    }
    with serving_transaction(conn, reader.access):
        for path, query in _UNFILTERED_READS.items():
            rows = conn.execute(query, params, prepare=False).fetchall()
            observed(path, [str(row[0]) for row in rows])
    return found


def no_canary_leaks(
    conn: psycopg.Connection, version_id: int, token: str | None = None
) -> GateResult:
    """No canary planted into the candidate reaches a reader who is not entitled to it.

    Plants per-tenant canaries into `version_id`, probes them through retrieval (lexical and
    vector), lineage and unfiltered SQL under row-level security as every probing reader, and
    rolls everything back. Fails on any leak (metadata names the tenant pair and the path) and
    on any path where the owner could not find its own canary (the probe would prove nothing).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise CanaryProbeError("run the canary probe outside a transaction: it rolls its own back")
    started = time.perf_counter()
    keys = _version_keys(conn, version_id)
    tenant_principals = _tenant_principals(conn, version_id)
    tenants = sorted({*tenant_principals, canary_logic.PROBE_TENANT})
    planted = canary_logic.make_canaries(tenants, token)
    readers = canary_logic.probe_readers(planted, tenant_principals)
    observations: list[Observation] = []
    with conn.transaction() as transaction:
        _plant(conn, version_id, keys, planted)
        for reader in readers:
            observations.extend(_observe(conn, version_id, keys[0], planted, reader))
        raise psycopg.Rollback(transaction)
    verdict = canary_logic.judge(planted, observations)
    return GateResult(
        canary_logic.CHECK_NAME,
        verdict.passed,
        canary_logic.summary(verdict, len(tenants)),
        {
            "tenants_probed": tenants,
            "probes": verdict.observations,
            "leaks": verdict.leaks[:50],
            "leak_count": len(verdict.leaks),
            "leaking_tenant_pairs": sorted(
                {f"{leak['canary_tenant']}->{leak['reader_tenant']}" for leak in verdict.leaks}
            ),
            "leaking_paths": sorted({leak["path"] for leak in verdict.leaks}),
            "ineffective_probes": verdict.ineffective[:50],
            "duration_s": round(time.perf_counter() - started, 3),
        },
    )
