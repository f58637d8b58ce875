"""Evaluation results in Postgres (`sql/011_evaluation_results.sql`): write, find, compare.

One `rag.evaluation_runs` row per version x golden set x configuration and one
`rag.evaluation_metrics` row per metric, kept after their version is garbage-collected.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_pipeline.lib.evaluation.quality import SetEvaluation


def save_evaluation(conn: psycopg.Connection, result: SetEvaluation, produced_by: str) -> int:
    """Store one evaluation and its metrics in one transaction; returns its id."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO rag.evaluation_runs (version_id, golden_set, golden_set_hash,"
            " configuration, options_hash, questions, produced_by, per_question)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING evaluation_id",
            (
                result.version_id,
                result.golden_set,
                result.golden_set_hash,
                result.configuration,
                result.options_hash,
                result.questions,
                produced_by,
                Jsonb(result.per_question),
            ),
        ).fetchone()
        assert row is not None
        evaluation_id = int(row[0])
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO rag.evaluation_metrics (evaluation_id, version_id, golden_set,"
                " configuration, metric, value) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (
                        evaluation_id,
                        result.version_id,
                        result.golden_set,
                        result.configuration,
                        metric,
                        value,
                    )
                    for metric, value in result.metrics.items()
                ],
            )
    return evaluation_id


def find_evaluation(
    conn: psycopg.Connection,
    version_id: int,
    golden_set_hash: str,
    configuration: str,
    options_hash: str,
) -> SetEvaluation | None:
    """The latest stored evaluation of exactly this version, set content and options."""
    row = conn.execute(
        "SELECT evaluation_id, golden_set, questions, per_question FROM rag.evaluation_runs"
        " WHERE version_id = %s AND golden_set_hash = %s AND configuration = %s"
        " AND options_hash = %s ORDER BY evaluation_id DESC LIMIT 1",
        (version_id, golden_set_hash, configuration, options_hash),
    ).fetchone()
    if row is None:
        return None
    evaluation_id, golden_set, questions, per_question = row
    metrics = dict(
        conn.execute(
            "SELECT metric, value FROM rag.evaluation_metrics WHERE evaluation_id = %s",
            (evaluation_id,),
        ).fetchall()
    )
    return SetEvaluation(
        version_id=version_id,
        golden_set=golden_set,
        golden_set_hash=golden_set_hash,
        configuration=configuration,
        options_hash=options_hash,
        questions=int(questions),
        metrics=metrics,
        per_question=dict(per_question),
        reused=True,
    )


def metric_history(
    conn: psycopg.Connection, golden_set: str | None = None, limit_versions: int = 20
) -> list[dict[str, Any]]:
    """Latest value of each metric per version, set and configuration, newest versions first."""
    rows = conn.execute(
        """
        SELECT DISTINCT ON (m.version_id, m.golden_set, m.configuration, m.metric)
               m.version_id, m.golden_set, m.configuration, m.metric, m.value, m.evaluated_at
        FROM rag.evaluation_metrics m
        WHERE (%(set)s::text IS NULL OR m.golden_set = %(set)s)
          AND m.version_id IN (SELECT DISTINCT version_id FROM rag.evaluation_metrics
                               ORDER BY version_id DESC LIMIT %(limit)s)
        ORDER BY m.version_id, m.golden_set, m.configuration, m.metric, m.evaluated_at DESC
        """,
        {"set": golden_set, "limit": limit_versions},
    ).fetchall()
    keys = ("version_id", "golden_set", "configuration", "metric", "value", "evaluated_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]
