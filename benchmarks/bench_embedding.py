# ruff: noqa: T201
"""Embedding backends side by side: PyTorch against the fast backend on the same SciFact texts.

Chunks N BEIR SciFact abstracts with the pipeline's chunker (`chunk_document` over a title and
a text element, what the Markdown of the BEIR import parses to, within the embedder's 256-token
budget), embeds the same chunk texts (`search_text`, what the pipeline embeds) with each backend
in one process, alternating so that both see the same machine load, and reports chunks/s, the
speedup, the cosine between the two vectors of every chunk, and nDCG@10 of dense retrieval over
those chunks (a document ranks at its best chunk) for the SciFact test queries whose relevant
documents are all inside the subset (ir-measures, as `rag_pipeline.lib.evaluation.metrics`):

    .venv/bin/python benchmarks/bench_embedding.py --docs 2000 --out reports

Writes the `embedding` key of `<out>/bench.json` (every other key is kept) and
`<out>/bench_embedding.md`. The subset is every document judged relevant to a test query plus
a seeded sample of the others (`rag_pipeline.lib.evaluation.beir.select_subset`), so the same
N documents are used on every machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import rag_pipeline  # noqa: F401  (offline environment before anything else is imported)
from rag_pipeline.lib.chunking import ChunkingConfig, chunk_document
from rag_pipeline.lib.embedding import (
    DEFAULT_MODEL_NAME,
    OPENVINO,
    TORCH,
    SentenceTransformerEmbedder,
    exported_model_dir,
    load_token_counter,
)
from rag_pipeline.lib.evaluation.beir import (
    corpus_path,
    iter_corpus,
    iter_queries,
    qrels_path,
    queries_path,
    read_qrels,
    select_subset,
)
from rag_pipeline.lib.evaluation.metrics import document_ranking, evaluate, rank_scores
from rag_pipeline.lib.parsing import ParsedElement

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEIR = REPO_ROOT.parent / "shared" / "beir" / "scifact"
# Targets of issue 15: at least 3x PyTorch's throughput, nDCG@10 within 0.005 of PyTorch's.
TARGET_SPEEDUP = 3.0
TARGET_NDCG_DELTA = 0.005
# Texts per timed round; rounds alternate between backends so that load spikes hit both.
ROUND = 250
TOP_K = 10


class BenchmarkError(RuntimeError):
    """The benchmark cannot run."""


def load_subset(beir: Path, docs: int) -> tuple[list[str], list[str], dict[str, str], dict]:
    """(doc id of each chunk, chunk texts, query id -> text, qrels) for the subset and the test
    queries whose relevant documents are all in it."""
    qrels_all = read_qrels(qrels_path(beir, "test"))
    required = {doc_id for judged in qrels_all.values() for doc_id in judged}
    keep, _ = select_subset(iter_corpus(corpus_path(beir)), required, docs)
    counter = load_token_counter(DEFAULT_MODEL_NAME)
    doc_ids: list[str] = []
    texts: list[str] = []
    for document in iter_corpus(corpus_path(beir)):
        if document.doc_id not in keep or not document.text:
            continue
        elements = [
            ParsedElement(0, "Title", document.title, 1, None),
            ParsedElement(1, "NarrativeText", document.text, None, None),
        ]
        for chunk in chunk_document(document.title, elements, counter, ChunkingConfig()):
            doc_ids.append(document.doc_id)
            texts.append(chunk.search_text)
    inside = set(doc_ids)
    qrels = {
        qid: judged
        for qid, judged in qrels_all.items()
        if judged and all(doc_id in inside for doc_id in judged)
    }
    queries = {q.query_id: q.text for q in iter_queries(queries_path(beir)) if q.query_id in qrels}
    if not queries:
        raise BenchmarkError("no test query has all its relevant documents in the subset")
    return doc_ids, texts, queries, qrels


def timed_embeddings(
    embedders: dict[str, SentenceTransformerEmbedder], texts: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Vectors and total seconds per backend, in alternating rounds of `ROUND` texts."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in embedders}
    seconds = dict.fromkeys(embedders, 0.0)
    for start in range(0, len(texts), ROUND):
        batch = texts[start : start + ROUND]
        order = list(embedders) if (start // ROUND) % 2 == 0 else list(reversed(embedders))
        for name in order:
            began = time.perf_counter()
            parts[name].append(embedders[name].embed(batch))
            seconds[name] += time.perf_counter() - began
        print(f"  {start + len(batch)}/{len(texts)} texts", file=sys.stderr)
    return {name: np.vstack(chunks) for name, chunks in parts.items()}, seconds


def ndcg_at_10(
    doc_ids: list[str], doc_vectors: np.ndarray, query_vectors: np.ndarray, qids: list[str], qrels
) -> float:
    scores = query_vectors @ doc_vectors.T
    run = {}
    for row, qid in enumerate(qids):
        order = np.argsort(-scores[row], kind="stable")
        run[qid] = rank_scores(document_ranking(doc_ids[index] for index in order)[:TOP_K])
    return evaluate(qrels, run).aggregate["ndcg_at_10"]


def inference_precision(embedder: SentenceTransformerEmbedder) -> str:
    """The precision OpenVINO compiled the model for: on a CPU with bf16 instructions its
    default is bf16 (the source of most of its speed here; forcing f32 ran no faster than
    PyTorch), elsewhere f32. PyTorch runs f32."""
    request = getattr(embedder._model[0].auto_model, "request", None)
    if request is None or not hasattr(request, "get_property"):
        return "f32"
    value = request.get_property("INFERENCE_PRECISION_HINT")
    return str(value.get_type_name()) if hasattr(value, "get_type_name") else str(value)


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def render_markdown(report: dict[str, Any]) -> str:
    figures = report["figures"]
    fast = report["fast_backend"]

    def mark(met: bool) -> str:
        return "met" if met else "NOT met"

    lines = [
        "# Embedding backends side by side",
        "",
        f"Generated {report['generated_at']} by `benchmarks/bench_embedding.py`: "
        f"{report['chunks']} chunks of {report['documents']} BEIR SciFact abstracts (the "
        "pipeline's chunker, mean "
        f"{report['mean_chunk_tokens']:.0f} word pieces per chunk), embedded by PyTorch "
        f"and {fast} in one process, alternating in rounds of {ROUND} texts so that both see "
        f"the same machine load (1-minute load average at start and end: "
        f"{report['machine']['load_average_1m_at_start']} and "
        f"{report['machine']['load_average_1m_at_end']} on {report['machine']['cpus']} "
        "cores, shared with other work: absolute figures vary, the ratio is what was measured "
        "side by side).",
        "",
        "| backend | chunks/s | seconds | nDCG@10 |",
        "|---|---|---|---|",
        f"| PyTorch | {figures['torch_chunks_per_s']:.1f} | {report['torch_seconds']:.1f} | "
        f"{report['torch_ndcg_at_10']:.4f} |",
        f"| {fast} | {figures['fast_chunks_per_s']:.1f} | {report['fast_seconds']:.1f} | "
        f"{report['fast_ndcg_at_10']:.4f} |",
        "",
        f"- speedup: **{figures['speedup']:.2f}x** (target >= {TARGET_SPEEDUP:g}x: "
        f"{mark(report['speedup_target_met'])})",
        f"- nDCG@10 delta ({fast} - PyTorch): **{figures['ndcg_delta']:+.4f}** over "
        f"{report['queries']} test queries whose relevant documents are in the subset "
        f"(target |delta| <= {TARGET_NDCG_DELTA}: {mark(report['ndcg_target_met'])})",
        f"- cosine between the two backends' vectors of each text: min "
        f"{figures['cosine_min']:.6f}, mean {figures['cosine_mean']:.6f}",
        f"- {fast} export: {report['export_seconds']:.1f} s ({report['export_cache']}), "
        f"model load {report['fast_load_seconds']:.1f} s",
        f"- embedding keys: `{report['model_keys'][TORCH]}` and `{report['model_keys'][fast]}`",
        f"- {fast} inference precision on this CPU: {report['fast_inference_precision']}",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="SciFact documents to embed")
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR, help="BEIR scifact folder")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--backend", default=OPENVINO, help="the fast backend to compare")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="export cache (default: a temporary directory, so the export is timed too)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == TORCH:
        raise BenchmarkError("--backend must name a backend other than torch")
    started = time.perf_counter()
    machine = machine_info()
    doc_ids, texts, queries, qrels = load_subset(args.beir, args.docs)
    print(
        f"{len(texts)} chunks of {len(set(doc_ids))} documents, {len(queries)} judged queries",
        file=sys.stderr,
    )
    counter = load_token_counter(DEFAULT_MODEL_NAME)
    mean_tokens = sum(counter.count(text) for text in texts) / len(texts)
    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as scratch:
        cache_dir = args.cache_dir or Path(scratch)
        began = time.perf_counter()
        exported_model_dir(DEFAULT_MODEL_NAME, args.backend, cache_dir)
        export_seconds = time.perf_counter() - began
        torch_embedder = SentenceTransformerEmbedder(DEFAULT_MODEL_NAME, args.batch_size)
        began = time.perf_counter()
        fast_embedder = SentenceTransformerEmbedder(
            DEFAULT_MODEL_NAME, args.batch_size, args.backend, cache_dir
        )
        fast_load_seconds = time.perf_counter() - began
        embedders = {TORCH: torch_embedder, args.backend: fast_embedder}
        # One warm-up batch each: first calls compile kernels and allocate.
        for embedder in embedders.values():
            embedder.embed(texts[:8])
        vectors, seconds = timed_embeddings(embedders, texts)
        qids = list(queries)
        query_vectors = {
            name: embedder.embed([queries[qid] for qid in qids])
            for name, embedder in embedders.items()
        }
        precision = inference_precision(fast_embedder)
    cosines = np.sum(vectors[TORCH] * vectors[args.backend], axis=1)
    ndcg = {
        name: ndcg_at_10(doc_ids, vectors[name], query_vectors[name], qids, qrels)
        for name in embedders
    }
    machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    torch_rate = len(texts) / seconds[TORCH]
    fast_rate = len(texts) / seconds[args.backend]
    figures = {
        "torch_chunks_per_s": round(torch_rate, 2),
        "fast_chunks_per_s": round(fast_rate, 2),
        "speedup": round(fast_rate / torch_rate, 3),
        "ndcg_delta": round(ndcg[args.backend] - ndcg[TORCH], 5),
        "cosine_min": round(float(cosines.min()), 7),
        "cosine_mean": round(float(cosines.mean()), 7),
    }
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fast_backend": args.backend,
        "documents": len(set(doc_ids)),
        "chunks": len(texts),
        "mean_chunk_tokens": round(mean_tokens, 1),
        "queries": len(qids),
        "batch_size": args.batch_size,
        "figures": figures,
        "torch_seconds": round(seconds[TORCH], 2),
        "fast_seconds": round(seconds[args.backend], 2),
        "torch_ndcg_at_10": round(ndcg[TORCH], 5),
        "fast_ndcg_at_10": round(ndcg[args.backend], 5),
        "speedup_target_met": figures["speedup"] >= TARGET_SPEEDUP,
        "ndcg_target_met": abs(figures["ndcg_delta"]) <= TARGET_NDCG_DELTA,
        "export_seconds": round(export_seconds, 2),
        "export_cache": "reused or made in --cache-dir"
        if args.cache_dir
        else "made now, in a temporary cache",
        "fast_load_seconds": round(fast_load_seconds, 2),
        "fast_inference_precision": precision,
        "model_keys": {name: embedder.model_key for name, embedder in embedders.items()},
        "machine": machine,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    bench_json = args.out / "bench.json"
    merged = json.loads(bench_json.read_text(encoding="utf-8")) if bench_json.exists() else {}
    merged["embedding"] = {**figures, "details": report}
    bench_json.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    (args.out / "bench_embedding.md").write_text(render_markdown(report), encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
