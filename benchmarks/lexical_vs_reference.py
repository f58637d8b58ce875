# ruff: noqa: T201
"""The pipeline's BM25 leg against a reference BM25, side by side on BEIR SciFact, in one run.

Builds SciFact abstracts (`# title` + text, as Markdown) through the pipeline's own library
functions (parse, chunk with the MiniLM tokenizer, embed, build and promote a version) into a
database on an embedded PostgreSQL, then ranks the test queries with
`rag_pipeline.lib.retrieval.retrieve` (documents ranked by their best chunk) and with `bm25s`
(PyStemmer English Snowball stemmer, English stopwords, title + text per document), and scores
both with `ir-measures` (nDCG@10, R@100, RR@10). With `--embedder minilm` it also measures the
vector leg and the fusion settings (see `--fusion-grid`).

    .venv/bin/python benchmarks/lexical_vs_reference.py --docs 5183 --out reports \
        [--data-dir /tmp/scifact-db] [--embedder fake|minilm] [--fusion-grid]

The corpus is kept in `--data-dir` (an embedded server) between runs, so only the first run
pays for parsing and embedding. A subset (`--docs N`) always keeps every document judged
relevant by a test query, then fills up in file order, so all 300 test queries stay answerable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

import rag_pipeline  # noqa: F401  (offline environment first)
from rag_pipeline.lib import database, index_versions
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.chunking import ChunkingConfig, chunk_document
from rag_pipeline.lib.connectors import DiscoveredDocument
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.lib.evaluation.measurement import percentile
from rag_pipeline.lib.parsing import PARSER_KEY, ParseError, parse_document
from rag_pipeline.lib.retrieval import (
    HYBRID,
    LEXICAL,
    MINMAX,
    RRF,
    VECTOR,
    ZSCORE,
    BM25Params,
    RetrievalOptions,
    retrieve,
)
from rag_pipeline.lib.stores.chunks import documents_to_chunk, save_chunks
from rag_pipeline.lib.stores.embeddings import save_embeddings, texts_to_embed
from rag_pipeline.lib.stores.parsed import (
    documents_to_parse,
    load_blob,
    load_parsed_elements,
    save_parsed,
)
from rag_pipeline.lib.stores.sources import sync_source

REPO_ROOT = Path(__file__).resolve().parents[1]
SCIFACT = REPO_ROOT.parent / "shared" / "beir" / "scifact"
SOURCE = "scifact"
TENANT = "bench"
GROUP = "group:readers"
ACCESS = UserAccess(user="reader", tenant=TENANT, principals=(GROUP,))
DEPTH = 100  # documents ranked per query (R@100)
CHUNK_DEPTH = 300  # chunks fetched to fill DEPTH documents


@dataclass(frozen=True)
class Beir:
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(root: Path, docs: int) -> Beir:
    records = [json.loads(line) for line in (root / "corpus.jsonl").open()]
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    judged = {doc_id for judgments in qrels.values() for doc_id in judgments}
    keep = set(judged)
    for record in records:
        if len(keep) >= docs:
            break
        keep.add(str(record["_id"]))
    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r["text"]))
        for r in records
        if str(r["_id"]) in keep
    }
    queries = {
        str(q["_id"]): str(q["text"])
        for q in map(json.loads, (root / "queries.jsonl").open())
        if str(q["_id"]) in qrels
    }
    return Beir(corpus, queries, qrels)


# -- the pipeline's side -----------------------------------------------------------------------


def markdown_of(title: str, text: str) -> bytes:
    return f"# {title}\n\n{text}\n".encode()


def ingest(conn: psycopg.Connection, beir: Beir, embedder: Embedder) -> index_versions.Candidate:
    """Scan, parse, chunk and embed the corpus, then build and promote its version."""
    from rag_pipeline.lib.embedding import load_token_counter

    counter = load_token_counter()
    config = ChunkingConfig(max_tokens=embedder.max_tokens)
    keys = index_versions.IndexKeys(embedder.model_key, PARSER_KEY, config.key(counter.name))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    discovered = []
    for doc_id, (title, text) in sorted(beir.corpus.items()):
        content = markdown_of(title, text)
        discovered.append(
            DiscoveredDocument(
                doc_id=f"{SOURCE}:{doc_id}.md",
                source=SOURCE,
                uri=f"file:///scifact/{doc_id}.md",
                relative_path=f"{doc_id}.md",
                content_hash=hashlib.sha256(content).hexdigest(),
                byte_size=len(content),
                mime_type="text/markdown",
                encoding=None,
                owner=None,
                tenant=TENANT,
                acl_principals=(GROUP,),
                title=title or None,
                updated_at=now,
                content=content,
            )
        )
    sync_source(conn, SOURCE, discovered, run_id="bench")
    pending = documents_to_parse(conn, SOURCE, PARSER_KEY)
    started = time.perf_counter()
    for position, doc in enumerate(pending, 1):
        try:
            parsed = parse_document(
                load_blob(conn, doc.content_hash),
                doc.mime_type,
                filename=doc.relative_path,
                declared_title=doc.title,
            )
        except ParseError as error:
            print(f"[bench] {doc.doc_id}: {error}", file=sys.stderr)
            continue
        with conn.transaction():
            save_parsed(conn, doc, PARSER_KEY, parsed)
        if position % 500 == 0:
            print(
                f"[bench] parsed {position}/{len(pending)} ({time.perf_counter() - started:.0f}s)"
            )
    for doc in documents_to_chunk(conn, SOURCE, PARSER_KEY, keys.chunker_key):
        elements = load_parsed_elements(conn, doc.doc_id, doc.content_hash, PARSER_KEY)
        chunks = chunk_document(doc.title or doc.relative_path, elements, counter, config)
        with conn.transaction():
            save_chunks(conn, doc, PARSER_KEY, keys.chunker_key, chunks)
    todo = texts_to_embed(conn, SOURCE, PARSER_KEY, keys.chunker_key, keys.model_key)
    started = time.perf_counter()
    for start in range(0, len(todo), 256):
        batch = todo[start : start + 256]
        vectors = embedder.embed([text for _, text in batch])
        with conn.transaction():
            save_embeddings(conn, keys.model_key, [h for h, _ in batch], vectors)
        print(
            f"[bench] embedded {start + len(batch)}/{len(todo)}"
            f" ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    candidate = index_versions.build_candidate(conn, keys, run_id="bench")
    index_versions.promote(conn, candidate.version_id, actor="bench", required_checks=())
    return candidate


Run = dict[str, dict[str, float]]


def pipeline_run(
    conn: psycopg.Connection,
    beir: Beir,
    options: RetrievalOptions,
    embedder: Embedder | None,
    timings: dict[str, list[float]] | None = None,
) -> Run:
    """query id -> {BEIR doc id: score}, documents ranked by their best chunk."""
    run: Run = {}
    options = replace(options, limit=CHUNK_DEPTH)
    for query_id, query in beir.queries.items():
        result = retrieve(conn, ACCESS, query, options, embedder)
        ranked: dict[str, float] = {}
        for hit in result.hits:
            doc_id = hit.doc_id.split(":", 1)[1].removesuffix(".md")
            if doc_id not in ranked:
                # Scores must decrease with rank for ir-measures, whatever the stage's scale.
                ranked[doc_id] = float(CHUNK_DEPTH - len(ranked))
            if len(ranked) == DEPTH:
                break
        run[query_id] = ranked
        if timings is not None:
            for stage, value in result.timings_ms.items():
                timings.setdefault(stage, []).append(value)
    return run


# -- the reference -----------------------------------------------------------------------------


def reference_bm25(beir: Beir, k1: float, b: float) -> Run:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(beir.corpus)
    texts = [f"{title} {text}" for title, text in beir.corpus.values()]
    retriever = bm25s.BM25(k1=k1, b=b)  # method "lucene", as Elasticsearch and Lucene
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False))
    query_ids = list(beir.queries)
    tokens = bm25s.tokenize(
        [beir.queries[q] for q in query_ids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    results, scores = retriever.retrieve(
        tokens, k=min(DEPTH, len(doc_ids)), show_progress=False, n_threads=1
    )
    return {
        query_id: {
            doc_ids[int(index)]: float(score)
            for index, score in zip(results[row], scores[row], strict=True)
        }
        for row, query_id in enumerate(query_ids)
    }


def evaluate(beir: Beir, run: Run, query_ids: Sequence[str] | None = None) -> dict[str, float]:
    import ir_measures
    from ir_measures import RR, R, nDCG

    selected = set(query_ids) if query_ids is not None else set(beir.queries)
    qrels = {q: docs for q, docs in beir.qrels.items() if q in selected}
    filtered = {q: docs for q, docs in run.items() if q in selected}
    measures = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10], qrels, filtered)
    return {
        "ndcg_at_10": round(float(measures[nDCG @ 10]), 4),
        "recall_at_100": round(float(measures[R @ 100]), 4),
        "mrr_at_10": round(float(measures[RR @ 10]), 4),
    }


def latency(timings: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        stage: {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2),
        }
        for stage, values in sorted(timings.items())
    }


# -- main ----------------------------------------------------------------------------------------


def make_embedder(kind: str) -> Embedder:
    if kind == "minilm":
        from rag_pipeline.lib.embedding import load_embedder

        return load_embedder()
    sys.path.insert(0, str(REPO_ROOT))
    from rag_pipeline_tests.fakes import HashedBagOfWordsEmbedder

    return HashedBagOfWordsEmbedder()


def open_database(data_dir: Path, name: str) -> str:
    admin_url = database.start_embedded_server(data_dir)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return admin_url.replace(f"/{database.PIPELINE_DATABASE}?", f"/{name}?")


def fusion_grid(conn: psycopg.Connection, beir: Beir, embedder: Embedder) -> list[dict[str, Any]]:
    """nDCG@10 of each fusion setting, from each leg's top candidates fetched once per query.

    `fuse` is the function `retrieve` calls, on the same candidate lists (DEFAULT_CANDIDATES per
    leg), so each row is what `retrieve` would return with that setting.
    """
    from rag_pipeline.lib.retrieval.fusion import fuse

    legs: dict[str, dict[str, list[tuple[str, float]]]] = {}
    doc_of: dict[str, str] = {}
    for query_id, query in beir.queries.items():
        legs[query_id] = {}
        for mode in (VECTOR, LEXICAL):
            options = RetrievalOptions(mode=mode, limit=RetrievalOptions().candidates)
            hits = retrieve(conn, ACCESS, query, options, embedder).hits
            legs[query_id][mode] = [(hit.chunk_id, hit.score) for hit in hits]
            doc_of.update({hit.chunk_id: hit.doc_id.split(":", 1)[1][:-3] for hit in hits})
    settings: list[tuple[str, float, float]] = [
        (RRF, k, weight) for k in (10, 20, 40, 60, 100) for weight in (0.3, 0.4, 0.5, 0.6, 0.7)
    ]
    settings += [(method, 0.0, w) for method in (MINMAX, ZSCORE) for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
    rows = []
    for method, k, weight in settings:
        run: Run = {}
        for query_id, rankings in legs.items():
            fused = fuse(
                rankings, method, rrf_k=k or 60, weights={VECTOR: 1 - weight, LEXICAL: weight}
            )
            ranked: dict[str, float] = {}
            for chunk_id, _ in fused:
                ranked.setdefault(doc_of[chunk_id], float(CHUNK_DEPTH - len(ranked)))
            run[query_id] = ranked
        rows.append(
            {
                "fusion": method,
                "rrf_k": k if method == RRF else None,
                "lexical_weight": weight,
                **evaluate(beir, run),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5183)
    parser.add_argument("--data-dir", type=Path, help="keep the embedded server here")
    parser.add_argument("--embedder", choices=["fake", "minilm"], default="fake")
    parser.add_argument("--fusion-grid", action="store_true")
    parser.add_argument("--k1", type=float, default=1.2)
    parser.add_argument("--b", type=float, default=0.75)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args(argv)

    beir = load_beir(SCIFACT, args.docs)
    print(f"[bench] {len(beir.corpus)} documents, {len(beir.queries)} test queries", flush=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="rag_lexical_bench_"))
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)
    embedder = make_embedder(args.embedder)
    url = open_database(data_dir, f"scifact_{len(beir.corpus)}_{args.embedder}")
    report: dict[str, Any] = {
        "documents": len(beir.corpus),
        "queries": len(beir.queries),
        "embedder": embedder.model_key,
        "bm25": {"k1": args.k1, "b": args.b},
    }
    with database.connection(url) as conn:
        started = time.perf_counter()
        if index_versions.active_version_id(conn) is None:
            ingest(conn, beir, embedder)
            report["ingest_s"] = round(time.perf_counter() - started, 1)
        report["chunks"] = conn.execute(
            "SELECT count(*) FROM rag.index_version_chunks m JOIN rag.active_index a"
            " USING (version_id)"
        ).fetchone()[0]
        started = time.perf_counter()
        reference = reference_bm25(beir, args.k1, args.b)
        report["reference_s"] = round(time.perf_counter() - started, 2)
        bm25 = BM25Params(args.k1, args.b)
        runs: dict[str, Callable[[], Run]] = {}
        timings: dict[str, dict[str, list[float]]] = {}

        def measured(options: RetrievalOptions, name: str) -> Callable[[], Run]:
            timings[name] = {}
            return lambda: pipeline_run(conn, beir, options, embedder, timings[name])

        runs["lexical"] = measured(RetrievalOptions(mode=LEXICAL, bm25=bm25), "lexical")
        if args.embedder == "minilm":
            runs["vector"] = measured(RetrievalOptions(mode=VECTOR), "vector")
            runs["hybrid"] = measured(RetrievalOptions(mode=HYBRID, bm25=bm25), "hybrid")
        results = {"reference_bm25s": evaluate(beir, reference)}
        for name, execute in runs.items():
            results[f"pipeline_{name}"] = evaluate(beir, execute())
        report["results"] = results
        report["latency"] = {name: latency(values) for name, values in timings.items()}
        report["lexical_minus_reference_ndcg_at_10"] = round(
            results["pipeline_lexical"]["ndcg_at_10"] - results["reference_bm25s"]["ndcg_at_10"], 4
        )
        if args.fusion_grid and args.embedder == "minilm":
            report["fusion_grid"] = fusion_grid(conn, beir, embedder)
    if args.data_dir is None:
        database.stop_embedded_server(data_dir)
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lexical_vs_reference.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# BM25 inside Postgres against a reference BM25 (BEIR SciFact, test split)",
        "",
        f"{report['documents']:,} documents ({report['chunks']:,} chunks), "
        f"{report['queries']} test queries; BM25 k1={args.k1}, b={args.b}. The pipeline ranks "
        "chunks; a document's rank is its best chunk's. Reference: `bm25s` on title + text per "
        "document, PyStemmer English, English stopwords. Metrics by `ir-measures`.",
        "",
        "| run | nDCG@10 | R@100 | MRR@10 |",
        "|---|---:|---:|---:|",
    ]
    for name, figures in results.items():
        lines.append(
            f"| {name} | {figures['ndcg_at_10']} | {figures['recall_at_100']} "
            f"| {figures['mrr_at_10']} |"
        )
    lines += ["", "| run | stage | p50 ms | p95 ms |", "|---|---|---:|---:|"]
    for name, stages in report["latency"].items():
        for stage, figures in stages.items():
            lines.append(f"| {name} | {stage} | {figures['p50_ms']} | {figures['p95_ms']} |")
    if "fusion_grid" in report:
        lines += [
            "",
            "Fusion settings on the same queries: sensitivity only. SciFact has no train or dev "
            "judgments here, so the defaults (RRF, k=60, equal weights) were not chosen from "
            "this table.",
            "",
            "| fusion | k | lexical weight | nDCG@10 | R@100 |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in report["fusion_grid"]:
            lines.append(
                f"| {row['fusion']} | {row['rrf_k'] or '-'} | {row['lexical_weight']} "
                f"| {row['ndcg_at_10']} | {row['recall_at_100']} |"
            )
    (args.out / "lexical_vs_reference.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
