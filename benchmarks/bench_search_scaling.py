# ruff: noqa: T201
"""Permission-filtered vector search at scale: does the serving query stay on HNSW?

Loads N synthetic chunks (unit vectors in clusters of about 50, seed 0) into a fresh database
on an embedded PostgreSQL, half in each of two tenants and 10% of them readable only by a rare
group, builds and promotes an index version with the pipeline's own functions, then times the
pipeline's own search (`rag_pipeline.lib.retrieval.vector_search`) for a broad and a selective
reader against an exact scan (index scans disabled) in the same run, with recall against it:

    .venv/bin/python benchmarks/bench_search_scaling.py --chunks 20000 --out reports
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

import rag_pipeline  # noqa: F401  (offline environment first)
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.index_versions import IndexKeys, build_candidate, promote
from rag_pipeline.lib.retrieval import vector_search

KEYS = IndexKeys(model_key="synthetic", parser_key="synthetic", chunker_key="synthetic")
READERS = {
    "broad (50% of rows)": UserAccess("broad", "acme", ("group:all",)),
    "selective (10% of rows)": UserAccess("rare", "acme", ("group:rare",)),
}
QUERIES = 50


def load(conn: psycopg.Connection, vectors: np.ndarray) -> float:
    count = len(vectors)
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(
            "INSERT INTO rag.documents (doc_id, source, uri, relative_path, content_hash,"
            " metadata_hash, byte_size, tenant, acl_principals, updated_at)"
            " SELECT 'd' || g, 'synthetic', 'file:///synthetic/' || g, g::text, 'h' || g, 'm', 1,"
            " CASE WHEN g %% 2 = 0 THEN 'acme' ELSE 'globex' END,"
            " ARRAY[CASE WHEN g %% 10 IN (0, 5) THEN 'group:rare' ELSE 'group:all' END],"
            " now() FROM generate_series(1, %s) g",
            (count,),
        )
        conn.execute(
            "INSERT INTO rag.chunks (chunk_id, doc_id, content_hash, parser_key, chunker_key,"
            " ordinal, text, search_text, text_hash, token_count, heading_path, element_start,"
            " element_end, char_start, char_end, page_numbers)"
            " SELECT 'c' || g, 'd' || g, 'h' || g, %s, %s, 0, 'chunk ' || g, 'chunk ' || g,"
            " 't' || g, 2, '{}', 0, 1, 0, 6, '{}' FROM generate_series(1, %s) g",
            (KEYS.parser_key, KEYS.chunker_key, count),
        )
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY rag.embeddings (model_key, text_hash, embedding) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "text", "vector"])
            for position, vector in enumerate(vectors, start=1):
                copy.write_row((KEYS.model_key, f"t{position}", vector))
    conn.execute("ANALYZE")
    return time.perf_counter() - started


def time_queries(
    conn: psycopg.Connection, queries: np.ndarray, access: UserAccess
) -> tuple[list[float], list[list[str]]]:
    latencies, results = [], []
    for query in queries:
        started = time.perf_counter()
        hits = vector_search(conn, query, KEYS.model_key, access, limit=10)
        latencies.append((time.perf_counter() - started) * 1000)
        results.append([hit.chunk_id for hit in hits])
    return latencies, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    # Clustered like text embeddings (topics), not uniform: uniform random vectors in 384
    # dimensions have no near neighbours at all and say nothing about real recall.
    centers = rng.standard_normal((args.chunks // 50, 384)).astype(np.float32)
    members = rng.integers(0, len(centers), args.chunks)
    vectors = centers[members] + 0.8 * rng.standard_normal((args.chunks, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.chunks, QUERIES, replace=False)] + 0.05 * rng.standard_normal(
        (QUERIES, 384)
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    report: dict[str, object] = {"chunks": args.chunks, "queries": QUERIES, "readers": {}}
    with tempfile.TemporaryDirectory(prefix="rag_search_bench_") as data_dir:
        url = database.start_embedded_server(data_dir)
        try:
            with database.connection(url) as conn:
                report["load_s"] = round(load(conn, vectors), 2)
                candidate = build_candidate(conn, KEYS)
                promote(conn, candidate.version_id, actor="benchmark", required_checks=())
                for label, access in READERS.items():
                    hnsw_ms, hnsw_ids = time_queries(conn, queries, access)
                    conn.execute("SET enable_indexscan = off")
                    exact_ms, exact_ids = time_queries(conn, queries, access)
                    conn.execute("RESET enable_indexscan")
                    recall = statistics.mean(
                        len(set(a) & set(b)) / max(1, len(b))
                        for a, b in zip(hnsw_ids, exact_ids, strict=True)
                    )
                    report["readers"][label] = {  # type: ignore[index]
                        "hnsw_median_ms": round(statistics.median(hnsw_ms), 2),
                        "exact_median_ms": round(statistics.median(exact_ms), 2),
                        "speedup": round(
                            statistics.median(exact_ms) / statistics.median(hnsw_ms), 1
                        ),
                        "recall_at_10_vs_exact": round(recall, 3),
                        "results_per_query": min(len(ids) for ids in hnsw_ids),
                    }
        finally:
            database.stop_embedded_server(data_dir)
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Permission-filtered vector search at scale",
        "",
        f"{args.chunks:,} synthetic chunks (unit vectors in clusters of ~50, seed 0), two tenants, "
        "10% of rows "
        "readable only by a rare group; 50 queries near random rows; top 10 through the "
        "pipeline's `vector_search` (ACL and tenant filter in SQL, HNSW with iterative scan), "
        "against the same query with index scans disabled (exact), in the same run.",
        "",
        "| reader | HNSW median (ms) | exact median (ms) | speed-up | recall@10 vs exact |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, figures in report["readers"].items():  # type: ignore[union-attr]
        lines.append(
            f"| {label} | {figures['hnsw_median_ms']} | {figures['exact_median_ms']} | "
            f"{figures['speedup']}x | {figures['recall_at_10_vs_exact']} |"
        )
    (args.out / "search_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
