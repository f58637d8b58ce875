"""The HTTP API over the retrieval package: `create_app(settings)`, served by `rag-pipeline serve`.

Modules: `app` (factory, startup), `state` (what requests share), `auth` (API keys ->
principal, rate limit), `errors` (one JSON error shape), `body_limit` (413 before parsing),
`models` (request and response schemas), `routes`.
"""

from rag_pipeline.api.app import create_app

__all__ = ["create_app"]
