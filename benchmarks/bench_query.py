# ruff: noqa: T201
"""Query latency, filtered HNSW recall and HTTP throughput at 100,000 chunks or more.

One fresh embedded PostgreSQL in a temporary directory, loaded with N chunks (default 100,000)
derived from BEIR SciFact (texts from real abstracts, vectors from real all-MiniLM-L6-v2
embeddings; `reports/bench_query.md` says exactly how), three tenants and hash-assigned groups
that let one reader see 50%, 10% or 1% of all chunks. The index version is built and promoted
with the pipeline's own functions (`build_candidate`: memberships and BM25 statistics by the SQL
of sql/007; `promote`). Then, with real SciFact queries embedded by the real model:

- per-stage p50/p95 of `retrieve` (embed, version, vector, lexical, fusion, hydrate, total) for
  the lexical, vector and hybrid modes, for a reader of the whole tenant and at each selectivity;
- recall@10 of the pipeline's vector leg (HNSW, iterative scan) against the same leg with index
  scans disabled (exact), at each selectivity;
- requests/s and latency of `POST /v1/search` through `rag-pipeline serve` at concurrency 8.

    .venv/bin/python benchmarks/bench_query.py --chunks 100000 --out reports
    .venv/bin/python benchmarks/bench_query.py --chunks 5000 --out /tmp/bench   # smoke, ~1 min

The results are merged into `<out>/bench.json` under `query` (every other key is kept) and
written to `<out>/bench_query.md`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg

import rag_pipeline  # noqa: F401  (offline environment first)
from rag_pipeline.lib import api_keys, database
from rag_pipeline.lib.catalog import UserAccess, load_user_access
from rag_pipeline.lib.embedding import load_embedder
from rag_pipeline.lib.evaluation.measurement import machine_info, percentile
from rag_pipeline.lib.index_versions import IndexKeys, build_candidate, promote
from rag_pipeline.lib.progress import ProgressLog
from rag_pipeline.lib.retrieval import RetrievalOptions, retrieve
from rag_pipeline.lib.retrieval import vector as vector_leg_module
from rag_pipeline.lib.retrieval.vector import configure_vector_scan, vector_candidates

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "beir" / "scifact"
PARSER_KEY = "bench-query-passages"
CHUNKER_KEY = "bench-query-recombined"
SOURCE = "bench_query"
# Share of all chunks per tenant; the filtered readers all read in the first one.
TENANTS = {"acme": 0.8, "globex": 0.1, "initech": 0.1}
MAIN_TENANT = "acme"
# Selectivity (share of ALL chunks in the index, hence of the HNSW graph) -> group name.
SELECTIVITIES = {0.5: "sel50", 0.1: "sel10", 0.01: "sel01"}
TENANT_GROUP = "acme-all"
UNFILTERED = "tenant"
MODES = ("lexical", "vector", "hybrid")
# `after_embed`: total less the query embedding (the part the retrieval SQL decides).
STAGES = ("embed", "version", "vector", "lexical", "fusion", "hydrate", "total", "after_embed")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
PASSAGE_SENTENCES = 3
NEIGHBOURS = 20
NOISE = 0.015
HTTP_CONCURRENCY = 8
LIMIT = 10


def log(message: str) -> None:
    print(f"[bench_query {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def indented_log(message: str) -> None:
    """A progress line (`embedded 512/3,000 passages, 31.2/s, ETA 1:20`) under its step."""
    log(f"  {message}")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit_hash(*parts: str) -> float:
    """A stable uniform number in [0, 1) from strings (for ACL assignment)."""
    return int(sha("\x1f".join(parts))[:12], 16) / float(16**12)


@dataclass
class Passage:
    title: str
    sentences: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def read_passages(corpus: Path) -> list[Passage]:
    """SciFact abstracts split into passages of three consecutive sentences."""
    passages = []
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            sentences = [s.strip() for s in SENTENCE_END.split(record["text"]) if s.strip()]
            for start in range(0, len(sentences), PASSAGE_SENTENCES):
                group = sentences[start : start + PASSAGE_SENTENCES]
                if sum(len(s) for s in group) >= 80:
                    passages.append(Passage(record.get("title") or "", group))
    return passages


def search_text(title: str, text: str) -> str:
    # As the chunker does: the title in front of the text is what gets embedded and indexed.
    return f"{title}\n\n{text}" if title else text


@dataclass
class Corpus:
    texts: list[tuple[str, str]]  # (title, text) per chunk
    vectors: np.ndarray
    real: int
    passages_total: int
    embed_s: float


def make_corpus(passages: list[Passage], real: int, chunks: int, embedder, seed: int) -> Corpus:
    """`real` passages with their real embeddings, then recombinations of two related ones."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    base = rng.sample(passages, min(real, len(passages)))
    log(f"embedding {len(base):,} real passages with {embedder.model_key} (~30/s on 2 cores)")
    started = time.perf_counter()
    vectors = []
    progress = ProgressLog(indented_log, "embedded", len(base), "passages", every_seconds=0)
    for start in range(0, len(base), 256):
        batch = base[start : start + 256]
        vectors.append(embedder.embed([search_text(p.title, p.text) for p in batch]))
        progress.advance(start + len(batch))
    real_vectors = np.vstack(vectors).astype(np.float32)
    embed_s = time.perf_counter() - started
    # Each real passage's nearest real passages: a recombination mixes related texts, so its
    # vector stays among real ones instead of landing between two unrelated topics.
    neighbours = np.empty((len(base), NEIGHBOURS), dtype=np.int64)
    for start in range(0, len(base), 1024):
        sims = real_vectors[start : start + 1024] @ real_vectors.T
        for row in range(sims.shape[0]):
            sims[row, start + row] = -2.0
        neighbours[start : start + 1024] = np.argsort(-sims, axis=1)[:, :NEIGHBOURS]
    texts = [(p.title, p.text) for p in base]
    seen = {search_text(*t) for t in texts}
    out = np.empty((chunks, real_vectors.shape[1]), dtype=np.float32)
    count = min(chunks, len(base))
    out[:count] = real_vectors[:count]
    texts = texts[:count]
    while count < chunks:
        p = rng.randrange(len(base))
        q = int(neighbours[p, rng.randrange(NEIGHBOURS)])
        first, second = base[p].sentences, base[q].sentences
        k, m = rng.randint(1, len(first)), rng.randint(1, len(second))
        text = " ".join(first[:k] + second[-m:])
        if search_text(base[p].title, text) in seen:
            continue
        seen.add(search_text(base[p].title, text))
        weight = k / (k + m)
        vector = weight * real_vectors[p] + (1 - weight) * real_vectors[q]
        vector = vector + NOISE * nrng.standard_normal(vector.shape[0]).astype(np.float32)
        out[count] = vector / np.linalg.norm(vector)
        texts.append((base[p].title, text))
        count += 1
    return Corpus(texts, out, len(base), len(passages), embed_s)


@dataclass
class Layout:
    """Documents (1 to 7 chunks each), their tenant and ACL, and each chunk's document."""

    doc_ids: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    acls: list[list[str]] = field(default_factory=list)
    chunk_doc: list[int] = field(default_factory=list)


def make_layout(chunks: int, seed: int) -> Layout:
    rng = random.Random(seed + 1)
    layout = Layout()
    names = list(TENANTS)
    bounds = np.cumsum([TENANTS[name] for name in names])
    share = TENANTS[MAIN_TENANT]
    while len(layout.chunk_doc) < chunks:
        doc = len(layout.doc_ids)
        doc_id = f"bench-{doc:06d}"
        tenant = names[int(np.searchsorted(bounds, unit_hash(doc_id, "tenant"), side="right"))]
        if tenant == MAIN_TENANT:
            acl = [f"group:{TENANT_GROUP}"]
            # Independent hashes per group: the 1% readers are not a subset of the 10% ones.
            for selectivity, group in SELECTIVITIES.items():
                if unit_hash(doc_id, group) < selectivity / share:
                    acl.append(f"group:{group}")
        else:
            acl = [f"group:{tenant}-all"]
        layout.doc_ids.append(doc_id)
        layout.tenants.append(tenant)
        layout.acls.append(acl)
        size = min(rng.randint(1, 7), chunks - len(layout.chunk_doc))
        layout.chunk_doc.extend([doc] * size)
    return layout


def load(conn: psycopg.Connection, corpus: Corpus, layout: Layout, model_key: str) -> float:
    """Documents, chunks and embeddings by COPY into the pipeline's own tables (the HNSW index
    and the `tsv` column are maintained by Postgres, as for the pipeline's own inserts)."""
    started = time.perf_counter()
    content_hashes = [sha(doc_id + ":content") for doc_id in layout.doc_ids]
    with conn.transaction(), conn.cursor() as cursor:
        with cursor.copy(
            "COPY rag.documents (doc_id, source, uri, relative_path, title, content_hash,"
            " metadata_hash, byte_size, mime_type, tenant, acl_principals, updated_at)"
            " FROM STDIN"
        ) as copy:
            now = datetime.now(UTC)
            for doc, doc_id in enumerate(layout.doc_ids):
                copy.write_row(
                    (
                        doc_id,
                        SOURCE,
                        f"file:///bench_query/{doc_id}.txt",
                        f"{doc_id}.txt",
                        doc_id,
                        content_hashes[doc],
                        sha(doc_id + ":meta"),
                        1000,
                        "text/plain",
                        layout.tenants[doc],
                        layout.acls[doc],
                        now,
                    )
                )
        log(f"  {len(layout.doc_ids):,} documents")
        ordinals: dict[int, int] = {}
        with cursor.copy(
            "COPY rag.chunks (chunk_id, doc_id, content_hash, parser_key, chunker_key, ordinal,"
            " text, search_text, text_hash, token_count, heading_path, element_start,"
            " element_end, char_start, char_end, page_numbers) FROM STDIN"
        ) as copy:
            for index, (title, text) in enumerate(corpus.texts):
                doc = layout.chunk_doc[index]
                ordinal = ordinals.get(doc, 0)
                ordinals[doc] = ordinal + 1
                indexed = search_text(title, text)
                doc_id = layout.doc_ids[doc]
                copy.write_row(
                    (
                        sha(f"{doc_id}\x1f{ordinal}")[:32],
                        doc_id,
                        content_hashes[doc],
                        PARSER_KEY,
                        CHUNKER_KEY,
                        ordinal,
                        text,
                        indexed,
                        sha(indexed),
                        len(indexed.split()),
                        [title] if title else [],
                        ordinal,
                        ordinal,
                        0,
                        len(text),
                        [],
                    )
                )
        log(f"  {len(corpus.texts):,} chunks (tsv computed by Postgres)")
    # Embeddings in batches, each committed, so that the HNSW insert progress can be shown.
    total = len(corpus.texts)
    log("  inserting embeddings (HNSW maintained on insert)")
    progress = ProgressLog(indented_log, "inserted", total, "embeddings", every_seconds=0)
    for start in range(0, total, 10_000):
        with (
            conn.transaction(),
            conn.cursor() as cursor,
            cursor.copy(
                "COPY rag.embeddings (model_key, text_hash, embedding) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "text", "vector"])
            for index in range(start, min(total, start + 10_000)):
                copy.write_row(
                    (model_key, sha(search_text(*corpus.texts[index])), corpus.vectors[index])
                )
        progress.advance(min(total, start + 10_000))
    return time.perf_counter() - started


def percentiles(values: Sequence[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 0.50), 2), "p95": round(percentile(values, 0.95), 2)}


def readers() -> dict[str, UserAccess]:
    found = {UNFILTERED: UserAccess("bench-tenant", MAIN_TENANT, (f"group:{TENANT_GROUP}",))}
    for selectivity, group in SELECTIVITIES.items():
        found[str(selectivity)] = UserAccess(f"bench-{group}", MAIN_TENANT, (f"group:{group}",))
    return found


def readable_counts(
    conn: psycopg.Connection, version_id: int, access: dict[str, UserAccess]
) -> dict[str, int]:
    return {
        label: int(
            conn.execute(
                "SELECT count(*) FROM rag.readable_chunks(%s, %s, %s::text[])",
                (version_id, reader.tenant, list(reader.principals)),
            ).fetchone()[0]
        )
        for label, reader in access.items()
    }


def time_retrieval(
    conn: psycopg.Connection,
    embedder,
    queries: list[str],
    warmup: int,
    access: dict[str, UserAccess],
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """mode -> reader -> stage -> {p50, p95} over the queries (after `warmup` unrecorded)."""
    figures: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for mode in MODES:
        options = RetrievalOptions(mode=mode, limit=LIMIT)
        figures[mode] = {}
        for label, reader in access.items():
            for query in queries[:warmup]:
                retrieve(conn, reader, query, options, embedder)
            stages: dict[str, list[float]] = {}
            returned = []
            for query in queries:
                result = retrieve(conn, reader, query, options, embedder)
                assert result.mode_used == mode, result.fallback_reason
                returned.append(len(result.hits))
                for stage, ms in result.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
                # What the database side costs: the whole call less the query embedding.
                stages.setdefault("after_embed", []).append(
                    result.timings_ms["total"] - result.timings_ms.get("embed", 0.0)
                )
            figures[mode][label] = {
                stage: percentiles(stages[stage]) for stage in STAGES if stage in stages
            }
            figures[mode][label]["hits_min"] = min(returned)  # type: ignore[assignment]
            log(
                f"  {mode:<7} reader {label:<6}: total p50 "
                f"{figures[mode][label]['total']['p50']} ms, p95 "
                f"{figures[mode][label]['total']['p95']} ms"
            )
    return figures


def vector_leg(
    conn: psycopg.Connection,
    version_id: int,
    vector: np.ndarray,
    model_key: str,
    reader: UserAccess,
    exact: bool,
) -> tuple[list[str], float]:
    """The pipeline's own vector leg, as `retrieve` runs it; `exact` disables index scans."""
    started = time.perf_counter()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        configure_vector_scan(conn)
        if exact:
            conn.execute("SET LOCAL enable_indexscan = off")
        found = vector_candidates(conn, version_id, vector, model_key, reader, LIMIT)
    return [chunk_id for chunk_id, _ in found], (time.perf_counter() - started) * 1000


def measure_recall(
    conn: psycopg.Connection,
    version_id: int,
    vectors: np.ndarray,
    model_key: str,
    access: dict[str, UserAccess],
) -> dict[str, dict[str, float]]:
    figures = {}
    for label, reader in access.items():
        recalls, hnsw_ms, exact_ms, short = [], [], [], 0
        for vector in vectors:
            approx, approx_ms = vector_leg(conn, version_id, vector, model_key, reader, False)
            truth, truth_ms = vector_leg(conn, version_id, vector, model_key, reader, True)
            recalls.append(len(set(approx) & set(truth)) / max(1, len(truth)))
            short += len(approx) < len(truth)
            hnsw_ms.append(approx_ms)
            exact_ms.append(truth_ms)
        figures[label] = {
            "recall_at_10": round(statistics.mean(recalls), 4),
            "min_recall_at_10": round(min(recalls), 2),
            "queries_short_of_10": short,
            "hnsw_ms": percentiles(hnsw_ms),
            "exact_ms": percentiles(exact_ms),
        }
        log(f"  recall@10 reader {label:<6}: {figures[label]['recall_at_10']}")
    return figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_benchmark(
    url: str, workdir: Path, queries: list[str], seconds: float, reader_groups: list[str]
) -> dict[str, object]:
    """`rag-pipeline serve` on 127.0.0.1 against the same database; 8 client threads."""
    user = "bench-http"
    directory = workdir / "directory.yaml"
    groups = "".join(f"\n      - {group}" for group in reader_groups)
    directory.write_text(f"users:\n  {user}:\n    tenant: {MAIN_TENANT}\n    groups:{groups}\n")
    with database.connection(url) as conn:
        secret = api_keys.create_key(conn, load_user_access(directory, user)).secret
    port = free_port()
    env = {
        **os.environ,
        "RAG_DATABASE_URL": url,
        "RAG_DATA_DIR": str(workdir / "data"),
        "RAG_DIRECTORY_FILE": str(directory),
        # The default of 60 requests per minute per key would measure the rate limiter.
        "RAG_API_RATE_LIMIT": "1000000/minute",
    }
    command = [str(Path(sys.executable).parent / "rag-pipeline"), "serve", "--port", str(port)]
    server_log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"rag-pipeline serve exited; see {workdir / 'serve.log'}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("rag-pipeline serve not ready after 180 s")
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {secret}"}
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        start_flag = threading.Event()
        warmed = threading.Barrier(HTTP_CONCURRENCY + 1)
        stop_at = [0.0]

        def client(offset: int) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as session:
                for query in queries[offset : offset + 2]:  # warm-up, not recorded
                    session.post("/v1/search", json={"query": query, "limit": LIMIT})
                warmed.wait()
                start_flag.wait()
                position = offset
                while time.perf_counter() < stop_at[0]:
                    query = queries[position % len(queries)]
                    position += HTTP_CONCURRENCY
                    began = time.perf_counter()
                    response = session.post("/v1/search", json={"query": query, "limit": LIMIT})
                    elapsed = (time.perf_counter() - began) * 1000
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        if response.status_code == 200:
                            latencies.append(elapsed)

        threads = [
            threading.Thread(target=client, args=(index,)) for index in range(HTTP_CONCURRENCY)
        ]
        for thread in threads:
            thread.start()
        warmed.wait()  # every client has finished its warm-up
        began = time.perf_counter()
        stop_at[0] = began + seconds
        start_flag.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
    return {
        "concurrency": HTTP_CONCURRENCY,
        "seconds": round(elapsed, 1),
        "requests_ok": len(latencies),
        "status_counts": {str(code): count for code, count in sorted(statuses.items())},
        "rps": round(len(latencies) / elapsed, 1),
        "latency_ms": percentiles(latencies) if latencies else {},
        "reader_groups": reader_groups,
    }


def read_queries(corpus_dir: Path, count: int, seed: int) -> list[str]:
    lines = (corpus_dir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    random.Random(seed).shuffle(texts)
    return texts[:count]


def build_report(args: argparse.Namespace, **parts: object) -> dict[str, object]:
    latency = parts["latency"]
    recall = parts["recall"]
    http = parts["http"]
    counts = parts["counts"]
    hybrid = latency["hybrid"]  # type: ignore[index]
    filtered_p95 = {label: hybrid[label]["total"]["p95"] for label in map(str, SELECTIVITIES)}
    recall_map = {label: recall[label]["recall_at_10"] for label in map(str, SELECTIVITIES)}  # type: ignore[index]
    return {
        "chunks": args.chunks,
        "documents": parts["documents"],
        # Whole-request figures: `total` of `retrieve`, query embedding included.
        "p95_ms_hybrid": hybrid[UNFILTERED]["total"]["p95"],
        # The worst of the three filtered readers (per reader in `p95_ms_hybrid_by_selectivity`).
        "p95_ms_hybrid_filtered": max(filtered_p95.values()),
        "p95_ms_hybrid_by_selectivity": filtered_p95,
        # The same without the query embedding (CPU-bound, sensitive to other load).
        "p95_ms_hybrid_filtered_after_embed": max(
            hybrid[label]["after_embed"]["p95"] for label in map(str, SELECTIVITIES)
        ),
        "filtered_recall_at_10": recall_map,
        "http_rps": http["rps"],  # type: ignore[index]
        "http_p95_ms": http["latency_ms"].get("p95"),  # type: ignore[index,union-attr]
        "targets": {
            "hybrid_filtered_p95_below_150_ms": max(filtered_p95.values()) < 150,
            "filtered_recall_at_10_at_least_0.95": min(recall_map.values()) >= 0.95,
        },
        "readers": {
            label: {
                "tenant": reader.tenant,
                "principals": list(reader.principals),
                "readable_chunks": counts[label],  # type: ignore[index]
                "share_of_all_chunks": round(counts[label] / args.chunks, 4),  # type: ignore[index]
            }
            for label, reader in readers().items()
        },
        "latency_ms": latency,
        "recall": recall,
        "http": http,
        "queries": parts["queries"],
        "warmup_queries": args.warmup,
        "options": retrieval_settings(),
        "limit": LIMIT,
        "data": parts["data"],
        "load_s": parts["load_s"],
        "build_candidate_s": parts["build_s"],
        "model_load_s": parts["model_load_s"],
        "machine": parts["machine"],
        "machine_at_end": machine_info(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def retrieval_settings() -> dict[str, object]:
    """The retrieval defaults this run used (they belong to the library, not to the benchmark)."""
    options = RetrievalOptions(limit=LIMIT)
    return {
        "fusion": options.fusion,
        "rrf_k": options.rrf_k,
        "lexical_weight": options.lexical_weight,
        "candidates_per_leg": options.candidates,
        "reranker": options.reranker,
        "hnsw_ef_search": getattr(vector_leg_module, "HNSW_EF_SEARCH", None),
        "exact_scan_max_chunks": getattr(vector_leg_module, "EXACT_SCAN_MAX_CHUNKS", None),
    }


def render_markdown(report: dict) -> str:
    data = report["data"]
    lines = [
        f"# Query latency, filtered recall and HTTP throughput at {report['chunks']:,} chunks",
        "",
        f"Generated {report['generated_at']} by `benchmarks/bench_query.py`. Machine: "
        f"{report['machine']['cpus']} CPUs, load average (1/5/15 min) "
        f"{report['machine']['load_average_1_5_15']} at start and "
        f"{report['machine_at_end']['load_average_1_5_15']} at the end (other processes may "
        "share the machine).",
        "",
        "## Headline",
        "",
        "| figure | value | target |",
        "|---|---:|---|",
        f"| `query.chunks` | {report['chunks']:,} | >= 100,000 |",
        f"| `query.p95_ms_hybrid` (reader of the whole tenant) | {report['p95_ms_hybrid']} | |",
        f"| `query.p95_ms_hybrid_filtered` (worst selectivity) | "
        f"{report['p95_ms_hybrid_filtered']} | < 150 ms: "
        f"{'met' if report['targets']['hybrid_filtered_p95_below_150_ms'] else 'MISSED'} |",
    ]
    for label, value in report["filtered_recall_at_10"].items():
        lines.append(
            f'| `query.filtered_recall_at_10["{label}"]` | {value} | >= 0.95: '
            f"{'met' if value >= 0.95 else 'MISSED'} |"
        )
    lines += [
        f"| `query.http_rps` (concurrency {report['http']['concurrency']}) | "
        f"{report['http_rps']} | |",
        f"| HTTP p50 / p95 (ms) | {report['http']['latency_ms'].get('p50')} / "
        f"{report['http_p95_ms']} | |",
        f"| hybrid filtered p95 without the query embedding (worst selectivity) | "
        f"{report['p95_ms_hybrid_filtered_after_embed']} | |",
        "",
        "Latencies are whole `retrieve` calls (`total`, query embedding included) unless a stage "
        f"is named; {report['queries']} SciFact queries per cell after {report['warmup_queries']} "
        f"warm-up queries, top {report['limit']}, the library's retrieval defaults "
        f"({', '.join(f'{k} {v}' for k, v in report['options'].items())}).",
        "",
        "## Readers",
        "",
        "| reader | tenant | principals | readable chunks | share of all chunks |",
        "|---|---|---|---:|---:|",
    ]
    for label, reader in report["readers"].items():
        lines.append(
            f"| {label} | {reader['tenant']} | {', '.join(reader['principals'])} | "
            f"{reader['readable_chunks']:,} | {reader['share_of_all_chunks']:.2%} |"
        )
    lines += ["", "## Per-stage latency (ms, p50 / p95)", ""]
    header = "| mode | reader | " + " | ".join(STAGES) + " |"
    lines += [header, "|---|---|" + "---:|" * len(STAGES)]
    for mode, by_reader in report["latency_ms"].items():
        for label, stages in by_reader.items():
            cells = [
                f"{stages[stage]['p50']} / {stages[stage]['p95']}" if stage in stages else "-"
                for stage in STAGES
            ]
            lines.append(f"| {mode} | {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## HNSW recall@10 against exact search (the pipeline's vector leg)",
        "",
        "Same query vector, same `vector_candidates` SQL and session settings "
        "(`hnsw.iterative_scan = strict_order`, `hnsw.ef_search` of `vector.py`; a reader "
        "admitted to at most `exact_scan_max_chunks` chunks is searched exactly by the leg "
        "itself); exact = the same transaction with `SET LOCAL enable_indexscan = off`.",
        "",
        "| reader | recall@10 | worst query | queries short of 10 | HNSW p50 / p95 (ms) | "
        "exact p50 / p95 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, figures in report["recall"].items():
        lines.append(
            f"| {label} | {figures['recall_at_10']} | {figures['min_recall_at_10']} | "
            f"{figures['queries_short_of_10']} | {figures['hnsw_ms']['p50']} / "
            f"{figures['hnsw_ms']['p95']} | {figures['exact_ms']['p50']} / "
            f"{figures['exact_ms']['p95']} |"
        )
    http = report["http"]
    lines += [
        "",
        "## HTTP",
        "",
        f"`rag-pipeline serve` (one uvicorn process, default settings except "
        f"`RAG_API_RATE_LIMIT=1000000/minute`, since the default 60/minute per key would measure "
        f"the limiter) on 127.0.0.1 against the same database; an API key for a user in groups "
        f"{http['reader_groups']} of tenant {MAIN_TENANT}; {http['concurrency']} client threads "
        f"(httpx, same machine) posting `/v1/search` (default mode: hybrid, limit "
        f"{report['limit']}) for {http['seconds']} s: {http['requests_ok']:,} requests OK, "
        f"status counts {http['status_counts']}, {http['rps']} requests/s, latency p50 "
        f"{http['latency_ms'].get('p50')} ms, p95 {http['latency_ms'].get('p95')} ms. Clients "
        "and server share the 2 cores.",
        "",
        "## How the data was made",
        "",
        f"- Texts: the {data['scifact_abstracts']:,} BEIR SciFact abstracts (`corpus.jsonl`) split "
        f"into passages of {PASSAGE_SENTENCES} consecutive sentences ({data['passages']:,} "
        f"passages); {data['real_passages']:,} of them, sampled with seed {data['seed']}, are "
        "chunks as they are. Every other chunk is a recombination: the first k sentences of a "
        "real passage p followed by the last m sentences of q, one of p's "
        f"{NEIGHBOURS} nearest real passages (k, m uniform; duplicates redrawn); its search text "
        "is p's title, a blank line and that text, as the pipeline's chunker writes it.",
        f"- Vectors: the {data['real_passages']:,} real passages embedded by the real "
        f"all-MiniLM-L6-v2 (`{data['model_key']}`, {data['embed_s']} s); a recombination gets "
        f"normalise(w v_p + (1 - w) v_q + {NOISE} N(0, I)), w = k / (k + m). Synthetic vectors "
        "cluster round the real ones (about "
        f"{round(report['chunks'] / data['real_passages'])} per real passage), a denser and "
        "harder neighbourhood for HNSW than a real corpus of this size.",
        f"- Documents: {report['documents']:,}, 1 to 7 consecutive chunks each. Tenant by hash "
        f"of the document id: {', '.join(f'{t} {s:.0%}' for t, s in TENANTS.items())} of "
        f"chunks. In {MAIN_TENANT}, every document carries `group:{TENANT_GROUP}`, and each of "
        f"`{'`, `'.join('group:' + g for g in SELECTIVITIES.values())}` with probability "
        f"selectivity / {TENANTS[MAIN_TENANT]} from an independent hash, so that a reader of "
        "one group reads about 50%, 10% or 1% of ALL chunks in the index (the HNSW graph spans "
        "every tenant). Other tenants' documents carry their own tenant group.",
        f"- Loading: documents, chunks and embeddings by COPY into the pipeline's tables "
        f"({report['load_s']} s; `tsv` computed by Postgres, HNSW maintained on insert), then "
        f"the pipeline's `build_candidate` ({report['build_candidate_s']} s: memberships, BM25 "
        "postings and statistics by the SQL of sql/007, ANALYZE) and `promote`.",
        f"- Queries: {report['queries']} SciFact queries (`queries.jsonl`, shuffled with seed "
        f"{data['seed']}), embedded by the same model inside `retrieve` (stage `embed`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=3000, help="real passages embedded")
    parser.add_argument("--queries", type=int, help="default 200 (20 below 50,000 chunks)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--http-seconds", type=float, help="default 30 (10 below 50,000)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR SciFact dir")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    small = args.chunks < 50_000
    query_count = args.queries or (20 if small else 200)
    http_seconds = args.http_seconds or (10.0 if small else 30.0)
    real = min(args.real, max(200, args.chunks // 25))
    started_machine = machine_info()
    log(f"load average at start {started_machine['load_average_1_5_15']}")

    model_started = time.perf_counter()
    embedder = load_embedder()
    model_load_s = round(time.perf_counter() - model_started, 1)
    passages = read_passages(args.corpus / "corpus.jsonl")
    corpus = make_corpus(passages, real, args.chunks, embedder, args.seed)
    layout = make_layout(args.chunks, args.seed)
    queries = read_queries(args.corpus, query_count + args.warmup, args.seed)
    timed_queries, warmup_queries = queries[args.warmup :], queries[: args.warmup]
    keys = IndexKeys(model_key=embedder.model_key, parser_key=PARSER_KEY, chunker_key=CHUNKER_KEY)
    access = readers()

    with tempfile.TemporaryDirectory(prefix="rag_bench_query_") as workdir:
        data_dir = Path(workdir) / "pg"
        url = database.start_embedded_server(data_dir)
        try:
            with database.connection(url) as conn:
                log(f"loading {args.chunks:,} chunks into {data_dir}")
                load_s = round(load(conn, corpus, layout, embedder.model_key), 1)
                log("building the index version (build_candidate: memberships, BM25 postings)")
                build_started = time.perf_counter()
                candidate = build_candidate(conn, keys)
                build_s = round(time.perf_counter() - build_started, 1)
                promote(conn, candidate.version_id, actor="benchmark", required_checks=())
                counts = readable_counts(conn, candidate.version_id, access)
                log(f"readable chunks per reader: {counts}")
                log(f"timing retrieve: {query_count} queries x {len(MODES)} modes x 4 readers")
                latency = time_retrieval(
                    conn, embedder, warmup_queries + timed_queries, args.warmup, access
                )
                log("recall@10 of the vector leg against exact search")
                vectors = embedder.embed(timed_queries)
                recall = measure_recall(
                    conn, candidate.version_id, vectors, embedder.model_key, access
                )
            log(f"HTTP: rag-pipeline serve, {HTTP_CONCURRENCY} clients, {http_seconds} s")
            http = http_benchmark(
                url, Path(workdir), timed_queries, http_seconds, [SELECTIVITIES[0.1]]
            )
            log(f"  {http['rps']} requests/s, latency {http['latency_ms']}")
        finally:
            database.stop_embedded_server(data_dir)

    report = build_report(
        args,
        latency=latency,
        recall=recall,
        http=http,
        counts=counts,
        documents=len(layout.doc_ids),
        queries=len(timed_queries),
        data={
            "scifact_abstracts": len(
                (args.corpus / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
            ),
            "passages": corpus.passages_total,
            "real_passages": corpus.real,
            "synthetic_chunks": args.chunks - min(args.chunks, corpus.real),
            "noise_sigma": NOISE,
            "neighbours": NEIGHBOURS,
            "model_key": embedder.model_key,
            "embed_s": round(corpus.embed_s, 1),
            "seed": args.seed,
            "tenants": TENANTS,
        },
        load_s=load_s,
        build_s=build_s,
        model_load_s=model_load_s,
        machine=started_machine,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    bench_json = args.out / "bench.json"
    # Read-modify-write: every key another benchmark wrote stays.
    merged = json.loads(bench_json.read_text(encoding="utf-8")) if bench_json.exists() else {}
    merged["query"] = report
    bench_json.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    (args.out / "bench_query.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
