# ruff: noqa: T201
"""Embedding backends side by side: PyTorch against the fast backend on the same SciFact texts.

Chunks N BEIR SciFact abstracts with the pipeline's chunker (`chunk_document` over a title and
a text element, what the Markdown of the BEIR import parses to, within the embedder's 256-token
budget), embeds the same chunk texts (`search_text`, what the pipeline embeds) with each backend
in one process, interleaved so that every backend sees the same machine load: the texts go in
rounds, every backend embeds the round's texts in turn (the order rotates each round), and the
speedup is the median over rounds of PyTorch's seconds over the fast backend's seconds for the
same texts (a load spike hits one round, not the figure). It reports chunks/s, that median
speedup and its range, the cosine between the two vectors of every chunk, and nDCG@10 of dense
retrieval over
those chunks (a document ranks at its best chunk) for the SciFact test queries whose relevant
documents are all inside the subset (ir-measures, as `rag_pipeline.lib.evaluation.metrics`):

    .venv/bin/python benchmarks/bench_embedding.py --docs 2000 --out reports
    .venv/bin/python benchmarks/bench_embedding.py --backend openvino-int8 --backend openvino

The first `--backend` (default `openvino-int8`) gives the `embedding` keys; any other is
measured in the same rounds and reported beside it.

Writes the `embedding` key of `<out>/bench.json` (every other key is kept) and
`<out>/bench_embedding.md`. The subset is every document judged relevant to a test query plus
a seeded sample of the others (`rag_pipeline.lib.evaluation.beir.select_subset`), so the same
N documents are used on every machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    BACKENDS,
    DEFAULT_MODEL_NAME,
    OPENVINO,
    OPENVINO_INT8,
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
from rag_pipeline.lib.evaluation.measurement import load_average, machine_info
from rag_pipeline.lib.evaluation.metrics import document_ranking, evaluate, rank_scores
from rag_pipeline.lib.parsing import ParsedElement

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEIR = REPO_ROOT.parent / "shared" / "beir" / "scifact"
# Targets of issue 15: at least 3x PyTorch's throughput, nDCG@10 within 0.005 of PyTorch's.
TARGET_SPEEDUP = 3.0
TARGET_NDCG_DELTA = 0.005
# Texts per timed round (the default of --round): every backend embeds each round in turn.
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
    embedders: dict[str, SentenceTransformerEmbedder], texts: list[str], round_size: int
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Vectors and the seconds of every round per backend. Each round's texts are embedded by
    every backend in turn, the order rotated by one each round, so no backend always runs
    first or last."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in embedders}
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    names = list(embedders)
    for number, start in enumerate(range(0, len(texts), round_size)):
        batch = texts[start : start + round_size]
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            parts[name].append(embedders[name].embed(batch))
            seconds[name].append(time.perf_counter() - began)
        rates = ", ".join(f"{name} {len(batch) / seconds[name][-1]:.1f}/s" for name in names)
        print(f"  {start + len(batch)}/{len(texts)} texts: {rates}", file=sys.stderr)
    return {name: np.vstack(chunks) for name, chunks in parts.items()}, seconds


def speedups(torch_seconds: list[float], fast_seconds: list[float]) -> dict[str, float]:
    """Per-round ratios of PyTorch's seconds to the fast backend's on the same texts."""
    ratios = [slow / fast for slow, fast in zip(torch_seconds, fast_seconds, strict=True)]
    return {
        "speedup": round(statistics.median(ratios), 3),
        "speedup_min": round(min(ratios), 3),
        "speedup_max": round(max(ratios), 3),
        "speedup_of_totals": round(sum(torch_seconds) / sum(fast_seconds), 3),
    }


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
    PyTorch), elsewhere f32. PyTorch runs f32. The int8 export runs its quantised matrix
    products in int8 and the rest at that precision."""
    request = getattr(embedder._model[0].auto_model, "request", None)
    if request is None or not hasattr(request, "get_property"):
        return "f32"
    value = request.get_property("INFERENCE_PRECISION_HINT")
    precision = str(value.get_type_name()) if hasattr(value, "get_type_name") else str(value)
    return f"int8 + {precision}" if embedder.backend == OPENVINO_INT8 else precision


def render_markdown(report: dict[str, Any]) -> str:
    figures = report["figures"]
    fast = report["fast_backend"]
    machine = report["machine"]

    def mark(met: bool) -> str:
        return "met" if met else "NOT met"

    lines = [
        "# Embedding backends side by side",
        "",
        f"Generated {report['generated_at']} by `benchmarks/bench_embedding.py`: "
        f"{report['chunks']} chunks of {report['documents']} BEIR SciFact abstracts (the "
        "pipeline's chunker, mean "
        f"{report['mean_chunk_tokens']:.0f} word pieces per chunk), embedded by PyTorch "
        f"and {', '.join(report['backends'])} in one process, interleaved: "
        f"{report['rounds']} rounds of {report['round_size']} texts, every backend embedding "
        "each round's texts in turn (order rotated each round); the speedup is the median "
        "over rounds of PyTorch's seconds over the backend's for the same texts, so a load "
        "spike moves one round, not the figure. Load average (1/5/15 min) at start and end: "
        f"{machine['load_average_1_5_15']} and {report['load_average_at_end']} on "
        f"{machine['cpus']} cores shared with other work: absolute chunks/s vary with it.",
        "",
        "| backend | chunks/s (median round) | speedup median (range) | speedup of totals "
        "| nDCG@10 | delta | cosine to PyTorch min / mean | precision |",
        "|---|---|---|---|---|---|---|---|",
        f"| PyTorch (the default) | {report['torch_chunks_per_s']:.1f} | 1 | 1 "
        f"| {report['torch_ndcg_at_10']:.4f} | | | f32 |",
    ]
    for name, result in report["results"].items():
        lines.append(
            f"| {name} | {result['chunks_per_s']:.1f} | **{result['speedup']:.2f}x** "
            f"({result['speedup_min']:.2f}-{result['speedup_max']:.2f}) "
            f"| {result['speedup_of_totals']:.2f}x | {result['ndcg_at_10']:.4f} "
            f"| {result['ndcg_delta']:+.4f} | {result['cosine_min']:.5f} / "
            f"{result['cosine_mean']:.5f} | {result['inference_precision']} |"
        )
    lines += [
        "",
        f"- `{fast}` (the `embedding` keys of bench.json): speedup **{figures['speedup']:.2f}x** "
        f"(target >= {TARGET_SPEEDUP:g}x: {mark(report['speedup_target_met'])}), nDCG@10 "
        f"delta **{figures['ndcg_delta']:+.4f}** over {report['queries']} test queries whose "
        f"relevant documents are in the subset (target |delta| <= {TARGET_NDCG_DELTA}: "
        f"{mark(report['ndcg_target_met'])})",
        "- export (made now in a temporary cache unless --cache-dir held it): "
        + ", ".join(
            f"{name} {result['export_seconds']:.1f} s" for name, result in report["results"].items()
        ),
        "- embedding keys: " + ", ".join(f"`{key}`" for key in report["model_keys"].values()),
        f"- batch size {report['batch_size']} for every backend (the pipeline's default); "
        "sentence-transformers sorts each call's texts by length for every backend",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="SciFact documents to embed")
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR, help="BEIR scifact folder")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument(
        "--backend",
        action="append",
        choices=[backend for backend in BACKENDS if backend != TORCH],
        help=f"a fast backend to compare (repeatable; default {OPENVINO_INT8} and {OPENVINO}); "
        "the first gives the `embedding` keys",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="export cache (default: a temporary directory, so the export is timed too)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--round", type=int, default=ROUND, help="texts per timed round")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends: list[str] = list(dict.fromkeys(args.backend or [OPENVINO_INT8, OPENVINO]))
    fast = backends[0]
    started = time.perf_counter()
    machine = machine_info()
    doc_ids, texts, queries, qrels = load_subset(args.beir, args.docs)
    print(
        f"{len(texts)} chunks of {len(set(doc_ids))} documents, {len(queries)} judged queries",
        file=sys.stderr,
    )
    counter = load_token_counter(DEFAULT_MODEL_NAME)
    mean_tokens = sum(counter.count(text) for text in texts) / len(texts)
    export_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as scratch:
        cache_dir = args.cache_dir or Path(scratch)
        embedders = {TORCH: SentenceTransformerEmbedder(DEFAULT_MODEL_NAME, args.batch_size)}
        for backend in backends:
            began = time.perf_counter()
            exported_model_dir(DEFAULT_MODEL_NAME, backend, cache_dir)
            export_seconds[backend] = time.perf_counter() - began
            embedders[backend] = SentenceTransformerEmbedder(
                DEFAULT_MODEL_NAME, args.batch_size, backend, cache_dir
            )
        # One warm-up batch each: first calls compile kernels and allocate.
        for embedder in embedders.values():
            embedder.embed(texts[:8])
        vectors, seconds = timed_embeddings(embedders, texts, args.round)
        qids = list(queries)
        query_vectors = {
            name: embedder.embed([queries[qid] for qid in qids])
            for name, embedder in embedders.items()
        }
        precisions = {backend: inference_precision(embedders[backend]) for backend in backends}
    ndcg = {
        name: ndcg_at_10(doc_ids, vectors[name], query_vectors[name], qids, qrels)
        for name in embedders
    }
    load_at_end = load_average()
    round_sizes = [
        len(texts[start : start + args.round]) for start in range(0, len(texts), args.round)
    ]

    def median_rate(name: str) -> float:
        return statistics.median(
            size / took for size, took in zip(round_sizes, seconds[name], strict=True)
        )

    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        cosines = np.sum(vectors[TORCH] * vectors[backend], axis=1)
        results[backend] = {
            "chunks_per_s": round(median_rate(backend), 2),
            **speedups(seconds[TORCH], seconds[backend]),
            "ndcg_at_10": round(ndcg[backend], 5),
            "ndcg_delta": round(ndcg[backend] - ndcg[TORCH], 5),
            "cosine_min": round(float(cosines.min()), 7),
            "cosine_mean": round(float(cosines.mean()), 7),
            "inference_precision": precisions[backend],
            "export_seconds": round(export_seconds[backend], 2),
            "round_seconds": [round(took, 3) for took in seconds[backend]],
        }
    figures = {
        "torch_chunks_per_s": round(median_rate(TORCH), 2),
        "fast_chunks_per_s": results[fast]["chunks_per_s"],
        "speedup": results[fast]["speedup"],
        "ndcg_delta": results[fast]["ndcg_delta"],
        "cosine_min": results[fast]["cosine_min"],
        "cosine_mean": results[fast]["cosine_mean"],
    }
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fast_backend": fast,
        "backends": backends,
        "documents": len(set(doc_ids)),
        "chunks": len(texts),
        "mean_chunk_tokens": round(mean_tokens, 1),
        "queries": len(qids),
        "batch_size": args.batch_size,
        "round_size": args.round,
        "rounds": len(round_sizes),
        "figures": figures,
        "torch_chunks_per_s": figures["torch_chunks_per_s"],
        "torch_ndcg_at_10": round(ndcg[TORCH], 5),
        "torch_round_seconds": [round(took, 3) for took in seconds[TORCH]],
        "results": results,
        "speedup_target_met": figures["speedup"] >= TARGET_SPEEDUP,
        "ndcg_target_met": abs(figures["ndcg_delta"]) <= TARGET_NDCG_DELTA,
        "model_keys": {name: embedder.model_key for name, embedder in embedders.items()},
        "machine": machine,
        "load_average_at_end": load_at_end,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    bench_json = args.out / "bench.json"
    merged = json.loads(bench_json.read_text(encoding="utf-8")) if bench_json.exists() else {}
    merged["embedding"] = {**figures, "details": report}
    bench_json.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    (args.out / "bench_embedding.md").write_text(render_markdown(report), encoding="utf-8")
    print(json.dumps({"torch": figures["torch_chunks_per_s"], **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
