"""What every command shares: settings to connections, models and readers; small parsers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rag_pipeline.lib import database
from rag_pipeline.lib.catalog import UserAccess, load_user_access
from rag_pipeline.settings import Settings

if TYPE_CHECKING:
    from rag_pipeline.lib.embedding import Embedder, SentenceTransformerEmbedder
    from rag_pipeline.lib.erasure_records import ConnectionFactory
    from rag_pipeline.lib.retrieval import RetrievalOptions


def _database_url(settings: Settings) -> str:
    return database.resolve_database_url(settings.database_url or None, settings.data_dir)


def _embedder(settings: Settings) -> SentenceTransformerEmbedder:
    from rag_pipeline.lib.embedding import load_embedder

    return load_embedder(
        settings.embedding_model,
        settings.embedding_batch_size,
        settings.embedding_backend,
        settings.embedding_export_dir(),
    )


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
