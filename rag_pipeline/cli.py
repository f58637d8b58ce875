"""`rag-pipeline`: run the pipeline, search, manage the embedded database and index versions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import rag_pipeline  # noqa: F401  (applies the offline environment first)
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import ConfigurationError, UserAccess, load_user_access
from rag_pipeline.settings import Settings, current_settings

if TYPE_CHECKING:
    from rag_pipeline.lib.embedding import Embedder, SentenceTransformerEmbedder
    from rag_pipeline.lib.erasure import ConnectionFactory
    from rag_pipeline.lib.retrieval import RetrievalOptions
    from rag_pipeline.runner import PipelineRun


def _database_url(settings: Settings) -> str:
    return database.resolve_database_url(settings.database_url or None, settings.data_dir)


def _embedder(settings: Settings) -> SentenceTransformerEmbedder:
    from rag_pipeline.lib.embedding import load_embedder

    return load_embedder(settings.embedding_model, settings.embedding_batch_size)


def _reader(settings: Settings, user: str, directory: str | None = None) -> UserAccess:
    return load_user_access(directory or settings.directory_file, user)


def _retrieval_options(settings: Settings, args: argparse.Namespace) -> RetrievalOptions:
    """The configured retrieval options with this command's switches applied."""
    return replace(
        settings.retrieval_options(),
        limit=args.limit,
        **({"mode": args.mode} if args.mode else {}),
        **({"rerank": False} if args.no_rerank else {}),
    )


def _embedder_for(settings: Settings, options: RetrievalOptions) -> Embedder | None:
    """The query embedder, or None when the mode needs none or the model cannot load.

    Lexical search needs no model: none is loaded (seconds) for nothing. A model that fails to
    load is an outage of the vector leg, not of search: retrieval falls back to lexical.
    """
    from rag_pipeline.lib.retrieval import LEXICAL

    if options.mode == LEXICAL:
        return None
    try:
        return _embedder(settings)
    except Exception as error:
        print(f"warning: the embedding model failed to load: {error}", file=sys.stderr)
        return None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def cmd_db(args: argparse.Namespace) -> int:
    if args.action == "start":
        url = database.start_embedded_server(args.data_dir)
        with database.connection(url):
            pass
        print(f"embedded PostgreSQL running: {url}")
    elif args.action == "stop":
        stopped = database.stop_embedded_server(args.data_dir)
        print("stopped" if stopped else "not running")
    elif args.action == "status":
        status = database.embedded_server_status(args.data_dir)
        print(json.dumps({k: str(v) for k, v in asdict(status).items()}, indent=2))
    elif args.action == "url":
        if args.dagster:
            print(database.embedded_dagster_storage_url(args.data_dir))
        else:
            print(database.start_embedded_server(args.data_dir))
    return 0


def print_hits(query: str, user: str, hits: Sequence[object]) -> None:
    print(f'\nTop {len(hits)} results for "{query}" as {user}:')
    for rank, hit in enumerate(hits, 1):
        heading = " > ".join(hit.heading_path) or "(no heading)"
        pages = f" p.{','.join(map(str, hit.page_numbers))}" if hit.page_numbers else ""
        print(f"{rank}. [{hit.score:.3f}] {hit.title}  ({hit.doc_id}{pages})")
        print(f"   {heading}")
        print(f"   {hit.uri}#chars={hit.char_start}-{hit.char_end}  chunk {hit.chunk_id}")
        snippet = " ".join(hit.text.split())
        print(f"   {snippet[:220]}{'…' if len(snippet) > 220 else ''}")


def _query_setup(
    args: argparse.Namespace, query: str
) -> tuple[Settings, UserAccess, RetrievalOptions, Embedder | None]:
    """Settings, reader, options and embedder of `search` and `answer`, in that order."""
    from rag_pipeline.lib.retrieval.pipeline import check_query

    settings = current_settings()
    access = _reader(settings, args.user, args.directory)
    options = _retrieval_options(settings, args)
    # Before the model loads (seconds): an over-long or empty query is refused at once.
    check_query(query, options.max_query_chars)
    return settings, access, options, _embedder_for(settings, options)


def cmd_search(args: argparse.Namespace) -> int:
    from rag_pipeline.lib.retrieval import retrieve
    from rag_pipeline.lib.retrieval.query_log import log_query

    settings, access, options, embedder = _query_setup(args, args.query)
    with database.connection(_database_url(settings)) as conn:
        result = retrieve(conn, access, args.query, options, embedder, args.index_version)
        log_query(conn, access, args.query, result, kind="search", channel="cli")
    if result.fallback_reason:
        print(
            f"warning: {result.mode_requested} search fell back to {result.mode_used}: "
            f"{result.fallback_reason}",
            file=sys.stderr,
        )
    reranked = f", reranked by {result.reranker}" if result.reranker != "none" else ""
    candidates = " ".join(f"{leg}={count}" for leg, count in result.candidates.items())
    summary = (
        f"(index version {result.version_id}, {result.mode_used}{reranked},"
        f" candidates {candidates}, {result.timings_ms['total']:.0f} ms)"
    )
    if args.json:
        # A list of hits, as before; each hit carries its version and every stage's score.
        print(json.dumps([asdict(hit) for hit in result.hits], indent=2, default=str))
        print(summary, file=sys.stderr)
    else:
        print_hits(args.query, args.user, result.hits)
        print(f"\n{summary}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    """A cited answer, or the refusal; exit 0 either way (a refusal is an answer)."""
    from rag_pipeline.lib.retrieval.answer import answer, generator_from_settings

    settings, access, options, embedder = _query_setup(args, args.question)
    with database.connection(_database_url(settings)) as conn:
        result = answer(
            conn,
            access,
            args.question,
            options,
            embedder,
            generator_from_settings(settings),
            args.index_version,
            channel="cli",
            include_flagged=args.include_flagged,
        )
    if result.retrieval.fallback_reason:
        print(
            f"warning: {result.retrieval.mode_requested} retrieval fell back to "
            f"{result.retrieval.mode_used}: {result.retrieval.fallback_reason}",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(result.text)
    for number, citation in enumerate(result.citations, 1):
        heading = " > ".join(citation.heading_path)
        pages = f" p.{','.join(map(str, citation.page_numbers))}" if citation.page_numbers else ""
        print(f"[{number}] {citation.title}{pages}" + (f" > {heading}" if heading else ""))
        print(f"    {citation.uri}#chars={citation.char_start}-{citation.char_end}")
        print(f"    chunk {citation.chunk_id}")
    status = f"refused: {result.refusal_reason}" if result.refused else "answered"
    print(
        f"\n({status}; {result.generator}; index version {result.retrieval.version_id}, "
        f"{result.retrieval.mode_used}, {result.retrieval.timings_ms['total']:.0f} ms retrieval)"
    )
    return 0


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


def print_summary(run: PipelineRun) -> None:
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
    serving = run.metadata.get("active_index", {})
    if index:
        print(
            f"\n  index version {index['version_id']}"
            f" ({'new' if index['version_created'] else 'unchanged'}):"
            f" {index['documents']} documents, {index['chunks']} chunks;"
            f" serving version {serving.get('serving_version_id', '-')}"
        )


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    from rag_pipeline.lib.pipeline_store import current_quarantine
    from rag_pipeline.runner import prepare_dagster_home, run_pipeline

    settings = current_settings()
    prepare_dagster_home(settings.data_dir)
    instance = dg.DagsterInstance.get()
    run = run_pipeline(
        instance, args.source or None, quality_override=args.allow_quality_regression
    )
    if run.recovery is not None and run.recovery.runs_marked_failed:
        print(
            "Marked failed (their process was gone): " + ", ".join(run.recovery.runs_marked_failed),
            file=sys.stderr,
        )
    print_summary(run)
    # Read back from Postgres rather than run metadata: documents refused by the parser or the
    # chunker are quarantined there too, not only those the connector refused.
    with database.connection(_database_url(settings)) as conn:
        quarantined = [
            record for source in run.sources for record in current_quarantine(conn, source)
        ]
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


def cmd_lineage(args: argparse.Namespace) -> int:
    from rag_pipeline.lib.lineage import trace_chunk

    settings = current_settings()
    access = _reader(settings, args.user, args.directory)
    with database.connection(_database_url(settings)) as conn:
        trace = trace_chunk(conn, args.chunk_id, access)
    print(json.dumps(trace, indent=2, ensure_ascii=False))
    return 0 if trace["source_bytes"]["sha256_verified"] else 1


def cmd_ui(args: argparse.Namespace) -> int:
    from rag_pipeline.runner import REPO_ROOT, prepare_dagster_home

    home = prepare_dagster_home(current_settings().data_dir)
    print(
        f"DAGSTER_HOME={home}; storage on {database.redact_url(os.environ['RAG_DAGSTER_PG_URL'])}"
    )
    workspace = str(REPO_ROOT / "workspace.yaml")
    # The `dagster` next to this interpreter: the venv need not be activated.
    dagster = str(Path(sys.executable).with_name("dagster"))
    extra = [arg for arg in args.dagster_args if arg != "--"]
    os.execv(dagster, [dagster, "dev", "-w", workspace, *extra])
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from rag_pipeline.lib import index_versions
    from rag_pipeline.lib.quality_gates import PROMOTION_CHECKS

    settings = current_settings()
    with database.connection(_database_url(settings)) as conn:
        if args.action == "status":
            active = index_versions.active_version_id(conn)
            print(f"serving version: {active}")
            for version in index_versions.list_versions(conn):
                failed = f" failed={version.failed_checks}" if version.failed_checks else ""
                print(
                    f"  v{version.version_id:<4} {version.status:<9}"
                    f" docs={version.document_count:<6} chunks={version.chunk_count:<7}"
                    f" created={version.created_at:%Y-%m-%d %H:%M:%S}"
                    f" model={version.model_key}{failed}"
                )
        elif args.action == "diff":
            version = args.version or index_versions.active_version_id(conn)
            if version is None:
                print("no index version yet", file=sys.stderr)
                return 1
            print(json.dumps(index_versions.version_diff(conn, version), indent=2))
        elif args.action == "promote":
            switched = index_versions.promote(
                conn,
                args.version,
                actor=cli_actor(),
                required_checks=PROMOTION_CHECKS,
                reason=args.reason,
            )
            print(f"version {args.version} is serving" + ("" if switched else " (already was)"))
        elif args.action == "gc":
            keep = args.keep if args.keep is not None else settings.keep_index_versions
            report = index_versions.garbage_collect(conn, keep)
            print(json.dumps(asdict(report), indent=2))
        elif args.action == "rollback":
            previous = index_versions.rollback(conn, actor=cli_actor(), reason=args.reason)
            print(f"rolled back: version {previous} is serving")
    return 0


def cmd_import_beir(args: argparse.Namespace) -> int:
    from rag_pipeline.lib.evaluation.beir import default_source_name, import_beir

    folder = Path(args.folder)
    source = args.source or default_source_name(folder)
    out = Path(args.out) if args.out else current_settings().data_dir / "beir" / source
    summary = import_beir(
        folder,
        out,
        source=source,
        tenant=args.tenant,
        group=args.group,
        split=args.split,
        limit_docs=args.limit_docs,
        progress=lambda message: print(message, flush=True),
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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rag_pipeline.api import create_app

    settings = current_settings()
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    # One process: the model and the connection pool are loaded once, and the per-key rate
    # limit is counted in this process's memory.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
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


def cmd_api_key(args: argparse.Namespace) -> int:
    from rag_pipeline.lib import api_keys

    settings = current_settings()
    with database.connection(_database_url(settings)) as conn:
        if args.action == "create":
            access = _reader(settings, args.user, args.directory)
            created = api_keys.create_key(conn, access, args.label)
            key = created.key
            print(
                f"API key {key.key_id} for {key.user} (tenant {key.tenant}, "
                f"{', '.join(key.principals)}). Shown once, stored only hashed:",
                file=sys.stderr,
            )
            print(created.secret)
        elif args.action == "list":
            for key in api_keys.list_keys(conn, include_revoked=args.all):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "live"
                label = f" label={key.label!r}" if key.label else ""
                print(
                    f"  {key.key_id:<5} {key.key_prefix}…  {key.user:<12} tenant={key.tenant}"
                    f" created={key.created_at:%Y-%m-%d %H:%M:%S} {state}{label}"
                )
        elif args.action == "revoke":
            revoked = api_keys.revoke_key(conn, args.key_id)
            print(f"API key {args.key_id} " + ("revoked" if revoked else "was already revoked"))
    return 0


def cli_actor() -> str:
    """Who switched the index from a shell, for the audit trail: `cli:<OS user>`."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown-os-user"


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in (headers, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def cmd_status(args: argparse.Namespace) -> int:
    """Per source: the freshness target, measured lag, pending changes, last scan, breaches."""
    import dagster as dg

    from rag_pipeline.defs.freshness.sensors import (
        FRESHNESS_HEADERS,
        freshness_rows,
        last_successful_scans,
    )
    from rag_pipeline.lib.catalog import load_sources
    from rag_pipeline.lib.freshness import parse_duration
    from rag_pipeline.lib.freshness_store import database_now, list_breaches, measure
    from rag_pipeline.runner import prepare_dagster_home

    settings = current_settings()
    window = parse_duration(args.window, "--window")
    targets = {source.name: source.freshness for source in load_sources(settings.sources_file)}
    prepare_dagster_home(settings.data_dir)
    try:
        with dg.DagsterInstance.get() as instance:
            scans = last_successful_scans(instance, sorted(targets))
    except Exception as error:
        # The scan times live in Dagster's storage; the lag does not need them.
        print(f"warning: last scan times unknown (Dagster storage: {error})", file=sys.stderr)
        scans = {}
    with database.connection(_database_url(settings)) as conn:
        states = measure(conn, targets, now=database_now(conn), window=window, last_scans=scans)
        open_breaches = {b.source: b for b in list_breaches(conn, open_only=True)}
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **state.as_dict(),
                        "pending_doc_ids": state.pending_doc_ids,
                        **(
                            {"open_breach": open_breaches[state.source].as_dict()}
                            if state.source in open_breaches
                            else {}
                        ),
                    }
                    for state in states
                ],
                indent=2,
            )
        )
        return 0
    _print_table(
        (*FRESHNESS_HEADERS, "breach recorded"),
        [
            (
                *row,
                f"since {open_breaches[state.source].detected_at:%Y-%m-%d %H:%M:%S}"
                if state.source in open_breaches
                else "-",
            )
            for row, state in zip(freshness_rows(states), states, strict=True)
        ],
    )
    print(
        "\nlag: from the scan that detected a change to the first serving version holding it; "
        f"max lag over the last {args.window}. Breaches are recorded by freshness_sla_sensor "
        "(the Dagster daemon runs it)."
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Promotions and rollbacks (who, why, versions, gates), overrides and erasures."""
    from rag_pipeline.lib.audit import KINDS, audit_trail

    settings = current_settings()
    kinds = args.kind or list(KINDS)
    with database.connection(_database_url(settings)) as conn:
        entries = audit_trail(conn, limit=args.limit, kinds=kinds)
    if args.json:
        print(json.dumps([entry.as_dict() for entry in entries], indent=2))
        return 0
    if not entries:
        print("no promotion, rollback, override or erasure recorded yet")
        return 0
    for entry in entries:
        if entry.kind in ("promotion", "rollback"):
            before = f"v{entry.from_version}" if entry.from_version is not None else "(none)"
            what = f"{entry.kind} {before} -> v{entry.to_version}"
            extra = f"gates: {entry.gates_summary}"
        elif entry.kind == "override":
            what = f"override of {entry.detail.get('check_name')} on v{entry.to_version}"
            extra = ", ".join(entry.detail.get("failures_overridden") or [])
        else:
            what = f"erasure of {entry.detail.get('doc_id')}"
            extra = json.dumps(entry.detail.get("rows_removed", {}), sort_keys=True)
        print(f"{entry.at:%Y-%m-%d %H:%M:%S}  {what}  by {entry.actor}")
        print(f"    why: {entry.reason or '(no reason given)'}")
        if extra:
            print(f"    {extra}")
    return 0


def _dagster_connection_factory(settings: Settings) -> tuple[ConnectionFactory | None, str]:
    """A factory of connections to Dagster's storage database, or None and why not."""
    import contextlib
    from collections.abc import Iterator

    import psycopg

    url = settings.dagster_pg_url
    if not url and not settings.database_url:
        url = database.embedded_dagster_storage_url(settings.data_dir)
    if not url:
        return None, "RAG_DAGSTER_PG_URL is not set: Dagster's event log was not scrubbed"
    plain = url.replace("postgresql+psycopg2://", "postgresql://", 1)

    @contextlib.contextmanager
    def factory() -> Iterator[psycopg.Connection]:
        with psycopg.connect(plain, autocommit=True) as conn:
            yield conn

    return factory, ""


def cmd_erase(args: argparse.Namespace) -> int:
    """Right to erasure: erase, verify again, or lift (rag_pipeline/lib/erasure.py)."""
    from rag_pipeline.lib import erasure

    settings = current_settings()
    requested_by = args.requested_by or os.environ.get("USER") or "cli"
    with database.connection(_database_url(settings)) as conn:
        if args.lift:
            erasure.lift_erasure(conn, args.lift, requested_by, args.reason or "")
            print(f"erasure of {args.lift} lifted: the next scan of its source ingests it again")
            return 0
        dagster, note = _dagster_connection_factory(settings)
        if args.verify:
            if not args.text_file:
                raise erasure.ErasureError("--verify needs --text-file (the erased text)")
            text = Path(args.text_file).read_text(encoding="utf-8", errors="replace")
            report = erasure.reverify(conn, args.verify, text, dagster, note)
        else:
            targets = erasure.resolve_targets(conn, args.doc or (), args.owner)
            report = erasure.erase_documents(
                conn,
                targets,
                args.reason or "",
                requested_by,
                dry_run=args.dry_run,
                dagster=dagster,
                dagster_note=note,
            )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        verb = "would erase" if report.dry_run else "erased"
        for document in report.documents:
            removed = sum(document.rows_removed.values())
            print(f"{verb} {document.doc_id}: {removed} rows ({document.fragments} fragments)")
            for table, rows in document.rows_removed.items():
                print(f"    {table}: {rows}")
        if report.versions_updated:
            versions = ", ".join(map(str, report.versions_updated))
            print(f"index versions rewritten (memberships, counts, BM25 statistics): {versions}")
        if report.dagster is not None:
            rewritten = sum(report.dagster.values())
            print(
                f"Dagster event log: {rewritten} values rewritten (a separate, idempotent step; "
                "re-run it with `rag-pipeline erase --verify DOC --text-file FILE`)"
            )
    if report.dagster_note:
        print(f"warning: {report.dagster_note}", file=sys.stderr)
    if report.dry_run:
        return 0
    if report.hits:
        for hit in report.hits:
            print(
                f"error: text of the erased document still found in {hit.database}: "
                f"{hit.table}.{hit.column} ({hit.rows} rows)",
                file=sys.stderr,
            )
        return 1
    if not report.clean:
        return 1
    if not args.json:
        print(f"verified: no trace in any table of either database ({report.fragments} fragments)")
    return 0


def cmd_safety(args: argparse.Namespace) -> int:
    """`safety scan`: PII/secret spans and the injection verdict per JSON line; exit 2 on a
    malformed line (named), before any output is written."""
    from rag_pipeline.lib.safety.scan import ScanInputError, run_scan

    try:
        run_scan(Path(args.file), Path(args.output) if args.output else None, sys.stdout)
    except ScanInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-pipeline", description=__doc__)
    parser.add_argument(
        "--data-dir", help="local data directory (default: $RAG_DATA_DIR or ./.rag_data)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize every asset (all sources, then the index)")
    run.add_argument("--source", action="append", help="only this source (repeatable)")
    run.add_argument("--sample-query", default="", help="search this after the run")
    run.add_argument("--sample-user", default="alice")
    run.add_argument(
        "--allow-quality-regression",
        metavar="REASON",
        help="promote even if retrieval_quality_not_regressed fails; the reason is recorded "
        "with the run and the check",
    )
    run.set_defaults(handler=cmd_run)

    search = commands.add_parser("search", help="search the serving index as a user")
    search.add_argument("query")
    search.add_argument("--user", required=True)
    search.add_argument("--limit", type=positive_int, default=5)
    search.add_argument("--directory", help="users file (default: $RAG_DIRECTORY_FILE or sample)")
    search.add_argument("--json", action="store_true")
    search.add_argument(
        "--mode",
        choices=["hybrid", "vector", "lexical"],
        help="retrieval mode (default: $RAG_RETRIEVAL_MODE or hybrid)",
    )
    search.add_argument(
        "--index-version",
        type=positive_int,
        help="search this index version (any existing one, e.g. a candidate) instead of serving",
    )
    search.add_argument(
        "--no-rerank", action="store_true", help="skip the reranker configured in $RAG_RERANKER"
    )
    search.set_defaults(handler=cmd_search)

    answer = commands.add_parser(
        "answer", help="answer a question as a user, citing the chunks it comes from"
    )
    answer.add_argument("question")
    answer.add_argument("--user", required=True)
    answer.add_argument("--limit", type=positive_int, default=5, help="chunks to answer from")
    answer.add_argument("--directory", help="users file (default: $RAG_DIRECTORY_FILE or sample)")
    answer.add_argument("--json", action="store_true")
    answer.add_argument(
        "--mode",
        choices=["hybrid", "vector", "lexical"],
        help="retrieval mode (default: $RAG_RETRIEVAL_MODE or hybrid)",
    )
    answer.add_argument("--index-version", type=positive_int, help="answer from this index version")
    answer.add_argument(
        "--no-rerank", action="store_true", help="skip the reranker configured in $RAG_RERANKER"
    )
    answer.add_argument(
        "--include-flagged",
        action="store_true",
        help="also answer from chunks flagged as prompt injections at ingest (off by default)",
    )
    answer.set_defaults(handler=cmd_answer)

    lineage = commands.add_parser(
        "lineage", help="trace a chunk (from search results) back to its source bytes"
    )
    lineage.add_argument("chunk_id")
    lineage.add_argument("--user", required=True, help="who asks: only what they may read")
    lineage.add_argument("--directory", help="users file (default: $RAG_DIRECTORY_FILE or sample)")
    lineage.set_defaults(handler=cmd_lineage)

    db = commands.add_parser("db", help="the embedded PostgreSQL server")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.add_argument("--dagster", action="store_true", help="with url: Dagster's storage URL")
    db.set_defaults(handler=cmd_db)

    ui = commands.add_parser("ui", help="open the Dagster UI (dagster dev) on this project")
    ui.add_argument("dagster_args", nargs=argparse.REMAINDER, help="passed to dagster dev")
    ui.set_defaults(handler=cmd_ui)

    index = commands.add_parser("index", help="index versions: status, diff, promote, rollback, gc")
    index.add_argument("action", choices=["status", "diff", "promote", "rollback", "gc"])
    index.add_argument("version", nargs="?", type=int)
    index.add_argument(
        "--keep",
        type=positive_int,
        help="with gc: versions to keep (default: $RAG_KEEP_INDEX_VERSIONS or 5)",
    )
    index.add_argument("--reason")
    index.set_defaults(handler=cmd_index)

    quality = commands.add_parser(
        "quality", help="KPI table of the evaluated index versions (evaluation reports)"
    )
    quality.add_argument("--golden-set", help="only this golden set (its file name stem)")
    quality.add_argument(
        "--configuration",
        default="default",
        choices=["default", "vector", "lexical"],
        help="retrieval configuration (default: the configured one)",
    )
    quality.add_argument("--versions", type=positive_int, default=10, help="newest N versions")
    quality.add_argument("--json", action="store_true")
    quality.set_defaults(handler=cmd_quality)

    status = commands.add_parser(
        "status", help="freshness per source: target, measured lag, pending changes, breaches"
    )
    status.add_argument(
        "--window", default="7d", help="window of the max lag (default 7d; e.g. 24h, 90m)"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    audit = commands.add_parser(
        "audit", help="audit trail: promotions, rollbacks, quality-gate overrides, erasures"
    )
    audit.add_argument("--limit", type=positive_int, default=20, help="newest N entries (20)")
    audit.add_argument(
        "--kind",
        action="append",
        choices=["promotion", "rollback", "override", "erasure"],
        help="only this kind (repeatable)",
    )
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_audit)

    beir = commands.add_parser(
        "import-beir",
        help="write a BEIR dataset as a filesystem source plus a golden set (for evaluation)",
    )
    beir.add_argument("folder", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    beir.add_argument("--out", help="output folder (default: <data dir>/beir/<source>)")
    beir.add_argument("--source", help="source name (default: the folder's name, e.g. scifact)")
    beir.add_argument("--tenant", default="beir", help="tenant of every document (default beir)")
    beir.add_argument(
        "--group", default="beir", help="ACL group of every document and of the user (beir)"
    )
    beir.add_argument("--split", default="test", help="qrels split for the golden set (test)")
    beir.add_argument(
        "--limit-docs",
        type=positive_int,
        help="a subset: every document relevant to the split's queries plus a fixed sample",
    )
    beir.set_defaults(handler=cmd_import_beir)

    serve = commands.add_parser("serve", help="serve the HTTP API (FastAPI + uvicorn)")
    serve.add_argument("--host", help="address to bind (default: $RAG_API_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=positive_int, help="port (default: $RAG_API_PORT or 8000)")
    serve.set_defaults(handler=cmd_serve)

    api_key = commands.add_parser("api-key", help="API keys of the HTTP API: create, list, revoke")
    api_key_actions = api_key.add_subparsers(dest="action", required=True)
    api_key_create = api_key_actions.add_parser(
        "create", help="a new key for a user of the directory; printed once"
    )
    api_key_create.add_argument("--user", required=True)
    api_key_create.add_argument(
        "--directory", help="users file (default: $RAG_DIRECTORY_FILE or sample)"
    )
    api_key_create.add_argument("--label", help="a note shown by `api-key list`")
    api_key_list = api_key_actions.add_parser("list", help="keys, never the keys themselves")
    api_key_list.add_argument("--all", action="store_true", help="include revoked keys")
    api_key_revoke = api_key_actions.add_parser("revoke", help="revoke a key at once")
    api_key_revoke.add_argument("key_id", type=positive_int)
    api_key.set_defaults(handler=cmd_api_key)

    safety = commands.add_parser("safety", help="offline PII/secret and prompt-injection detectors")
    safety_actions = safety.add_subparsers(dest="action", required=True)
    safety_scan = safety_actions.add_parser(
        "scan", help="scan a JSON Lines file (field `text`): one result line per input line"
    )
    safety_scan.add_argument("file", help="JSON Lines input, one object with a `text` per line")
    safety_scan.add_argument("--output", help="write here instead of stdout")
    safety.set_defaults(handler=cmd_safety)

    erase = commands.add_parser(
        "erase", help="right to erasure: remove a document's text everywhere, keep a tombstone"
    )
    target = erase.add_mutually_exclusive_group(required=True)
    target.add_argument("--doc", action="append", help="document id to erase (repeatable)")
    target.add_argument("--owner", help="erase every document of this owner (e.g. user:alice)")
    target.add_argument("--verify", metavar="DOC", help="scrub Dagster and scan again")
    target.add_argument("--lift", metavar="DOC", help="let the source scan ingest DOC again")
    erase.add_argument("--reason", help="why (kept in the tombstone); required")
    erase.add_argument("--requested-by", help="who asked (default: $USER)")
    erase.add_argument("--text-file", help="with --verify: the erased text to look for")
    erase.add_argument("--dry-run", action="store_true", help="count, change nothing")
    erase.add_argument("--json", action="store_true")
    erase.set_defaults(handler=cmd_erase)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        # Resources read it from the environment, like the Dagster webserver and daemon do.
        os.environ["RAG_DATA_DIR"] = str(database.resolve_data_dir(args.data_dir))
    if args.command == "index" and args.action == "promote" and args.version is None:
        print("index promote needs a VERSION", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ConfigurationError, database.DatabaseError, ValueError, LookupError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        # Anything else (a database that went away, a broken model directory...) still gets
        # one readable line; --debug shows the traceback.
        if args.debug:
            raise
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
