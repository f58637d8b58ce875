"""The FastAPI application: `create_app(settings, embedder=None)`.

At startup (the lifespan), once per process: resolve the database (the embedded server unless
`RAG_DATABASE_URL` is set), apply the migrations, open a connection pool and load the embedding
model. Requests then share the pool and the one model; a model that fails to load leaves search
answering from the lexical leg, and says so in each response (`retrieval.fallback_reason`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

import rag_pipeline  # noqa: F401  (applies the offline environment first)
from rag_pipeline.api.auth import Directory, RateLimiter
from rag_pipeline.api.body_limit import BodySizeLimit
from rag_pipeline.api.errors import install_error_handlers
from rag_pipeline.api.routes import router
from rag_pipeline.api.state import ApiState
from rag_pipeline.lib import database
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.settings import Settings

LOG = logging.getLogger("rag_pipeline.api")
# How long a request waits for a pooled connection before it gets a 503.
POOL_TIMEOUT_SECONDS = 10.0


def _load_embedder(settings: Settings) -> Embedder | None:
    from rag_pipeline.lib.embedding import load_embedder

    try:
        return load_embedder(
            settings.embedding_model,
            settings.embedding_batch_size,
            settings.embedding_backend,
            settings.embedding_export_dir(),
        )
    except Exception:  # an outage of the vector leg, not of the API: search falls back
        LOG.exception("the embedding model failed to load; search will use the lexical leg")
        return None


def open_state(settings: Settings, embedder: Embedder | None = None) -> ApiState:
    url = database.resolve_database_url(settings.database_url or None, settings.data_dir)
    # Applies the migrations (sql/, including the API keys table) before the first request.
    with database.connection(url):
        pass
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=settings.api_pool_size,
        # Autocommit like `database.connect`: every unit of work states its own transaction.
        kwargs={"autocommit": True},
        configure=register_vector,
        # A connection the server dropped (restart, idle timeout) is replaced, not handed out.
        check=ConnectionPool.check_connection,
        timeout=POOL_TIMEOUT_SECONDS,
        name="rag-api",
        open=True,
    )
    return ApiState(
        settings=settings,
        pool=pool,
        embedder=embedder if embedder is not None else _load_embedder(settings),
        directory=Directory(settings.directory_file),
        rate_limiter=RateLimiter(settings.api_rate_limit),
    )


def create_app(settings: Settings | None = None, embedder: Embedder | None = None) -> FastAPI:
    """The API over `settings` (default: the environment's). `embedder` replaces the configured
    model (tests inject a fake); it is otherwise loaded once, at startup."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = open_state(settings, embedder)
        app.state.api = state
        try:
            yield
        finally:
            state.pool.close()

    app = FastAPI(
        title="rag_pipeline",
        version="0.1.0",
        summary="Permission-safe retrieval over the serving index version",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    return app
