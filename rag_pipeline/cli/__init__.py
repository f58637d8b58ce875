"""`rag-pipeline`: run the pipeline, search, manage the embedded database and index versions."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import rag_pipeline  # noqa: F401  (applies the offline environment first)
from rag_pipeline.cli.common import cli_actor, positive_int
from rag_pipeline.cli.governance import cmd_audit, cmd_erase, cmd_safety, cmd_status
from rag_pipeline.cli.operations import cmd_api_key, cmd_db, cmd_index, cmd_serve, cmd_ui
from rag_pipeline.cli.pipeline import cmd_import_beir, cmd_quality, cmd_run
from rag_pipeline.cli.search import cmd_answer, cmd_lineage, cmd_search
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.embedding import BACKENDS

__all__ = ["build_parser", "cli_actor", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-pipeline", description=__doc__)
    parser.add_argument(
        "--data-dir", help="local data directory (default: $RAG_DATA_DIR or ./.rag_data)"
    )
    parser.add_argument(
        "--embedding-backend",
        choices=BACKENDS,
        help="embedding backend (default: $RAG_EMBEDDING_BACKEND or torch); part of the "
        "embedding cache key, so switching builds a new index version",
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
    run.add_argument(
        "--quiet", action="store_true", help="no progress bars on stderr (also RAG_PROGRESS=0)"
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
    beir.add_argument(
        "--quiet", action="store_true", help="no progress bars on stderr (also RAG_PROGRESS=0)"
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
    if args.embedding_backend:
        # Same route as --data-dir: every entry point reads the backend from Settings.
        os.environ["RAG_EMBEDDING_BACKEND"] = args.embedding_backend
    if args.command == "index" and args.action == "promote" and args.version is None:
        print("index promote needs a VERSION", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error of ours. Point stdout at devnull so
        # the interpreter's final flush does not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
