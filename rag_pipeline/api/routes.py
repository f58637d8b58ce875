"""The routes. Every read of documents goes through `retrieve` or `trace_chunk`, which select only
from `rag.readable_chunks` / `rag.readable_documents` for the caller's principal: the API adds no
query of its own that could widen access.

Routes are plain `def`: FastAPI runs them in its thread pool, where the blocking psycopg pool
and the model belong.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any

import psycopg
import psycopg_pool
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag_pipeline.api.auth import Principal, current_access, unauthorized
from rag_pipeline.api.errors import ApiError
from rag_pipeline.api.models import (
    AnswerRequest,
    ErrorResponse,
    Health,
    IndexVersion,
    IndexVersions,
    Lineage,
    Readiness,
    SearchRequest,
    SearchResponse,
)
from rag_pipeline.api.state import ApiState
from rag_pipeline.lib import index_versions
from rag_pipeline.lib.api_keys import verify_key
from rag_pipeline.lib.lineage import UnknownChunkError, trace_chunk
from rag_pipeline.lib.retrieval import (
    LexicalIndexMissingError,
    NoServingIndexError,
    QueryTooLongError,
    RetrievalResult,
    UnknownIndexVersionError,
    retrieve,
)
from rag_pipeline.lib.retrieval.versions import resolve_version

LOG = logging.getLogger("rag_pipeline.api")
ANSWER_MODULE = "rag_pipeline.lib.retrieval.answer"
QUERY_LOG_MODULE = "rag_pipeline.lib.retrieval.query_log"

router = APIRouter()
bearer = HTTPBearer(
    auto_error=False, description="an API key from `rag-pipeline api-key create --user U`"
)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def api_state(request: Request) -> ApiState:
    return request.app.state.api  # type: ignore[no-any-return]


StateDep = Annotated[ApiState, Depends(api_state)]


def authenticate(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """401 for a missing, unknown or revoked key; 429 over the key's rate; 403 if the key's user
    left the directory. Returns the principal the request reads as."""
    if credentials is None:
        raise unauthorized()
    with state.pool.connection() as conn:
        key = verify_key(conn, credentials.credentials)
    if key is None:
        raise unauthorized("invalid or revoked API key")
    state.rate_limiter.check(key.key_id)
    return Principal(key.key_id, current_access(key, state.directory))


PrincipalDep = Annotated[Principal, Depends(authenticate)]


@contextmanager
def retrieval_errors() -> Iterator[None]:
    """The retrieval package's errors as HTTP errors."""
    try:
        yield
    except NoServingIndexError as error:
        raise ApiError(503, "no_serving_version", str(error)) from error
    except LexicalIndexMissingError as error:
        raise ApiError(503, "lexical_index_missing", str(error)) from error
    except UnknownIndexVersionError as error:
        raise ApiError(404, "unknown_index_version", str(error)) from error
    except QueryTooLongError as error:
        raise ApiError(422, "query_too_long", str(error)) from error


def check_query(text: str, max_query_chars: int) -> None:
    """Refuse an over-long or blank query before any work (retrieval checks again)."""
    if len(text) > max_query_chars:
        raise ApiError(
            422,
            "query_too_long",
            f"the query is {len(text):,} characters long, above the limit of "
            f"{max_query_chars:,} (RAG_MAX_QUERY_CHARS)",
        )
    if not text.strip():
        raise ApiError(422, "validation_error", "the query is blank")


@functools.cache
def _optional_function(module_name: str, name: str) -> Callable[..., Any] | None:
    """`module_name.name` if that module exists (checked once per process), else None."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise  # the module exists but one of its imports is missing: a real error
        return None
    return getattr(module, name, None)


def log_query(
    conn: psycopg.Connection, principal: Principal, query: str, result: RetrievalResult
) -> None:
    """Record a search in the query log (`query_log.log_query`) when that module exists; it
    never raises (a failure to log is reported on its logger: the caller has their results)."""
    log = _optional_function(QUERY_LOG_MODULE, "log_query")
    if log is not None:
        log(conn, principal.access, query, result, kind="search", channel="api")


@router.get("/healthz", response_model=Health, tags=["health"])
def healthz() -> Health:
    """The process is up (no database access)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=_errors(503), tags=["health"])
def readyz(state: StateDep) -> Readiness:
    """Ready when the database answers, a version is serving, and the loaded embedder (if any)
    is that version's model."""
    try:
        with state.pool.connection(timeout=5) as conn:
            version = resolve_version(conn, None)
    except NoServingIndexError as error:
        raise ApiError(503, "no_serving_version", str(error)) from error
    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
        raise ApiError(503, "database_unavailable", "the database is unavailable") from error
    model = state.embedder.model_key if state.embedder is not None else None
    if model is not None and model != version.model_key:
        raise ApiError(
            503,
            "embedder_mismatch",
            f"serving version {version.version_id} was embedded with {version.model_key}, "
            f"but this server loaded {model}",
        )
    return Readiness(status="ready", serving_version_id=version.version_id, embedder=model)


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    responses=_errors(401, 403, 404, 413, 422, 429, 503),
    tags=["retrieval"],
)
def search(body: SearchRequest, principal: PrincipalDep, state: StateDep) -> SearchResponse:
    """The best chunks the caller may read in the serving version (or `index_version`), with
    citation data (title, uri, heading path, character offsets) and the retrieval metadata."""
    check_query(body.query, state.settings.max_query_chars)
    options = state.options(body)
    with state.pool.connection() as conn:
        with retrieval_errors():
            result = retrieve(
                conn, principal.access, body.query, options, state.embedder, body.index_version
            )
        log_query(conn, principal, body.query, result)
    retrieval = asdict(result)
    hits = retrieval.pop("hits")
    return SearchResponse.model_validate({"hits": hits, "retrieval": retrieval})


@router.post(
    "/v1/answer",
    responses={200: {"description": "the answer with its citations (`Answer.to_json()`)"}}
    | _errors(401, 403, 404, 413, 422, 429, 501, 503),
    tags=["retrieval"],
)
def answer(body: AnswerRequest, principal: PrincipalDep, state: StateDep) -> Response:
    """An answer whose every sentence cites chunks the caller may read, or a refusal."""
    answer_function = _optional_function(ANSWER_MODULE, "answer")
    if answer_function is None:
        raise ApiError(501, "not_implemented", "answers are not available in this build")
    check_query(body.question, state.settings.max_query_chars)
    options = state.options(body)
    # The generator (`RAG_LLM_*`) and the refusal thresholds (`RAG_ANSWER_*`) of this app's
    # settings, not of the process environment. `answer` logs the query itself.
    generator = _optional_function(ANSWER_MODULE, "generator_from_settings")
    policy = _optional_function(ANSWER_MODULE, "policy_from_settings")
    extra: dict[str, Any] = {"channel": "api"}
    if policy is not None:
        extra["policy"] = policy(state.settings)
    with state.pool.connection() as conn, retrieval_errors():
        result = answer_function(
            conn,
            principal.access,
            body.question,
            options,
            state.embedder,
            generator=generator(state.settings) if generator is not None else None,
            version_id=body.index_version,
            **extra,
        )
    payload = result.to_json()
    if isinstance(payload, str | bytes):
        return Response(payload, media_type="application/json")
    return JSONResponse(payload)


@router.get(
    "/v1/chunks/{chunk_id}/lineage",
    response_model=Lineage,
    responses=_errors(401, 403, 404, 429),
    tags=["lineage"],
)
def lineage(
    chunk_id: Annotated[str, Path(max_length=200)], principal: PrincipalDep, state: StateDep
) -> Lineage:
    """A chunk back to its verified source bytes, parsed elements, versions and audit events.
    A chunk the caller may not read now gets the same 404 as one that does not exist."""
    with state.pool.connection() as conn:
        try:
            return trace_chunk(conn, chunk_id, principal.access)
        except UnknownChunkError as error:
            raise ApiError(
                404, "chunk_not_found", f"no chunk {chunk_id!r} that you may read"
            ) from error


@router.get(
    "/v1/index/versions",
    response_model=IndexVersions,
    responses=_errors(401, 403, 429),
    tags=["index"],
)
def versions(principal: PrincipalDep, state: StateDep) -> IndexVersions:
    """The newest index versions, with their status and failed gates."""
    del principal  # any valid key may list versions; nothing here is per-tenant
    with state.pool.connection() as conn:
        serving = index_versions.active_version_id(conn)
        found = index_versions.list_versions(conn)
    return IndexVersions(
        serving_version_id=serving,
        versions=[
            IndexVersion(
                version_id=v.version_id,
                status=v.status,
                serving=v.version_id == serving,
                model_key=v.model_key,
                parser_key=v.parser_key,
                chunker_key=v.chunker_key,
                created_at=v.created_at,
                promoted_at=v.promoted_at,
                failed_checks=v.failed_checks,
            )
            for v in found
        ],
    )
