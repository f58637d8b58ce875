"""What every request shares, set up once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, replace

from psycopg_pool import ConnectionPool

from rag_pipeline.api.auth import Directory, RateLimiter
from rag_pipeline.api.models import RetrievalRequest
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.lib.retrieval import RetrievalOptions
from rag_pipeline.settings import Settings


@dataclass
class ApiState:
    """What every request shares: set up once by the lifespan."""

    settings: Settings
    pool: ConnectionPool
    embedder: Embedder | None
    directory: Directory
    rate_limiter: RateLimiter

    def options(self, request: RetrievalRequest) -> RetrievalOptions:
        """The configured defaults, with the request's switches."""
        options = replace(
            self.settings.retrieval_options(), limit=request.limit, rerank=request.rerank
        )
        return replace(options, mode=request.mode) if request.mode else options
