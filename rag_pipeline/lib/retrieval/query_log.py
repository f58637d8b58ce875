"""The query log (`rag.query_log`, sql/008): one row per search or answer.

It records who asked (user, tenant), which version answered, the switches (mode requested and
used, reranker, fallback), the retrieved chunk ids in order, per-stage milliseconds and, for an
answer, whether it was refused. The question itself is stored only as its length and an
HMAC-SHA256 keyed with the database's own secret (`rag.query_log_secret`), never as text.

Logging must never cost the caller its result: `log_query` runs in its own transaction, after the
READ ONLY retrieval transaction has ended, and any failure is reported on the logger and
returned as None, never raised.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping

import psycopg

from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.retrieval.pipeline import RetrievalResult

logger = logging.getLogger(__name__)

SEARCH = "search"
ANSWER = "answer"


def question_digest(secret: bytes, question: str) -> bytes:
    """HMAC-SHA256 of the question's UTF-8 bytes under `secret`."""
    return hmac.new(secret, question.encode("utf-8"), hashlib.sha256).digest()


def log_query(
    conn: psycopg.Connection,
    access: UserAccess,
    question: str,
    result: RetrievalResult,
    *,
    kind: str = SEARCH,
    channel: str = "library",
    refused: bool | None = None,
    refusal_reason: str | None = None,
    generator: str | None = None,
    extra_timings_ms: Mapping[str, float] | None = None,
) -> int | None:
    """Write one row; returns its id, or None if it could not be written (reported, not raised).

    Call it after `retrieve` returned, on the same connection or another one.
    """
    timings = {**result.timings_ms, **(extra_timings_ms or {})}
    try:
        with conn.transaction():
            row = conn.execute("SELECT secret FROM rag.query_log_secret WHERE singleton").fetchone()
            if row is None:
                raise LookupError("rag.query_log_secret has no secret")
            inserted = conn.execute(
                """
                INSERT INTO rag.query_log (
                    kind, channel, user_id, tenant, version_id, mode_requested, mode_used,
                    reranker, fell_back, question_hmac, question_chars, chunk_ids, timings_ms,
                    refused, refusal_reason, generator)
                VALUES (%(kind)s, %(channel)s, %(user)s, %(tenant)s, %(version)s,
                        %(mode_requested)s, %(mode_used)s, %(reranker)s, %(fell_back)s,
                        %(hmac)s, %(chars)s, %(chunk_ids)s, %(timings)s::jsonb, %(refused)s,
                        %(refusal_reason)s, %(generator)s)
                RETURNING query_id
                """,
                {
                    "kind": kind,
                    "channel": channel,
                    "user": access.user,
                    "tenant": access.tenant,
                    "version": result.version_id,
                    "mode_requested": result.mode_requested,
                    "mode_used": result.mode_used,
                    "reranker": result.reranker,
                    "fell_back": result.fell_back,
                    "hmac": question_digest(bytes(row[0]), question),
                    "chars": len(question),
                    "chunk_ids": [hit.chunk_id for hit in result.hits],
                    "timings": json.dumps(timings),
                    "refused": refused,
                    "refusal_reason": refusal_reason,
                    "generator": generator,
                },
            ).fetchone()
    except Exception as error:  # the caller's result matters more than its log line
        logger.warning("query log not written: %s: %s", type(error).__name__, error)
        return None
    assert inserted is not None
    return int(inserted[0])
