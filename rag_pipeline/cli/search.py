"""Commands that read the index as a user: `search`, `answer`, `lineage`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from rag_pipeline.cli.common import _database_url, _embedder_for, _reader, _retrieval_options
from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.settings import Settings, current_settings

if TYPE_CHECKING:
    from rag_pipeline.lib.embedding import Embedder
    from rag_pipeline.lib.retrieval import RetrievalOptions


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


def cmd_lineage(args: argparse.Namespace) -> int:
    from rag_pipeline.lib.lineage import trace_chunk

    settings = current_settings()
    access = _reader(settings, args.user, args.directory)
    with database.connection(_database_url(settings)) as conn:
        trace = trace_chunk(conn, args.chunk_id, access)
    print(json.dumps(trace, indent=2, ensure_ascii=False))
    return 0 if trace["source_bytes"]["sha256_verified"] else 1
