# ruff: noqa: T201
"""Retrieval quality on a BEIR dataset through the real pipeline: `make eval`.

Imports the dataset as an ordinary filesystem source (`rag-pipeline import-beir`), builds it with
`rag_pipeline.runner.run_pipeline` into a dedicated database, asks the split's judged queries
through the project's retrieval entry point for each configuration, and scores them with
ir-measures at the document level, side by side with a BM25 and a dense reference computed in
the same run over the same documents:

    .venv/bin/python benchmarks/eval.py --beir ../shared/beir/scifact --docs 1000 --out reports

Writes `<out>/eval.json` (flat keys such as `beir.scifact.hybrid.ndcg_at_10`),
`<out>/eval_per_query.jsonl` (one line per configuration and query) and `<out>/eval.md`.

The database is the embedded server in `--data-dir` (default `.rag_data/eval`), or
`EVAL_DATABASE_URL` / `RAG_DATABASE_URL` (then Dagster's storage needs `RAG_DAGSTER_PG_URL`).
A second run over the same documents rebuilds nothing (the pipeline is incremental).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rag_pipeline  # noqa: F401  (offline environment before anything else is imported)
from rag_pipeline.lib.evaluation.measurement import machine_info

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEIR = REPO_ROOT.parent / "shared" / "beir" / "scifact"
DEFAULT_DATA_DIR = REPO_ROOT / ".rag_data" / "eval"
# Published nDCG@10 on the full SciFact test split (../shared/README.md), for context only.
PUBLISHED_SCIFACT = {
    "BM25 (Elasticsearch, BEIR paper)": 0.665,
    "BM25 + cross-encoder rerank (BEIR paper)": 0.688,
    "all-MiniLM-L6-v2 dense (MTEB)": 0.645,
}


class EvalError(RuntimeError):
    """The evaluation cannot run, or the build it depends on failed."""


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--beir",
        type=Path,
        default=Path(os.environ.get("EVAL_BEIR_DIR") or DEFAULT_BEIR),
        help="BEIR dataset folder (default: $EVAL_BEIR_DIR or ../shared/beir/scifact)",
    )
    parser.add_argument(
        "--docs",
        default=os.environ.get("EVAL_DOCS", ""),
        help="subset size: relevant documents plus a fixed sample (default: $EVAL_DOCS, "
        "else the full corpus)",
    )
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("EVAL_DATA_DIR") or DEFAULT_DATA_DIR),
        help="imported corpus, embedded database and Dagster home (default .rag_data/eval)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("EVAL_DATABASE_URL") or os.environ.get("RAG_DATABASE_URL") or "",
        help="an external database instead of the embedded one",
    )
    parser.add_argument(
        "--version", type=int, help="evaluate this index version (default: the serving one)"
    )
    parser.add_argument(
        "--no-build", action="store_true", help="evaluate what is already built; no import/run"
    )
    parser.add_argument(
        "--configs", default="", help="comma-separated subset of configurations (default all)"
    )
    parser.add_argument("--depth", type=int, default=0, help="chunks retrieved per query")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument(
        "--safety-only",
        action="store_true",
        help="only the safety detectors (benchmarks/eval_safety.py), merged into eval.json",
    )
    args = parser.parse_args(argv)
    docs = str(args.docs).strip()
    if docs:
        try:
            args.docs = int(docs)
        except ValueError:
            parser.error(f"--docs/EVAL_DOCS must be a whole number, not {docs!r}")
        if args.docs < 1:
            parser.error("--docs must be at least 1")
    else:
        args.docs = None
    return args


@dataclass
class Environment:
    database_url: str
    embedded: bool
    stop_server_at_end: bool


def configure_environment(args: argparse.Namespace, out: Path, source: str) -> Environment:
    """Point every `RAG_*` setting at the evaluation's own corpus, database and Dagster home."""
    from rag_pipeline.lib import database

    data_dir = args.data_dir.resolve()
    os.environ["RAG_DATA_DIR"] = str(data_dir)
    os.environ["RAG_SOURCES_FILE"] = str(out / "sources.yaml")
    os.environ["RAG_DIRECTORY_FILE"] = str(out / "directory.yaml")
    # The imported split is a golden set like any other: the pipeline's evaluation_report asset
    # measures each candidate on it, and its quality gate compares it with the serving version.
    os.environ["RAG_GOLDEN_SETS"] = str(out / f"golden_{args.split}.jsonl")
    # Its own Dagster home: evaluation runs never land in the instance of the user's own data.
    os.environ["DAGSTER_HOME"] = str(data_dir / "dagster")
    if args.database_url:
        os.environ["RAG_DATABASE_URL"] = args.database_url
        url = args.database_url
        refuse_shared_database(url, source)
        return Environment(url, embedded=False, stop_server_at_end=False)
    os.environ.pop("RAG_DATABASE_URL", None)
    os.environ.pop("RAG_DAGSTER_PG_URL", None)
    was_running = database.embedded_server_status(data_dir).running
    url = database.start_embedded_server(data_dir)
    return Environment(url, embedded=True, stop_server_at_end=not was_running)


def refuse_shared_database(url: str, source: str) -> None:
    """The evaluation's sources file lists one source: building it into a database that holds
    other sources would retire (tombstone) all of their documents."""
    from rag_pipeline.lib import database

    with database.connection(url) as conn:
        others = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT source FROM rag.documents"
                " WHERE deleted_at IS NULL AND source <> %s ORDER BY 1",
                (source,),
            )
        ]
    if others:
        raise EvalError(
            f"{database.redact_url(url)} holds other sources ({', '.join(others[:5])}): the "
            "evaluation would retire their documents. Use a dedicated database "
            "(EVAL_DATABASE_URL) or the embedded one (unset RAG_DATABASE_URL)."
        )


def build(summary_documents: int, source: str, env: Environment) -> tuple[dict[str, Any], float]:
    """Run the normal pipeline on the imported source; returns the index metadata and seconds."""
    import dagster as dg

    from rag_pipeline.definitions import build_defs
    from rag_pipeline.defs.resources import IndexPolicyResource, build_resources
    from rag_pipeline.lib.parsing import PARSER_KEY
    from rag_pipeline.lib.progress import BuildKeys, BuildProgress
    from rag_pipeline.runner import prepare_dagster_home, run_pipeline
    from rag_pipeline.settings import current_settings

    settings = current_settings()
    resources = build_resources(settings)
    # The evaluation database is dedicated, and a different EVAL_DOCS shrinks the corpus on
    # purpose: the mass-removal gate, there to catch a share that suddenly looks empty, would
    # otherwise keep a smaller subset from serving.
    resources["index_policy"] = IndexPolicyResource(
        max_removed_fraction=1.0, keep_versions=settings.keep_index_versions
    )
    defs = build_defs(resources)
    prepare_dagster_home(str(settings.data_dir))
    keys = BuildKeys(
        parser=PARSER_KEY,
        chunker=resources["chunking"].chunker_key(resources["embedder"]),
        model=resources["embedder"].model_key(),
    )
    log(f"[eval] building {summary_documents:,} documents through the pipeline ...")
    started = time.perf_counter()
    with (
        dg.DagsterInstance.get() as instance,
        BuildProgress(env.database_url, source, keys, summary_documents, log),
    ):
        run = run_pipeline(instance, defs=defs, trigger="make eval")
    seconds = time.perf_counter() - started
    if not run.succeeded:
        raise EvalError(
            f"the pipeline run failed (failed sources {run.failed_sources}, index built and "
            f"promoted: {run.index_succeeded}); "
            f"see the Dagster runs in {os.environ['DAGSTER_HOME']}"
        )
    index = run.metadata.get("vector_index", {})
    texts = sum(
        int(values.get("texts_embedded", 0))  # type: ignore[call-overload]
        for name, values in run.metadata.items()
        if name.startswith("chunk_embeddings[")
    )
    log(
        f"[eval] built in {seconds:.0f} s: version {index.get('version_id')} "
        f"({'new' if index.get('version_created') else 'unchanged'}), "
        f"{index.get('documents')} documents, {index.get('chunks')} chunks, {texts} texts embedded"
    )
    return {**index, "texts_embedded": texts}, seconds


def version_details(database_url: str, version_id: int | None) -> dict[str, Any]:
    from rag_pipeline.lib import database

    with database.connection(database_url) as conn:
        row = conn.execute(
            "SELECT v.version_id, v.status, v.document_count, v.chunk_count, v.model_key,"
            " v.chunker_key FROM rag.index_versions v"
            " WHERE v.version_id = coalesce(%s::bigint, (SELECT version_id FROM rag.active_index))",
            (version_id,),
        ).fetchone()
    if row is None:
        raise EvalError(
            f"index version {version_id} not found"
            if version_id is not None
            else "no index version is serving: build first (drop --no-build)"
        )
    keys = ("version_id", "status", "documents", "chunks", "model_key", "chunker_key")
    return dict(zip(keys, row, strict=True))


def merge_safety_report(out: Path) -> None:
    """The safety detectors' figures on ../shared/safety, as `safety.*` keys of eval.json and a
    section of eval.md (benchmarks/eval_safety.py); skipped with a note when the data is absent."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # imported from elsewhere than `python benchmarks/eval.py`
        sys.path.insert(0, here)
    from eval_safety import DEFAULT_DATA, write_reports

    from rag_pipeline.lib.safety.evaluation import SafetyDataError

    data = Path(os.environ.get("EVAL_SAFETY_DIR") or DEFAULT_DATA)
    try:
        write_reports(data, out, out / "eval.json")
    except SafetyDataError as error:
        log(f"safety evaluation skipped: {error}")
        return
    log(f"safety figures merged into {out / 'eval.json'} (safety.*) and {out / 'eval.md'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.safety_only:
        merge_safety_report(args.out)
        return 0
    from rag_pipeline.lib import database
    from rag_pipeline.lib.embedding import load_embedder
    from rag_pipeline.lib.evaluation import beir, harness, references
    from rag_pipeline.lib.evaluation.golden import judged_questions, read_golden_set
    from rag_pipeline.lib.evaluation.metrics import MEASURES, REQUIRED_DEPTH, evaluate
    from rag_pipeline.lib.evaluation.report import ScoredRow, flat_keys, rows_for, split_keys
    from rag_pipeline.settings import current_settings

    if not (args.beir / "corpus.jsonl").is_file():
        raise EvalError(
            f"no BEIR dataset at {args.beir} (corpus.jsonl missing): set EVAL_BEIR_DIR or --beir"
        )
    machine = machine_info()
    started_at = datetime.now(UTC)
    timings: dict[str, float] = {}
    source = beir.default_source_name(args.beir)
    dataset = args.beir.resolve().name
    prefix = f"beir.{source}"
    out = args.data_dir.resolve() / "beir" / source

    env = configure_environment(args, out, source)
    try:
        if args.no_build:
            if not (out / beir.IMPORT_MANIFEST).is_file():
                raise EvalError(f"nothing imported in {out} yet: run without --no-build first")
            manifest = json.loads((out / beir.IMPORT_MANIFEST).read_text(encoding="utf-8"))
            imported = {key: manifest[key] for key in ("documents", "corpus_documents", "subset")}
            build_meta: dict[str, Any] = {}
        else:
            started = time.perf_counter()
            log(f"[eval] importing {args.beir} -> {out}")
            summary = beir.import_beir(
                args.beir,
                out,
                source=source,
                split=args.split,
                limit_docs=args.docs,
                progress=lambda message: log(f"[eval] {message}"),
            )
            timings["import_s"] = time.perf_counter() - started
            imported = {
                "documents": summary.documents,
                "corpus_documents": summary.corpus_documents,
                "subset": summary.subset,
            }
            if summary.subset:
                log(
                    f"[eval] SUBSET: {summary.documents:,} of {summary.corpus_documents:,} "
                    f"documents ({summary.relevant_documents:,} relevant + "
                    f"{summary.sampled_documents:,} sampled)"
                )
            build_meta, timings["build_s"] = build(summary.documents, source, env)

        settings = current_settings()
        started = time.perf_counter()
        embedder = load_embedder(
            settings.embedding_model,
            settings.embedding_batch_size,
            settings.embedding_backend,
            settings.embedding_export_dir(),
        )
        if not build_meta.get("texts_embedded"):
            # Only a build that embedded nothing leaves the model to load here.
            timings["model_load_s"] = time.perf_counter() - started
        questions = judged_questions(read_golden_set(out / f"golden_{args.split}.jsonl"))
        version = version_details(env.database_url, args.version)
        log(
            f"[eval] evaluating {len(questions)} {args.split} queries on index version "
            f"{version['version_id']} ({version['status']}, {version['chunks']:,} chunks)"
        )

        wanted = [name for name in args.configs.split(",") if name]
        configurations = [c for c in harness.CONFIGURATIONS if not wanted or c.name in wanted]
        depth = args.depth or harness.DEFAULT_CHUNK_DEPTH
        # The configured defaults (reranker, fusion...) under each configuration's own options.
        base_options = settings.retrieval_options()
        access_for = harness.AccessResolver(out / "directory.yaml")
        results = []
        with database.connection(env.database_url) as conn:
            for configuration in configurations:
                result = harness.evaluate_configuration(
                    conn,
                    embedder,
                    questions,
                    access_for,
                    configuration,
                    depth=depth,
                    version_id=args.version,
                    base_options=base_options,
                    progress=lambda message: log(f"[eval] {message}"),
                )
                timings[f"{configuration.name}_s"] = result.seconds
                if result.evaluation is not None:
                    scores = ", ".join(
                        f"{m} {result.evaluation.aggregate[m]:.4f}" for m in MEASURES
                    )
                    log(f"[eval] {configuration.name}: {scores}")
                else:
                    log(f"[eval] {configuration.name}: {result.status}: {result.reason}")
                results.append(result)

        # References over exactly the documents the import wrote.
        keep = beir.imported_beir_ids(out / source)
        documents = {
            beir.pipeline_doc_id(source, doc.doc_id): references.document_text(doc.title, doc.text)
            for doc in beir.iter_corpus(beir.corpus_path(args.beir))
            if doc.doc_id in keep
        }
        queries = {question.id: question.question for question in questions}
        qrels = {question.id: question.judgments() for question in questions}
        log(f"[eval] reference BM25 over {len(documents):,} documents ...")
        bm25 = references.bm25_reference(documents, queries, REQUIRED_DEPTH)
        log(f"[eval] reference dense over {len(documents):,} documents ...")
        dense = references.dense_reference(
            documents,
            queries,
            embedder,
            REQUIRED_DEPTH,
            cache_dir=args.data_dir.resolve() / "cache",
            progress=log,
        )
        reference_rows = []
        reference_runs = {}
        for reference in (bm25, dense):
            evaluation = evaluate(qrels, reference.run)
            timings[f"{reference.name}_index_s"] = reference.index_seconds
            timings[f"{reference.name}_query_s"] = reference.query_seconds
            reference_runs[reference.name] = (evaluation, reference.run)
            reference_rows.append(
                ScoredRow(
                    reference.name, "reference", reference.description, "ok", None, evaluation, {}
                )
            )
            scores = ", ".join(f"{m} {evaluation.aggregate[m]:.4f}" for m in MEASURES)
            log(f"[eval] {reference.name}: {scores}")
    finally:
        if env.stop_server_at_end:
            database.stop_embedded_server(args.data_dir.resolve())

    finished_at = datetime.now(UTC)
    per_query = []
    for result in results:
        if result.evaluation is None:
            continue
        per_query += harness.per_query_records(
            questions,
            result.name,
            result.evaluation,
            {outcome.question_id: outcome.doc_ids for outcome in result.outcomes},
            {outcome.question_id: outcome.latency_ms for outcome in result.outcomes},
        )
    for name, (evaluation, run) in reference_runs.items():
        rankings = {qid: [doc_id for doc_id, _ in scored] for qid, scored in run.items()}
        per_query += harness.per_query_records(questions, name, evaluation, rankings)

    report: dict[str, Any] = flat_keys(prefix, results, reference_rows)
    report.update(split_keys(prefix, [*rows_for(results), *reference_rows]))
    report.update(
        {
            f"{prefix}.documents": imported["documents"],
            f"{prefix}.corpus_documents": imported["corpus_documents"],
            f"{prefix}.subset": imported["subset"],
            f"{prefix}.queries": len(questions),
            f"{prefix}.split": args.split,
            f"{prefix}.index_version": version["version_id"],
            f"{prefix}.index_version_status": version["status"],
            f"{prefix}.chunks": version["chunks"],
            f"{prefix}.chunk_depth": depth,
            **{f"{prefix}.timing.{key}": round(value, 2) for key, value in timings.items()},
            "per_query_file": "eval_per_query.jsonl",
            "generated_at": finished_at.isoformat(timespec="seconds"),
            "machine": machine,
            "versions": library_versions(),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with (args.out / "eval_per_query.jsonl").open("w", encoding="utf-8") as handle:
        for record in per_query:
            handle.write(json.dumps({"dataset": prefix, **record}) + "\n")
    markdown = render_markdown(
        dataset=dataset,
        prefix=prefix,
        imported=imported,
        questions=len(questions),
        split=args.split,
        version=version,
        build_meta=build_meta,
        rows=[*rows_for(results), *reference_rows],
        best=report.get(f"{prefix}.best.configuration"),
        timings=timings,
        machine=machine,
        started_at=started_at,
        finished_at=finished_at,
        depth=depth,
    )
    (args.out / "eval.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    merge_safety_report(args.out)
    return 0


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("ir-measures", "pytrec-eval-terrier", "bm25s")}


def render_markdown(**values: Any) -> str:
    from rag_pipeline.lib.evaluation.report import markdown_table, split_table

    imported = values["imported"]
    version = values["version"]
    timings = values["timings"]
    machine = values["machine"]
    if imported["subset"]:
        data = (
            f"a **subset** of {imported['documents']:,} of the {imported['corpus_documents']:,} "
            f"documents: every document relevant to a {values['split']} query plus a fixed "
            "sample of the others (`--limit-docs`). Fewer distractors make every figure higher "
            "than on the full corpus: compare rows with each other, not with published figures"
        )
    else:
        data = f"the full corpus of {imported['documents']:,} documents"
    published: list[str] = []
    if values["dataset"] == "scifact" and not imported["subset"]:
        published = [
            "",
            "Published nDCG@10 on the same split, for context: "
            + "; ".join(f"{name} {score:.3f}" for name, score in PUBLISHED_SCIFACT.items())
            + ".",
        ]
    timing_rows = ["| step | seconds |", "|---|---:|"] + [
        f"| {name.removesuffix('_s')} | {seconds:.1f} |" for name, seconds in timings.items()
    ]
    best = values["best"]
    build_meta = values["build_meta"]
    built = (
        f" This run embedded {build_meta.get('texts_embedded', 0):,} texts"
        f" ({'new version' if build_meta.get('version_created') else 'existing version reused'})."
        if build_meta
        else " Nothing was built in this run (`--no-build`)."
    )
    return "\n".join(
        [
            f"# Retrieval evaluation: BEIR {values['dataset']} ({values['split']} split)",
            "",
            f"Generated {values['finished_at']:%Y-%m-%d %H:%M} UTC (started "
            f"{values['started_at']:%H:%M}) on {machine['cpus']} CPUs "
            f"(load average at start {machine['load_average_1_5_15']}), Python "
            f"{machine['python']}, torch {machine['torch']}.",
            "",
            f"Index version {version['version_id']} ({version['status']}): "
            f"{version['documents']:,} documents, {version['chunks']:,} chunks, "
            f"model `{version['model_key']}`. {values['questions']} judged queries. "
            f"Retrieval through `retrieve`, {values['depth']} chunks per query."
            + (f" Best pipeline configuration: **{best}**." if best else ""),
            "",
            *markdown_table(values["rows"]),
            *published,
            "",
            "## Dev and held-out halves (nDCG@10)",
            "",
            "Only test judgments exist for this dataset, so the judged queries are split in two "
            "fixed halves by a hash of their id (`rag_pipeline.lib.evaluation.splits`). The "
            "retrieval defaults (fusion method and weights, the feedback setting) were chosen "
            "on the dev half only; the held-out half measures them on queries that took no part "
            "in the choice. `all` includes the dev half, so it is optimistic for tuned settings.",
            "",
            *split_table(values["rows"]),
            "",
            "## How the figures were made",
            "",
            f"- **Data**: {data}. `rag-pipeline import-beir` wrote each document as a Markdown "
            "file (`# title`, then the text) in one filesystem source with tenant `beir` and "
            "ACL `[group:beir]`, and the judged queries as a golden set asked as user "
            "`evaluator`.",
            f"- **Build**: the normal pipeline (`rag_pipeline.runner.run_pipeline`: every asset, "
            f"blocking gates, promotion) into a dedicated database.{built}",
            "- **Pipeline runs**: each configuration asks every query through the retrieval "
            "entry point as the evaluation user (permissions applied in SQL as for anyone). "
            "Metrics are per document: a document ranks where its best chunk ranks. Latency is "
            "per query, wall clock, including embedding the query.",
            "- **References**, same documents and queries, same run: "
            + "; ".join(
                f"`{row.name}`: {row.description}"
                for row in values["rows"]
                if row.kind == "reference"
            )
            + ".",
            "- **Metrics**: ir-measures (pytrec_eval, as BEIR uses): nDCG@10 (trec_eval "
            "`ndcg_cut`), recall@100, MRR@10 (reciprocal rank cut at 10); the mean over every "
            "judged query, a query without results counting 0.",
            "",
            "## Timings",
            "",
            *timing_rows,
            "",
            "Per-query results (scores, first relevant rank, top 10 per run) are in "
            "`eval_per_query.jsonl`.",
            "",
        ]
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EvalError as error:
        print(f"eval: error: {error}", file=sys.stderr)
        sys.exit(1)
