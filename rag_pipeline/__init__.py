"""rag_pipeline: permission-safe, incremental, auditable RAG on Dagster, Postgres and pgvector."""

from rag_pipeline.lib.offline import apply_offline_environment

apply_offline_environment()
