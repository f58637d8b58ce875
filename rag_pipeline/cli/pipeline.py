"""Commands that build and measure: `run`, `import-beir`, `quality`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rag_pipeline.cli.common import _database_url, _embedder, _reader
from rag_pipeline.cli.search import print_hits
from rag_pipeline.lib import database
from rag_pipeline.settings import current_settings

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from rag_pipeline.runner import PipelineRun


SUMMARY_COLUMNS = [
    ("files", "source_documents", "documents_discovered"),
    ("added", "source_documents", "documents_added"),
    ("changed", "source_documents", "documents_changed"),
    ("deleted", "source_documents", "documents_deleted"),
    ("quarantined", "source_documents", "documents_quarantined"),
    ("parsed", "parsed_documents", "documents_parsed"),
    ("redacted", "redacted_documents", "documents_redacted"),
    ("chunks written", "chunks", "chunks_written"),
    ("texts embedded", "chunk_embeddings", "texts_embedded"),
]


def print_evaluation(run: PipelineRun) -> None:
    """The evaluation report's summary: the candidate's key figures and the quality gate."""
    from rag_pipeline.lib.evaluation.kpi import format_value

    report = run.metadata.get("evaluation_report")
    if report is None:
        return
    print("\nEvaluation report (rag-pipeline quality: every KPI, over versions)")
    if not report.get("golden_sets"):
        print("  no golden set configured (RAG_GOLDEN_SETS): quality not measured")
    for golden_set in report.get("golden_sets") or []:
        figures = ", ".join(
            f"{label} {format_value(metric, report[f'{golden_set}.{metric}'])}"
            for label, metric in (
                ("nDCG@10", "ndcg_at_10"),
                ("retrieval success", "retrieval_success_rate"),
                ("context recall", "context_recall"),
                ("correct refusals", "refusal_accuracy"),
                ("citation coverage", "citation_coverage"),
                ("permission incidents", "permission_incidents"),
            )
            if f"{golden_set}.{metric}" in report
        )
        print(f"  version {report['version_id']} on {golden_set}: {figures}")
    failed = any(name == "retrieval_quality_not_regressed" for name, _ in run.failed_checks)
    print(f"  retrieval_quality_not_regressed: {'FAILED' if failed else 'passed'}")


def print_summary(run: PipelineRun, serving_version: int | None) -> None:
    """The per-source table and the index line; `serving_version` is what serves after the run
    (this run's version, or the previous one when a gate kept the candidate out)."""
    width = max(len(source) for source in run.sources)
    print("\nPipeline summary")
    print("  " + "source".ljust(width) + "".join(f"  {name}" for name, _, _ in SUMMARY_COLUMNS))
    for source in run.sources:
        cells = [
            run.metadata.get(f"{asset}[{source}]", {}).get(key, "-")
            for _, asset, key in SUMMARY_COLUMNS
        ]
        print(
            "  "
            + source.ljust(width)
            + "".join(
                f"  {cell!s:>{len(name)}}"
                for (name, _, _), cell in zip(SUMMARY_COLUMNS, cells, strict=True)
            )
        )
    index = run.metadata.get("vector_index", {})
    if index:
        serving = "none yet" if serving_version is None else str(serving_version)
        print(
            f"\n  index version {index['version_id']}"
            f" ({'new' if index['version_created'] else 'unchanged'}):"
            f" {index['documents']} documents, {index['chunks']} chunks;"
            f" serving version {serving}"
        )


def show_progress(args: argparse.Namespace) -> bool:
    """Live progress on stderr: only to a terminal, and not with `--quiet` or `RAG_PROGRESS=0`."""
    from rag_pipeline.lib.progress import progress_enabled

    return progress_enabled(sys.stderr, quiet=args.quiet)


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    from rag_pipeline.definitions import build_defs
    from rag_pipeline.lib.embedding_dimension import require_configured_fit
    from rag_pipeline.lib.index_versions import active_version_id
    from rag_pipeline.lib.stores.embeddings import stored_dimension
    from rag_pipeline.lib.stores.quarantine import current_quarantine
    from rag_pipeline.runner import pipeline_progress, prepare_dagster_home, run_pipeline

    settings = current_settings()
    # A model whose vectors cannot be stored is refused before any source is parsed or chunked.
    with database.connection(_database_url(settings)) as conn:
        require_configured_fit(settings.embedding_model, stored_dimension(conn))
    prepare_dagster_home(settings.data_dir)
    instance = dg.DagsterInstance.get()
    # Built now, not at import: the settings are those of this call's environment.
    defs = build_defs()
    with pipeline_progress(defs, show_progress(args)) as observer:
        run = run_pipeline(
            instance,
            args.source or None,
            defs=defs,
            quality_override=args.allow_quality_regression,
            observer=observer,
        )
    if run.recovery is not None and run.recovery.runs_marked_failed:
        print(
            "Marked failed (their process was gone): " + ", ".join(run.recovery.runs_marked_failed),
            file=sys.stderr,
        )
    # Read back from Postgres rather than run metadata: documents refused by the parser or the
    # chunker are quarantined there too, not only those the connector refused; and a candidate
    # a gate kept out leaves the previous version serving.
    with database.connection(_database_url(settings)) as conn:
        quarantined = [
            record for source in run.sources for record in current_quarantine(conn, source)
        ]
        serving_version = active_version_id(conn)
    print_summary(run, serving_version)
    if quarantined:
        print("\nQuarantined documents")
        for record in quarantined:
            print(f"  {record.doc_id}: {record.reason_code} ({record.stage})")
    if run.failed_sources:
        print(f"\nFAILED sources: {run.failed_sources}", file=sys.stderr)
    for check_name, description in run.failed_checks:
        print(f"\nFAILED check {check_name}: {description}", file=sys.stderr)
    if not run.index_succeeded:
        print("\nFAILED: the index version was not built or not promoted", file=sys.stderr)
    if run.succeeded and args.sample_query:
        from rag_pipeline.lib.retrieval import search

        access = _reader(settings, args.sample_user)
        with database.connection(_database_url(settings)) as conn:
            hits = search(
                conn,
                _embedder(settings),
                args.sample_query,
                access,
                3,
                max_query_chars=settings.max_query_chars,
            )
        print_hits(args.sample_query, args.sample_user, hits)
        if not hits:
            print("FAILED: the sample search returned nothing", file=sys.stderr)
            return 1
    print_evaluation(run)
    return 0 if run.succeeded else 1


def beir_progress(folder: Path, enabled: bool) -> AbstractContextManager[Callable[[str], None]]:
    """A bar of the corpus read by `import_beir` (its messages above it), or its messages
    printed as they come when progress is off."""
    import contextlib

    from rag_pipeline.lib.evaluation.beir import corpus_path
    from rag_pipeline.lib.progress import ImportProgress, count_lines

    if not enabled:
        return contextlib.nullcontext(lambda message: print(message, flush=True))
    return ImportProgress(count_lines(corpus_path(folder)))


def cmd_import_beir(args: argparse.Namespace) -> int:
    from rag_pipeline.lib.evaluation.beir import default_source_name, import_beir

    folder = Path(args.folder)
    source = args.source or default_source_name(folder)
    out = Path(args.out) if args.out else current_settings().data_dir / "beir" / source
    with beir_progress(folder, show_progress(args)) as progress:
        summary = import_beir(
            folder,
            out,
            source=source,
            tenant=args.tenant,
            group=args.group,
            split=args.split,
            limit_docs=args.limit_docs,
            progress=progress,
        )
    if summary.subset:
        print(
            f"SUBSET: {summary.documents:,} of {summary.corpus_documents:,} documents "
            f"({summary.relevant_documents:,} relevant to the {summary.split} queries, "
            f"{summary.sampled_documents:,} sampled): figures on it are not comparable with "
            "published full-corpus ones"
        )
    else:
        print(f"{summary.documents:,} documents (the full corpus)")
    print(
        f"files written {summary.written:,}, unchanged {summary.unchanged:,}, "
        f"removed {summary.removed:,}"
    )
    skipped = summary.queries_without_relevant_documents
    print(
        f"golden set: {summary.queries:,} {summary.split} queries -> {summary.golden_file}"
        + (f" ({skipped} skipped: no relevant document in the corpus)" if skipped else "")
    )
    print(
        "\nBuild it with:\n"
        f"  RAG_SOURCES_FILE={summary.sources_file} "
        f"RAG_DIRECTORY_FILE={summary.directory_file} rag-pipeline run\n"
        f"and search as user {summary.user!r}."
    )
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    """The KPI table of the evaluated versions, newest last, and the index build success rate."""
    import dagster as dg

    from rag_pipeline.defs.evaluation.assets import index_build_success_rate
    from rag_pipeline.lib.evaluation import kpi
    from rag_pipeline.lib.evaluation.results_store import metric_history
    from rag_pipeline.runner import prepare_dagster_home

    settings = current_settings()
    with database.connection(_database_url(settings)) as conn:
        history = metric_history(conn, args.golden_set, args.versions)
    columns = kpi.history_columns(history, args.configuration)
    if not columns:
        print("no evaluation recorded yet: `rag-pipeline run` evaluates every candidate")
        return 0
    if args.json:
        print(json.dumps([{"column": label, **values} for label, values in columns], indent=2))
        return 0
    print("\n".join(kpi.kpi_table(columns)))
    prepare_dagster_home(settings.data_dir)
    with dg.DagsterInstance.get() as instance:
        rate, runs = index_build_success_rate(instance)
    if rate is not None:
        print(f"\nindex build success rate: {rate:.0%} of the last {runs} build_index_job runs")
    return 0
