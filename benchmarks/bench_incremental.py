# ruff: noqa: T201
"""Incremental re-indexing benchmark: full build, no-op re-run and a 1% change, side by side.

Builds a corpus of BEIR SciFact abstracts (one `.txt` per abstract, spread over four sources),
runs the real pipeline (`rag_pipeline.runner.run_pipeline`) three times against one fresh
embedded PostgreSQL and one Dagster instance, and writes `bench.json` and `bench.md`:

    .venv/bin/python benchmarks/bench_incremental.py --docs 2000 --out reports

`--docs 200` gives a quick smoke run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rag_pipeline  # noqa: F401  (offline environment before anything else is imported)
from rag_pipeline.lib.evaluation.measurement import machine_info

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "beir" / "scifact" / "corpus.jsonl"
SOURCE_COUNT = 4
TENANT = "bench"
GROUP = "group:bench"
NOOP_RATIO_MAX = 0.05
ONE_PERCENT_RATIO_MAX = 0.10
APPENDED_SENTENCE = (
    "Editorial note for the incremental re-indexing benchmark: this abstract was revised."
)
# Per-partition assets whose counters are summed over the sources of a run.
SOURCE_ASSETS = ("source_documents", "parsed_documents", "chunks", "chunk_embeddings")


class BenchmarkError(RuntimeError):
    """The benchmark cannot run or a pipeline run failed."""


@dataclass(frozen=True)
class Abstract:
    doc_id: str
    title: str
    text: str

    @property
    def file_name(self) -> str:
        return f"{self.doc_id}.txt"

    def content(self, suffix: str = "") -> str:
        body = self.text + (f" {suffix}" if suffix else "")
        return f"{self.title}\n\n{body}\n"


@dataclass
class RunFigures:
    name: str
    wall_s: float
    succeeded: bool
    texts_embedded: int
    chunks_written: int
    documents_parsed: int
    documents_added: int
    documents_changed: int
    documents_deleted: int
    version_created: bool
    version_id: int
    index_chunks: int
    index_documents: int
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangeSet:
    modified: list[Abstract]
    deleted: Abstract
    added: Abstract


def read_abstracts(path: Path, count: int) -> list[Abstract]:
    """The first `count` lines of a BEIR corpus.jsonl, in file order."""
    if not path.is_file():
        raise BenchmarkError(f"corpus not found: {path} (pass --corpus)")
    found: list[Abstract] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if len(found) == count:
                break
            if not line.strip():
                continue
            record = json.loads(line)
            found.append(
                Abstract(
                    doc_id=str(record["_id"]),
                    title=str(record.get("title") or "").strip(),
                    text=str(record.get("text") or "").strip(),
                )
            )
    if len(found) < count:
        raise BenchmarkError(f"{path} has only {len(found)} documents, {count} requested")
    return found


def source_name(position: int) -> str:
    return f"scifact_{position % SOURCE_COUNT}"


def write_corpus(root: Path, abstracts: list[Abstract]) -> Path:
    """One folder per source with a sidecar, plus `sources.yaml`; returns the sources file."""
    lines = ["sources:"]
    for index in range(SOURCE_COUNT):
        name = source_name(index)
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "_metadata.yaml").write_text(
            f"defaults:\n  tenant: {TENANT}\n  owner: user:{TENANT}\n  acl: [{GROUP}]\n",
            encoding="utf-8",
        )
        lines += [
            f"  - name: {name}",
            "    connector: filesystem",
            f"    path: {name}",
            f"    tenants: [{TENANT}]",
            f"    description: BEIR SciFact abstracts, share {index} of {SOURCE_COUNT}",
        ]
    for position, abstract in enumerate(abstracts):
        target = root / source_name(position) / abstract.file_name
        target.write_text(abstract.content(), encoding="utf-8")
    sources_file = root / "sources.yaml"
    sources_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sources_file


def plan_changes(abstracts: list[Abstract], extra: Abstract) -> tuple[ChangeSet, list[int]]:
    """1% of the documents (at least 3): all but two modified, one deleted, one added.

    Positions are spread evenly over the corpus, so every source gets some of the changes.
    """
    total = len(abstracts)
    changes = max(3, round(total * 0.01))
    positions = [index * total // (changes - 1) for index in range(changes - 1)]
    modified = [abstracts[p] for p in positions[:-1]]
    deleted = abstracts[positions[-1]]
    return ChangeSet(modified=modified, deleted=deleted, added=extra), positions


def apply_changes(root: Path, abstracts: list[Abstract], plan: ChangeSet) -> str:
    """Edit the corpus on disk; returns the source the new document went to."""
    position_of = {abstract.doc_id: index for index, abstract in enumerate(abstracts)}
    for abstract in plan.modified:
        target = root / source_name(position_of[abstract.doc_id]) / abstract.file_name
        target.write_text(abstract.content(APPENDED_SENTENCE), encoding="utf-8")
    deleted_path = root / source_name(position_of[plan.deleted.doc_id]) / plan.deleted.file_name
    deleted_path.unlink()
    added_source = source_name(len(abstracts))
    (root / added_source / plan.added.file_name).write_text(plan.added.content(), encoding="utf-8")
    return added_source


def metadata_sum(metadata: dict[str, dict[str, object]], asset: str, key: str) -> int:
    total = 0
    for name, values in metadata.items():
        if name.startswith(f"{asset}[") and key in values:
            total += int(values[key])  # type: ignore[call-overload]
    return total


def stage_seconds(metadata: dict[str, dict[str, object]]) -> dict[str, float]:
    """Seconds each asset reported for its own body (`duration_s`), summed over partitions."""
    found: dict[str, float] = {}
    for name, values in metadata.items():
        if "duration_s" not in values:
            continue
        asset = name.split("[", 1)[0]
        found[asset] = round(found.get(asset, 0.0) + float(values["duration_s"]), 3)  # type: ignore[arg-type]
    return found


def timed_run(name: str, execute: Callable[[], Any]) -> RunFigures:
    print(f"[bench] run {name!r} ...", flush=True)
    started = time.perf_counter()
    run = execute()
    wall = time.perf_counter() - started
    if not run.succeeded:
        raise BenchmarkError(
            f"pipeline run {name!r} failed: failed sources {run.failed_sources}, "
            f"index job succeeded: {run.index_succeeded}"
        )
    metadata = run.metadata
    index = metadata.get("vector_index", {})
    figures = RunFigures(
        name=name,
        wall_s=round(wall, 3),
        succeeded=True,
        texts_embedded=metadata_sum(metadata, "chunk_embeddings", "texts_embedded"),
        chunks_written=metadata_sum(metadata, "chunks", "chunks_written"),
        documents_parsed=metadata_sum(metadata, "parsed_documents", "documents_parsed"),
        documents_added=metadata_sum(metadata, "source_documents", "documents_added"),
        documents_changed=metadata_sum(metadata, "source_documents", "documents_changed"),
        documents_deleted=metadata_sum(metadata, "source_documents", "documents_deleted"),
        version_created=bool(index.get("version_created", False)),
        version_id=int(index.get("version_id", -1)),  # type: ignore[call-overload]
        index_chunks=int(index.get("chunks", 0)),  # type: ignore[call-overload]
        index_documents=int(index.get("documents", 0)),  # type: ignore[call-overload]
        stage_seconds=stage_seconds(metadata),
    )
    print(
        f"[bench]   {name}: {figures.wall_s:.2f}s, embedded {figures.texts_embedded}, "
        f"chunks written {figures.chunks_written}, parsed {figures.documents_parsed}, "
        f"new version {figures.version_created}",
        flush=True,
    )
    return figures


def search_doc_ids(database_url: str, query: str, limit: int) -> list[tuple[str, float, int]]:
    """(doc id, score, serving version) of the top hits for `query` as the bench user."""
    from rag_pipeline.lib import database
    from rag_pipeline.lib.catalog import UserAccess
    from rag_pipeline.lib.embedding import load_embedder
    from rag_pipeline.lib.retrieval import search

    access = UserAccess(user=TENANT, tenant=TENANT, principals=(GROUP,))
    with database.connection(database_url) as conn:
        hits = search(conn, load_embedder(), query, access, limit=limit)
    return [(hit.doc_id, hit.score, hit.version_id) for hit in hits]


def check_retrieval(
    database_url: str, plan: ChangeSet, deleted_id: str, added_id: str, deleted_before: bool
) -> dict[str, Any]:
    """Search the serving index for the deleted and the added document's exact titles."""
    deleted_hits = search_doc_ids(database_url, plan.deleted.title, limit=10)
    added_hits = search_doc_ids(database_url, plan.added.title, limit=5)
    return {
        "deleted_doc_id": deleted_id,
        "deleted_doc_top_hit_before_change": deleted_before,
        "deleted_doc_absent": all(doc_id != deleted_id for doc_id, _, _ in deleted_hits),
        "added_doc_id": added_id,
        "added_doc_top_hit": bool(added_hits) and added_hits[0][0] == added_id,
        "added_doc_top_score": round(added_hits[0][1], 4) if added_hits else None,
        "serving_version_id": added_hits[0][2] if added_hits else None,
    }


def ratio(value: float, base: float) -> float:
    return round(value / base, 4) if base else float("nan")


def build_report(
    docs: int,
    corpus_path: Path,
    runs: dict[str, RunFigures],
    plan: ChangeSet,
    retrieval: dict[str, Any],
    model_load_s: float,
) -> dict[str, Any]:
    full, noop, one = runs["full"], runs["noop"], runs["one_percent"]
    noop_ratio = ratio(noop.wall_s, full.wall_s)
    one_ratio = ratio(one.wall_s, full.wall_s)
    return {
        "incremental": {
            "full_s": full.wall_s,
            "noop_s": noop.wall_s,
            "noop_ratio": noop_ratio,
            "one_percent_s": one.wall_s,
            "one_percent_ratio": one_ratio,
            "embedded_chunks_full": full.texts_embedded,
            "embedded_chunks_noop": noop.texts_embedded,
            "embedded_chunks_one_percent": one.texts_embedded,
            "chunks_written_full": full.chunks_written,
            "chunks_written_noop": noop.chunks_written,
            "chunks_written_one_percent": one.chunks_written,
            "documents_parsed_full": full.documents_parsed,
            "documents_parsed_noop": noop.documents_parsed,
            "documents_parsed_one_percent": one.documents_parsed,
            "version_created_full": full.version_created,
            "version_created_noop": noop.version_created,
            "version_created_one_percent": one.version_created,
            "targets": {
                "noop_ratio_max": NOOP_RATIO_MAX,
                "one_percent_ratio_max": ONE_PERCENT_RATIO_MAX,
                "noop_met": noop_ratio <= NOOP_RATIO_MAX,
                "one_percent_met": one_ratio <= ONE_PERCENT_RATIO_MAX,
            },
        },
        "runs": {name: asdict(figures) for name, figures in runs.items()},
        "change_set": {
            "modified": [a.doc_id for a in plan.modified],
            "deleted": plan.deleted.doc_id,
            "added": plan.added.doc_id,
            "appended_sentence": APPENDED_SENTENCE,
        },
        "correctness": retrieval,
        "corpus": {
            "source": f"BEIR SciFact corpus.jsonl (first {docs} lines)",
            "path": str(corpus_path),
            "documents": docs,
            "sources": SOURCE_COUNT,
            "chunks": full.index_chunks,
            "documents_indexed": full.index_documents,
        },
        "machine": machine_info(),
        "model_load_s": round(model_load_s, 3),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def render_markdown(report: dict[str, Any]) -> str:
    inc = report["incremental"]
    targets = inc["targets"]
    runs = report["runs"]
    corpus = report["corpus"]
    machine = report["machine"]
    check = report["correctness"]
    changes = report["change_set"]

    def mark(met: bool) -> str:
        return "met" if met else "**missed**"

    before_result = "yes" if check["deleted_doc_top_hit_before_change"] else "**no**"
    deleted_result = "does not return it" if check["deleted_doc_absent"] else "**still returns it**"
    added_result = (
        "returns it as the top hit"
        if check["added_doc_top_hit"]
        else "**does not return it first**"
    )

    rows = [
        "| run | wall (s) | vs full | texts embedded | chunks written | docs parsed "
        "| new version |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("full", "noop", "one_percent"):
        run = runs[name]
        rows.append(
            f"| {name} | {run['wall_s']:.2f} | {run['wall_s'] / inc['full_s']:.1%} "
            f"| {run['texts_embedded']} | {run['chunks_written']} | {run['documents_parsed']} "
            f"| {'yes' if run['version_created'] else 'no'} |"
        )
    stage_names = sorted({stage for run in runs.values() for stage in run["stage_seconds"]})
    stage_rows = [
        "| asset (own body, summed over partitions) | full (s) | noop (s) | one_percent (s) |",
        "|---|---:|---:|---:|",
    ]
    for stage in stage_names:
        cells = [f"{runs[n]['stage_seconds'].get(stage, 0.0):.2f}" for n in runs]
        stage_rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    outside = [f"{runs[n]['wall_s'] - sum(runs[n]['stage_seconds'].values()):.2f}" for n in runs]
    stage_rows.append("| outside asset bodies (Dagster, checks) | " + " | ".join(outside) + " |")
    modified = len(changes["modified"])
    return "\n".join(
        [
            "# Incremental re-indexing benchmark",
            "",
            f"Generated {report['generated_at']} on {machine['cpus']} CPUs, "
            f"Python {machine['python']}, torch {machine['torch']}. "
            f"Model and tokenizer load (excluded from the runs): {report['model_load_s']:.2f}s.",
            "",
            *rows,
            "",
            "| target | limit | measured | result |",
            "|---|---:|---:|---|",
            f"| no-op re-run / full | {targets['noop_ratio_max']:.0%} | {inc['noop_ratio']:.2%} "
            f"| {mark(targets['noop_met'])} |",
            f"| 1% change re-run / full | {targets['one_percent_ratio_max']:.0%} "
            f"| {inc['one_percent_ratio']:.2%} | {mark(targets['one_percent_met'])} |",
            "",
            "Correctness after the 1% run: searching the deleted document's exact title "
            f"(the top hit for it before the change: {before_result}) "
            f"{deleted_result} "
            f"(`{check['deleted_doc_id']}`); searching the added document's title "
            f"{added_result} "
            f"(`{check['added_doc_id']}`).",
            "",
            "Time each asset's body reported (`duration_s`); the rest of a run's wall time is "
            "Dagster's own per-run and per-step overhead (run storage, events, resources):",
            "",
            *stage_rows,
            "",
            "## How the data was made and what each run does",
            "",
            f"The corpus is the {corpus['source']}: each abstract becomes `<_id>.txt` holding its "
            f"title, a blank line and its text, dealt round-robin by position into "
            f"{corpus['sources']} filesystem sources (`scifact_0`..`scifact_3`) whose "
            f"`_metadata.yaml` gives tenant `{TENANT}` and ACL `[{GROUP}]`. The full build "
            f"indexed {corpus['documents_indexed']} documents as {corpus['chunks']} chunks. "
            "All runs call `rag_pipeline.runner.run_pipeline` in one process, against one fresh "
            "embedded PostgreSQL and one temporary Dagster instance (`dg.instance_for_test()`), "
            "and are timed end to end (every source partition's ingest job, then the index job "
            "with its blocking checks and promotion). The embedding model and tokenizer are "
            "loaded once before timing.",
            "",
            "- **full**: the first build on an empty database: scan, parse, chunk, embed and "
            "index every document.",
            "- **noop**: the same pipeline again with nothing changed on disk; every stage should "
            "find nothing to do and the index should resolve to the existing version.",
            f"- **one_percent**: {modified + 2} documents (1%) changed on disk before the run: "
            f"{modified} {'gets' if modified == 1 else 'get'} one sentence appended, "
            "1 is deleted, 1 new abstract (line "
            f"{corpus['documents'] + 1} of the corpus file) is added. Only those should be "
            "re-parsed, re-chunked and re-embedded, and a new index version promoted.",
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="abstracts to index (default 2000)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports", help="output folder")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the temporary corpus and database"
    )
    args = parser.parse_args(argv)
    if args.docs < 10:
        parser.error("--docs must be at least 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import dagster as dg

    from rag_pipeline.definitions import build_defs
    from rag_pipeline.defs.resources import (
        ChunkingResource,
        EmbedderResource,
        EvaluationResource,
        IndexPolicyResource,
        ParsingResource,
        PostgresResource,
        SourceCatalogResource,
    )
    from rag_pipeline.lib import database
    from rag_pipeline.lib.embedding import load_embedder, load_token_counter
    from rag_pipeline.lib.progress import progress_enabled
    from rag_pipeline.runner import pipeline_progress, run_pipeline

    rows = read_abstracts(args.corpus, args.docs + 1)
    abstracts, extra = rows[: args.docs], rows[args.docs]
    plan, positions = plan_changes(abstracts, extra)

    workdir = Path(tempfile.mkdtemp(prefix="rag_bench_"))
    corpus_root, data_dir = workdir / "corpus", workdir / "data"
    print(f"[bench] work directory {workdir}", flush=True)
    sources_file = write_corpus(corpus_root, abstracts)

    started = time.perf_counter()
    load_embedder()
    load_token_counter()
    model_load_s = time.perf_counter() - started
    print(f"[bench] model and tokenizer loaded in {model_load_s:.2f}s", flush=True)

    database_url = database.start_embedded_server(data_dir)
    try:
        defs = build_defs(
            {
                "postgres": PostgresResource(database_url=database_url),
                "catalog": SourceCatalogResource(sources_file=str(sources_file)),
                "embedder": EmbedderResource(),
                "chunking": ChunkingResource(),
                "parsing": ParsingResource(),
                "index_policy": IndexPolicyResource(),
                # No golden set for this synthetic corpus: the quality gate passes and says so.
                "evaluation": EvaluationResource(),
            }
        )
        with dg.instance_for_test() as instance:
            runs: dict[str, RunFigures] = {}

            def execute() -> Any:
                # Bars on a terminal only; polled every 2 s on its own connection, a load far
                # below the pipeline's (no bars, no polling: RAG_PROGRESS=0 or a pipe).
                with pipeline_progress(defs, progress_enabled(), interval=2.0) as observer:
                    return run_pipeline(
                        instance, defs=defs, observer=observer, trigger="bench_incremental"
                    )

            runs["full"] = timed_run("full", execute)
            runs["noop"] = timed_run("noop", execute)
            # The absence check below only means something if the title found it beforehand.
            deleted_id = f"{source_name(positions[-1])}:{plan.deleted.file_name}"
            before = search_doc_ids(database_url, plan.deleted.title, limit=1)
            deleted_before = bool(before) and before[0][0] == deleted_id
            added_source = apply_changes(corpus_root, abstracts, plan)
            runs["one_percent"] = timed_run("one_percent", execute)
            retrieval = check_retrieval(
                database_url,
                plan,
                deleted_id,
                f"{added_source}:{plan.added.file_name}",
                deleted_before,
            )
    finally:
        database.stop_embedded_server(data_dir)
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    report = build_report(args.docs, args.corpus, runs, plan, retrieval, model_load_s)
    markdown = render_markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    # Read-modify-write: keys other benchmarks add (`query`, from bench_query.py) survive.
    bench_json = args.out / "bench.json"
    merged = json.loads(bench_json.read_text(encoding="utf-8")) if bench_json.exists() else {}
    merged.update(report)
    bench_json.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    (args.out / "bench.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    problems = [
        name
        for name, ok in (
            ("deleted document still retrievable", retrieval["deleted_doc_absent"]),
            ("added document not the top hit", retrieval["added_doc_top_hit"]),
        )
        if not ok
    ]
    if problems:
        print(f"[bench] correctness problems: {', '.join(problems)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as error:
        print(f"bench_incremental: error: {error}", file=sys.stderr)
        sys.exit(1)
