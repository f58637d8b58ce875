"""Request and response schemas (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["hybrid", "vector", "lexical"]
MAX_LIMIT = 100


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: branch on this")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class RetrievalRequest(BaseModel):
    # A misspelt field (`rerenk`) is an error, not silently the default.
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(5, ge=1, le=MAX_LIMIT, description="hits to return")
    mode: Mode | None = Field(None, description="default: RAG_RETRIEVAL_MODE")
    rerank: bool = Field(True, description="false skips the reranker configured in RAG_RERANKER")
    index_version: int | None = Field(
        None, ge=1, description="read this index version (e.g. a candidate) instead of serving"
    )


class SearchRequest(RetrievalRequest):
    query: str = Field(min_length=1, description="at most RAG_MAX_QUERY_CHARS characters")


class AnswerRequest(RetrievalRequest):
    question: str = Field(min_length=1, description="at most RAG_MAX_QUERY_CHARS characters")


class Hit(BaseModel):
    """One chunk the caller may read, with what a citation needs."""

    chunk_id: str
    doc_id: str
    title: str | None
    uri: str
    heading_path: list[str]
    text: str
    score: float = Field(description="score of the last stage that ordered the list")
    char_start: int
    char_end: int
    element_start: int
    element_end: int
    page_numbers: list[int]
    version_id: int
    scores: dict[str, float] = Field(description="every stage's score for this chunk")
    ranks: dict[str, int] = Field(description="every stage's 1-based rank for this chunk")
    injection: bool = Field(
        False,
        description="flagged as a prompt injection at ingest: answers leave it out by default",
    )


class Retrieval(BaseModel):
    version_id: int
    mode_requested: str
    mode_used: str
    fallback_reason: str | None = Field(description="why mode_used differs from the request")
    reranker: str
    timings_ms: dict[str, float]
    candidates: dict[str, int]


class SearchResponse(BaseModel):
    hits: list[Hit]
    retrieval: Retrieval


class IndexVersion(BaseModel):
    # Document and chunk counts are left out on purpose: they count every tenant's documents.
    version_id: int
    status: str
    serving: bool
    model_key: str
    parser_key: str
    chunker_key: str
    created_at: datetime
    promoted_at: datetime | None
    failed_checks: list[str]


class IndexVersions(BaseModel):
    serving_version_id: int | None
    versions: list[IndexVersion]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    serving_version_id: int
    embedder: str | None = Field(description="model key of the loaded embedder, if any")


Lineage = dict[str, Any]
